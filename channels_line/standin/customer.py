"""What LINE users do, turned into webhook events shaped exactly as the LINE Platform shapes them.

An action (a dict from the control API or the phone page) is first *planned*: the events are built
and the caller's mistakes reported, without touching the state. Only a plan whose body is valid is
*committed*: reply tokens and content become usable, and the chat shows the message. So a refused
action leaves no trace.
"""

from __future__ import annotations

import base64
import binascii
import copy
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any

from .state import (
    GROUP_ID_PATTERN,
    ROOM_ID_PATTERN,
    Channel,
    LineUser,
    MarkAsReadToken,
    MessageContent,
    ReplyToken,
    StandinState,
    new_mark_as_read_token,
    new_message_id,
    new_quote_token,
    new_reply_token,
    new_webhook_event_id,
)

MEDIA_TYPES = ("image", "video", "audio", "file")
MESSAGE_TYPES = ("text", "sticker", "location", *MEDIA_TYPES)
# Event types of the control API, as LINE spells them; snake_case spellings are accepted too.
ACTION_TYPES = (
    *MESSAGE_TYPES,
    "postback",
    "follow",
    "unfollow",
    "unsend",
    "join",
    "leave",
    "memberJoined",
    "memberLeft",
)
STICKER_RESOURCE_TYPES = (
    "STATIC",
    "ANIMATION",
    "SOUND",
    "ANIMATION_SOUND",
    "POPUP",
    "POPUP_SOUND",
    "CUSTOM",
    "MESSAGE",
    "NAME_TEXT",
    "PER_STICKER_TEXT",
)
DEFAULT_CONTENT_TYPES = {
    "image": "image/png",
    "video": "video/mp4",
    "audio": "audio/m4a",
    "file": "application/octet-stream",
}
DEFAULT_MEDIA_DURATION_MS = 3000
# A 1x1 transparent PNG, so that `{"type": "image"}` alone is a complete image message.
PLACEHOLDER_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
# Events LINE sends with a reply token (in active mode); join and memberJoined only in groups/rooms.
_REPLYABLE = {"message", "follow", "postback", "join", "memberJoined"}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class ActionError(ValueError):
    """The caller asked for something a LINE user cannot do; the message says what to change."""


@dataclass
class UploadedFile:
    """A file sent as multipart/form-data to the control API."""

    file_name: str | None
    content_type: str | None
    data: bytes


@dataclass
class ActionPlan:
    """The events one request produces, and what becomes true if they are sent."""

    events: list[dict[str, Any]] = field(default_factory=list)
    reply_tokens: list[ReplyToken] = field(default_factory=list)
    mark_as_read_tokens: list[MarkAsReadToken] = field(default_factory=list)
    contents: list[MessageContent] = field(default_factory=list)
    # (user, is_friend, has_blocked) for follow and unfollow.
    friendships: list[tuple[LineUser, bool, bool]] = field(default_factory=list)
    chat_members: list[tuple[str, str | None]] = field(default_factory=list)
    unsent_message_ids: list[str] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)


def normalize_action(action: dict[str, Any]) -> dict[str, Any]:
    """Accept LINE's camelCase (`packageId`) as well as snake_case (`package_id`) for top-level keys."""
    normalized = {_CAMEL.sub("_", key).lower(): value for key, value in action.items()}
    external = normalized.get("external")
    if isinstance(external, dict):
        normalized["external"] = {_CAMEL.sub("_", key).lower(): value for key, value in external.items()}
    kind = normalized.get("type")
    if isinstance(kind, str):
        # member_joined -> memberJoined
        head, *rest = kind.split("_")
        normalized["type"] = head + "".join(part.capitalize() for part in rest)
    return normalized


def plan_actions(
    state: StandinState,
    channel: Channel,
    actions: list[dict[str, Any]],
    files: dict[str, UploadedFile] | None = None,
) -> ActionPlan:
    """Build the webhook events for `actions` (one body) without changing any state."""
    if not actions:
        raise ActionError("at least one action is needed")
    plan = ActionPlan()
    with state.lock:
        for index, raw_action in enumerate(actions):
            if not isinstance(raw_action, dict):
                raise ActionError(f"actions[{index}] must be an object")
            try:
                _plan_one(state, channel, normalize_action(raw_action), files or {}, plan)
            except ActionError as exc:
                raise ActionError(f"actions[{index}]: {exc}" if len(actions) > 1 else str(exc)) from exc
    return plan


def commit(state: StandinState, channel: Channel, plan: ActionPlan) -> None:
    """Make the plan's tokens and content usable and show its messages in the chats."""
    with state.lock:
        for token in plan.reply_tokens:
            channel.reply_tokens[token.token] = token
        for read_token in plan.mark_as_read_tokens:
            channel.mark_as_read_tokens[read_token.token] = read_token
        for content in plan.contents:
            channel.contents[content.message_id] = content
        for user, is_friend, has_blocked in plan.friendships:
            user.is_friend = is_friend
            user.has_blocked = has_blocked
        for chat_id, user_id in plan.chat_members:
            members = channel.chats.setdefault(chat_id, set())
            if user_id:
                members.add(user_id)
        for event in plan.events:
            channel.events[event["webhookEventId"]] = copy.deepcopy(event)
        for entry in channel.timeline:
            message = entry.get("event", {}).get("message") or {}
            if message.get("id") in plan.unsent_message_ids:
                entry["unsent"] = True
        for entry in plan.timeline:
            channel.timeline.append({**entry, "seq": state.next_sequence()})


def redelivered_events(channel: Channel, webhook_event_ids: list[str]) -> list[dict[str, Any]]:
    """The stored events again, marked as redelivered; webhookEventId and timestamp stay the same."""
    events = []
    for event_id in webhook_event_ids:
        event = channel.events.get(event_id)
        if event is None:
            raise ActionError(f"no event {event_id!r} was sent on channel {channel.channel_id}")
        redelivered = copy.deepcopy(event)
        redelivered["deliveryContext"] = {"isRedelivery": True}
        events.append(redelivered)
    return events


def _plan_one(
    state: StandinState,
    channel: Channel,
    action: dict[str, Any],
    files: dict[str, UploadedFile],
    plan: ActionPlan,
) -> None:
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        raise ActionError(f"type must be one of {', '.join(ACTION_TYPES)}")
    mode = action.get("mode", "active")
    if mode not in ("active", "standby"):
        raise ActionError("mode must be 'active' or 'standby'")

    user = _acting_user(channel, action, kind)
    chat_id, source = _source(action, user, kind)
    now = state.now()
    now_ms = int(now * 1000)
    event_type = "message" if kind in MESSAGE_TYPES else kind
    event: dict[str, Any] = {
        "type": event_type,
        "mode": mode,
        "timestamp": now_ms,
        "source": source,
        "webhookEventId": new_webhook_event_id(now_ms),
        "deliveryContext": {"isRedelivery": False},
    }
    # In standby mode another module holds the chat: LINE gives no reply token.
    if event_type in _REPLYABLE and mode == "active":
        token = new_reply_token()
        event["replyToken"] = token
        plan.reply_tokens.append(
            ReplyToken(
                token=token,
                chat_id=chat_id,
                user_id=user.user_id if user else None,
                webhook_event_id=event["webhookEventId"],
                issued_at=now,
            )
        )

    if kind in MESSAGE_TYPES:
        event["message"] = _message(action, kind, now, files, plan)
        if source["type"] == "user":
            read_token = new_mark_as_read_token()
            event["message"]["markAsReadToken"] = read_token
            plan.mark_as_read_tokens.append(
                MarkAsReadToken(token=read_token, chat_id=chat_id, message_id=event["message"]["id"])
            )
    elif kind == "postback":
        event["postback"] = _postback(action)
    elif kind == "follow":
        assert user is not None
        event["follow"] = {"isUnblocked": user.has_blocked}
        plan.friendships.append((user, True, False))
    elif kind == "unfollow":
        assert user is not None
        plan.friendships.append((user, False, True))
    elif kind == "unsend":
        message_id = action.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise ActionError("message_id (the ID of the message to unsend) is required")
        event["unsend"] = {"messageId": message_id}
        plan.unsent_message_ids.append(message_id)
    elif kind in ("memberJoined", "memberLeft"):
        assert user is not None
        members = {"members": [{"type": "user", "userId": user.user_id}]}
        event["joined" if kind == "memberJoined" else "left"] = members

    plan.events.append(event)
    plan.chat_members.append((chat_id, user.user_id if user and kind != "memberLeft" else None))
    plan.timeline.append(
        {
            "at_ms": now_ms,
            "chat_id": chat_id,
            "side": "customer",
            "user_id": user.user_id if user else None,
            "event": event,
        }
    )


def _acting_user(channel: Channel, action: dict[str, Any], kind: str) -> LineUser | None:
    user_id = action.get("user_id")
    if kind in ("join", "leave"):
        # The bot itself joins or leaves: no user acts.
        return None
    if not user_id:
        raise ActionError("user_id is required (create users with POST /_standin/channels/<id>/users)")
    user = channel.users.get(user_id)
    if user is None:
        raise ActionError(f"channel {channel.channel_id} has no LINE user {user_id!r}")
    return user


def _source(action: dict[str, Any], user: LineUser | None, kind: str) -> tuple[str, dict[str, Any]]:
    group_id = action.get("group_id")
    room_id = action.get("room_id")
    if group_id and room_id:
        raise ActionError("give group_id or room_id, not both")
    if group_id:
        if not isinstance(group_id, str) or not GROUP_ID_PATTERN.match(group_id):
            raise ActionError("group_id must be 'C' followed by 32 lowercase hex digits")
        source: dict[str, Any] = {"type": "group", "groupId": group_id}
        chat_id = group_id
    elif room_id:
        if not isinstance(room_id, str) or not ROOM_ID_PATTERN.match(room_id):
            raise ActionError("room_id must be 'R' followed by 32 lowercase hex digits")
        source = {"type": "room", "roomId": room_id}
        chat_id = room_id
    else:
        if kind in ("join", "leave", "memberJoined", "memberLeft"):
            raise ActionError(f"{kind} happens in a group or a room: give group_id or room_id")
        assert user is not None
        return user.user_id, {"type": "user", "userId": user.user_id}
    # In groups and rooms LINE names the acting user in the source, except for membership events
    # where the members are listed in the event itself.
    if user is not None and kind not in ("memberJoined", "memberLeft"):
        source["userId"] = user.user_id
    if kind in ("follow", "unfollow"):
        raise ActionError(f"{kind} happens in a one-on-one chat: leave out group_id and room_id")
    return chat_id, source


def _message(
    action: dict[str, Any], kind: str, now: float, files: dict[str, UploadedFile], plan: ActionPlan
) -> dict[str, Any]:
    message: dict[str, Any] = {"id": new_message_id(), "type": kind}
    # LINE gives a quote token to the message types a reply can quote.
    if kind in ("text", "sticker", "image", "video"):
        message["quoteToken"] = new_quote_token()
    quoted = action.get("quoted_message_id")
    if quoted and kind in ("text", "sticker"):
        message["quotedMessageId"] = str(quoted)

    if kind == "text":
        text = action.get("text")
        if not isinstance(text, str) or not text:
            raise ActionError("text is required")
        message["text"] = text
        emojis = action.get("emojis")
        if emojis:
            if not isinstance(emojis, list):
                raise ActionError("emojis must be a list of {index, length, productId, emojiId}")
            message["emojis"] = emojis
    elif kind == "sticker":
        package_id, sticker_id = action.get("package_id"), action.get("sticker_id")
        if not package_id or not sticker_id:
            raise ActionError("package_id and sticker_id are required")
        resource_type = action.get("sticker_resource_type", "STATIC")
        if resource_type not in STICKER_RESOURCE_TYPES:
            raise ActionError(f"sticker_resource_type must be one of {', '.join(STICKER_RESOURCE_TYPES)}")
        message.update(
            packageId=str(package_id), stickerId=str(sticker_id), stickerResourceType=resource_type
        )
        if action.get("keywords"):
            message["keywords"] = [str(word) for word in action["keywords"]][:15]
        if action.get("text"):
            message["text"] = str(action["text"])
    elif kind == "location":
        try:
            latitude, longitude = float(action["latitude"]), float(action["longitude"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ActionError("latitude and longitude (numbers) are required") from exc
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ActionError("latitude must be within -90..90 and longitude within -180..180")
        for key in ("title", "address"):
            if action.get(key):
                message[key] = str(action[key])
        message.update(latitude=latitude, longitude=longitude)
    else:
        _media(action, kind, message, now, files, plan)
    return message


def _media(
    action: dict[str, Any],
    kind: str,
    message: dict[str, Any],
    now: float,
    files: dict[str, UploadedFile],
    plan: ActionPlan,
) -> None:
    external = action.get("external")
    if external and kind == "file":
        raise ActionError("files always come from LINE's servers; 'external' is for image, video, audio")
    if kind in ("video", "audio"):
        message["duration"] = int(action.get("duration", DEFAULT_MEDIA_DURATION_MS))
    if external:
        if not isinstance(external, dict) or not external.get("original_content_url"):
            raise ActionError("external needs original_content_url (and preview_image_url for image/video)")
        provider = {"type": "external", "originalContentUrl": str(external["original_content_url"])}
        if external.get("preview_image_url") and kind in ("image", "video"):
            provider["previewImageUrl"] = str(external["preview_image_url"])
        message["contentProvider"] = provider
        return

    upload = files.get(str(action.get("file_field", "file")))
    data = _content_bytes(action, upload, kind)
    file_name = action.get("file_name") or (upload.file_name if upload else None)
    content_type = (
        action.get("content_type")
        or (upload.content_type if upload and upload.content_type != "application/octet-stream" else None)
        or (mimetypes.guess_type(file_name)[0] if file_name else None)
        or DEFAULT_CONTENT_TYPES[kind]
    )
    try:
        ready_after = float(action.get("ready_after", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise ActionError("ready_after must be a number of seconds") from exc
    if kind == "file":
        message.update(fileName=file_name or "file.bin", fileSize=len(data))
    else:
        message["contentProvider"] = {"type": "line"}
    plan.contents.append(
        MessageContent(
            message_id=message["id"],
            data=data,
            content_type=content_type,
            file_name=file_name,
            ready_at=now + ready_after,
            transcoding_fails=bool(action.get("transcoding_fails")),
        )
    )


def _content_bytes(action: dict[str, Any], upload: UploadedFile | None, kind: str) -> bytes:
    if upload is not None:
        return upload.data
    encoded = action.get("content_base64")
    if encoded:
        if not isinstance(encoded, str):
            raise ActionError("content_base64 must be a base64 string")
        # The phone page sends data: URLs as they come from FileReader.
        encoded = encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ActionError("content_base64 is not valid base64") from exc
    if kind == "image":
        return PLACEHOLDER_PNG
    raise ActionError(f"a {kind} needs its bytes: content_base64, or a multipart file field 'file'")


def _postback(action: dict[str, Any]) -> dict[str, Any]:
    data = action.get("data")
    if not isinstance(data, str) or not data:
        raise ActionError("data (the postback data string) is required")
    postback: dict[str, Any] = {"data": data}
    params = action.get("params")
    if params:
        if not isinstance(params, dict):
            raise ActionError("params must be an object such as {'datetime': '2025-01-31T10:00'}")
        postback["params"] = {str(key): str(value) for key, value in params.items()}
    return postback
