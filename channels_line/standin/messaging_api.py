"""The Messaging API as the LINE Platform answers it: LINE's paths, status codes and error bodies,
for both hosts (api.line.me and api-data.line.me are one address here).

Order of checks, as LINE does it: injected faults (they play LINE's own trouble), unknown path (404),
channel access token (401), the request against messaging-api.yml (or, without it, line-bot-sdk's
request models) and LINE's documented limits (400),
then the operation's own rules (invalid reply token, retry key already accepted, monthly limit).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .customer import PLACEHOLDER_PNG
from .protocol import BadRequest, StandinRequest, StandinResponse, line_error
from .state import (
    AcceptedPush,
    Channel,
    StandinState,
    new_message_id,
    new_quote_token,
    new_request_id,
)

logger = logging.getLogger(__name__)

AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."
MONTHLY_LIMIT_REACHED = "You have reached your monthly limit."
INVALID_REPLY_TOKEN = "Invalid reply token"
RETRY_KEY_ACCEPTED = "The retry key is already accepted"
NOT_FOUND = "Not found"
MAX_MESSAGES = 5
MAX_TEXT_CHARS = 5000
MAX_QUICK_REPLY_ITEMS = 13
DEFAULT_LOADING_SECONDS = 20
# The message types a sent message can later be quoted by (LINE returns a quoteToken for them).
_QUOTABLE = {"text", "textV2", "sticker", "image", "video"}
_FAULT_MESSAGES = {
    429: "The API rate limit has been exceeded. Try again later.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


@dataclass
class Call:
    """One authenticated Messaging API request being answered."""

    request: StandinRequest
    channel: Channel
    request_id: str
    params: dict[str, str]

    def body(self) -> dict[str, Any]:
        return self.request.json_object()


Handler = Callable[["MessagingApi", Call], StandinResponse]


class MessagingApi:
    """Answers the LINE-facing requests of the stand-in."""

    def __init__(self, state: StandinState, *, openapi_dir: Path | None, stopping: threading.Event) -> None:
        self.state = state
        # None when the spec folder is absent: requests are then checked against line-bot-sdk's models.
        self.openapi_dir = openapi_dir
        self.stopping = stopping

    def handle(self, request: StandinRequest) -> StandinResponse:
        request_id = new_request_id()
        response = self._answer(request, request_id)
        # LINE puts a request ID on every answer; support asks for it.
        response.headers.setdefault("x-line-request-id", request_id)
        return response

    def _answer(self, request: StandinRequest, request_id: str) -> StandinResponse:
        fault = self.state.fault_take(request.method, request.path)
        if fault is not None:
            logger.info("Stand-in fault %s on %s %s", fault.fault_id, request.method, request.path)
            if fault.delay_seconds > 0:
                # Waits on the stop event, so stopping the server does not wait for a long hang.
                self.stopping.wait(fault.delay_seconds)
            if fault.status is not None:
                if fault.body is not None:
                    return StandinResponse.json(fault.status, fault.body)
                message = _FAULT_MESSAGES.get(fault.status) or HTTPStatus(fault.status).phrase
                return line_error(fault.status, message)

        route = _match(request.method, request.path)
        if route is None:
            return line_error(404, NOT_FOUND)
        handler, params = route

        channel = self._authenticated_channel(request)
        if channel is None:
            return line_error(401, AUTH_FAILED)

        invalid = self._invalid_request(request)
        if invalid is not None:
            return invalid
        try:
            return handler(self, Call(request, channel, request_id, params))
        except BadRequest as exc:
            return line_error(400, exc.message, exc.details)

    def _authenticated_channel(self, request: StandinRequest) -> Channel | None:
        scheme, _, token = request.header("Authorization").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.state.channel_by_token(token.strip())

    def _invalid_request(self, request: StandinRequest) -> StandinResponse | None:
        problems: list[dict[str, str]] = []
        if request.method == "POST" and request.path in ("/v2/bot/message/push", "/v2/bot/message/reply"):
            try:
                problems.extend(line_limit_problems(request.json()))
            except BadRequest as exc:
                return line_error(400, exc.message)
        headers = dict(request.headers.items())
        if self.openapi_dir is not None:
            from channels_line.openapi import messaging_request_problems

            spec_problems = messaging_request_problems(
                request.method, request.path, request.query, headers, request.body, directory=self.openapi_dir
            )
        else:
            from channels_line.sdk_validation import sdk_messaging_request_problems

            spec_problems = sdk_messaging_request_problems(
                request.method, request.path, headers, request.body
            )
            # The spec checks the retry key's UUID format; the SDK's models do not hold headers.
            if request.header("X-Line-Retry-Key"):
                try:
                    uuid.UUID(request.header("X-Line-Retry-Key"))
                except ValueError:
                    problems.append(_detail("X-Line-Retry-Key", "Must be a UUID"))
        seen = {problem.get("property") for problem in problems}
        problems.extend(
            _detail(problem.property, problem.message)
            for problem in spec_problems
            if problem.property not in seen
        )
        if not problems:
            return None
        if any(problem.get("property", "").lower() == "x-line-retry-key" for problem in problems):
            return line_error(400, "The value for the 'X-Line-Retry-Key' header is invalid", problems)
        return line_error(400, f"The request body has {len(problems)} error(s)", problems)

    # --- api.line.me -------------------------------------------------------------------------------

    def push(self, call: Call) -> StandinResponse:
        body = call.body()
        to = body.get("to")
        retry_key = call.request.header("X-Line-Retry-Key") or None
        channel = call.channel
        with self.state.lock:
            if retry_key and retry_key in channel.retry_keys:
                accepted = channel.retry_keys[retry_key]
                return StandinResponse.json(
                    409,
                    {"message": RETRY_KEY_ACCEPTED, "sentMessages": accepted.sent_messages},
                    headers={"x-line-accepted-request-id": accepted.request_id},
                )
            if not isinstance(to, str) or (to not in channel.users and to not in channel.chats):
                return line_error(
                    400,
                    "Failed to send messages",
                    [_detail("to", f"channel {channel.channel_id} has no user, group or room {to!r}")],
                )
            user = channel.users.get(to)
            # LINE accepts a push to a user who blocked the account but does not deliver (or count) it.
            delivered = user.is_friend if user is not None else True
            quota = channel.monthly_quota
            if delivered and quota is not None and channel.quota_used >= quota:
                return line_error(429, MONTHLY_LIMIT_REACHED)
            sent = self._record_sent(
                call,
                method="push",
                chat_id=to,
                messages=body["messages"],
                retry_key=retry_key,
                reply_token=None,
                delivered=delivered,
                notification_disabled=bool(body.get("notificationDisabled")),
            )
            if delivered:
                # LINE counts a push once per recipient, however many message objects it carries.
                channel.quota_used += 1
            if retry_key:
                channel.retry_keys[retry_key] = AcceptedPush(request_id=call.request_id, sent_messages=sent)
        return StandinResponse.json(200, {"sentMessages": sent})

    def reply(self, call: Call) -> StandinResponse:
        body = call.body()
        channel = call.channel
        with self.state.lock:
            token = channel.reply_tokens.get(str(body.get("replyToken")))
            now = self.state.now()
            if (
                token is None
                or token.used_at is not None
                or now - token.issued_at > self.state.reply_token_ttl_seconds
            ):
                return line_error(400, INVALID_REPLY_TOKEN)
            token.used_at = now
            sent = self._record_sent(
                call,
                method="reply",
                chat_id=token.chat_id,
                messages=body["messages"],
                retry_key=None,
                reply_token=token.token,
                delivered=True,
                notification_disabled=bool(body.get("notificationDisabled")),
            )
        return StandinResponse.json(200, {"sentMessages": sent})

    def profile(self, call: Call) -> StandinResponse:
        with self.state.lock:
            user = call.channel.users.get(call.params["user_id"])
            # LINE gives no profile of a user who is not (or no longer) a friend of the account.
            if user is None or not user.is_friend:
                return line_error(404, NOT_FOUND)
            return StandinResponse.json(200, user.profile())

    def chat_member_profile(self, call: Call) -> StandinResponse:
        with self.state.lock:
            members = call.channel.chats.get(call.params["chat_id"], set())
            user = call.channel.users.get(call.params["user_id"])
            if user is None or user.user_id not in members:
                return line_error(404, NOT_FOUND)
            profile = {key: value for key, value in user.profile().items() if key != "statusMessage"}
            return StandinResponse.json(200, profile)

    def bot_info(self, call: Call) -> StandinResponse:
        channel = call.channel
        info: dict[str, Any] = {
            "userId": channel.bot_user_id,
            "basicId": channel.bot_basic_id,
            "displayName": channel.bot_display_name,
            "chatMode": "chat",
            "markAsReadMode": "manual",
        }
        if channel.bot_picture_url:
            info["pictureUrl"] = channel.bot_picture_url
        return StandinResponse.json(200, info)

    def quota(self, call: Call) -> StandinResponse:
        quota = call.channel.monthly_quota
        if quota is None:
            return StandinResponse.json(200, {"type": "none"})
        return StandinResponse.json(200, {"type": "limited", "value": quota})

    def quota_consumption(self, call: Call) -> StandinResponse:
        return StandinResponse.json(200, {"totalUsage": call.channel.quota_used})

    def loading_start(self, call: Call) -> StandinResponse:
        body = call.body()
        seconds = body.get("loadingSeconds", DEFAULT_LOADING_SECONDS)
        if not isinstance(seconds, int) or not 5 <= seconds <= 60 or seconds % 5:
            return line_error(
                400,
                "The request body has 1 error(s)",
                [_detail("loadingSeconds", "Must be a multiple of 5 between 5 and 60")],
            )
        with self.state.lock:
            chat_id = body.get("chatId")
            # The loading animation exists only in one-on-one chats.
            if chat_id not in call.channel.users:
                return line_error(
                    400, "Invalid chatId", [_detail("chatId", "Must be a user of this channel")]
                )
            call.channel.loading_calls.append(
                {
                    "seq": self.state.next_sequence(),
                    "chat_id": chat_id,
                    "loading_seconds": seconds,
                    "request_id": call.request_id,
                    "at_ms": self.state.now_ms(),
                }
            )
        return StandinResponse.json(202, {})

    def mark_as_read_by_token(self, call: Call) -> StandinResponse:
        token_value = call.body().get("markAsReadToken")
        with self.state.lock:
            token = call.channel.mark_as_read_tokens.get(str(token_value))
            if token is None:
                return line_error(400, "Invalid markAsReadToken")
            call.channel.read_marks.append(
                {
                    "seq": self.state.next_sequence(),
                    "chat_id": token.chat_id,
                    "message_id": token.message_id,
                    "mark_as_read_token": token.token,
                    "request_id": call.request_id,
                    "at_ms": self.state.now_ms(),
                }
            )
        return StandinResponse.json(200, {})

    def mark_as_read_by_chat(self, call: Call) -> StandinResponse:
        chat = call.body().get("chat") or {}
        user_id = chat.get("userId") if isinstance(chat, dict) else None
        with self.state.lock:
            if user_id not in call.channel.users:
                return line_error(
                    400, "Invalid chat", [_detail("chat.userId", "Must be a user of this channel")]
                )
            call.channel.read_marks.append(
                {
                    "seq": self.state.next_sequence(),
                    "chat_id": user_id,
                    "message_id": None,
                    "mark_as_read_token": None,
                    "request_id": call.request_id,
                    "at_ms": self.state.now_ms(),
                }
            )
        return StandinResponse.json(200, {})

    # --- api-data.line.me ----------------------------------------------------------------------------

    def content(self, call: Call) -> StandinResponse:
        with self.state.lock:
            content = call.channel.contents.get(call.params["message_id"])
            if content is None or content.transcoding_fails:
                return line_error(404, NOT_FOUND)
            if self.state.now() < content.ready_at:
                # Not transcoded yet: LINE answers 202 with an empty body until it is.
                return StandinResponse(status=202)
            return StandinResponse(status=200, body=content.data, content_type=content.content_type)

    def content_preview(self, call: Call) -> StandinResponse:
        with self.state.lock:
            content = call.channel.contents.get(call.params["message_id"])
            if content is None or not content.content_type.startswith(("image/", "video/")):
                return line_error(404, NOT_FOUND)
            if content.content_type.startswith("image/"):
                return StandinResponse(status=200, body=content.data, content_type=content.content_type)
            return StandinResponse(status=200, body=PLACEHOLDER_PNG, content_type="image/png")

    def content_transcoding(self, call: Call) -> StandinResponse:
        with self.state.lock:
            content = call.channel.contents.get(call.params["message_id"])
            if content is None:
                return line_error(404, NOT_FOUND)
            return StandinResponse.json(200, {"status": content.transcoding_status(self.state.now())})

    def _record_sent(
        self,
        call: Call,
        *,
        method: str,
        chat_id: str,
        messages: list[dict[str, Any]],
        retry_key: str | None,
        reply_token: str | None,
        delivered: bool,
        notification_disabled: bool,
    ) -> list[dict[str, str]]:
        """Keep what the business sent (caller holds the lock); return LINE's sentMessages."""
        channel = call.channel
        sent_messages = []
        now_ms = self.state.now_ms()
        for message in messages:
            sent: dict[str, str] = {"id": new_message_id()}
            if message.get("type") in _QUOTABLE:
                sent["quoteToken"] = new_quote_token()
            sent_messages.append(sent)
            record = {
                "seq": self.state.next_sequence(),
                "id": sent["id"],
                "quote_token": sent.get("quoteToken"),
                "method": method,
                "chat_id": chat_id,
                "user_id": chat_id if chat_id in channel.users else None,
                "retry_key": retry_key,
                "reply_token": reply_token,
                "request_id": call.request_id,
                "delivered": delivered,
                "notification_disabled": notification_disabled,
                "received_at_ms": now_ms,
                "message": message,
            }
            channel.sent_messages.append(record)
            if delivered:
                channel.timeline.append(
                    {
                        "seq": record["seq"],
                        "at_ms": now_ms,
                        "chat_id": chat_id,
                        "side": "business",
                        "method": method,
                        "id": sent["id"],
                        "message": message,
                    }
                )
        return sent_messages


def line_limit_problems(body: Any) -> list[dict[str, str]]:
    """LINE's limits on push and reply bodies that messaging-api.yml does not (all) express, worded
    as LINE words them: 1 to 5 messages, text at most 5,000 characters, at most 13 quick replies."""
    if not isinstance(body, dict):
        return [_detail("", "The request body must be a JSON object")]
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        return [_detail("messages", f"Size must be between 1 and {MAX_MESSAGES}")]
    problems = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            problems.append(_detail(f"{where}.type", "Must be specified"))
            continue
        if message["type"] in ("text", "textV2"):
            text = message.get("text")
            if not isinstance(text, str) or not text:
                problems.append(_detail(f"{where}.text", "Must be specified"))
            elif len(text) > MAX_TEXT_CHARS:
                problems.append(_detail(f"{where}.text", f"Length must be between 0 and {MAX_TEXT_CHARS}"))
        quick_reply = message.get("quickReply")
        items = quick_reply.get("items") if isinstance(quick_reply, dict) else None
        if isinstance(items, list) and len(items) > MAX_QUICK_REPLY_ITEMS:
            problems.append(
                _detail(f"{where}.quickReply.items", f"Size must be between 0 and {MAX_QUICK_REPLY_ITEMS}")
            )
    return problems


def _detail(property_path: str, message: str) -> dict[str, str]:
    detail = {"message": message}
    if property_path:
        detail["property"] = property_path
    return detail


_ID = r"(?P<{}>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("POST", re.compile(r"^/v2/bot/message/push$"), MessagingApi.push),
    ("POST", re.compile(r"^/v2/bot/message/reply$"), MessagingApi.reply),
    ("GET", re.compile(r"^/v2/bot/message/quota$"), MessagingApi.quota),
    ("GET", re.compile(r"^/v2/bot/message/quota/consumption$"), MessagingApi.quota_consumption),
    ("GET", re.compile(rf"^/v2/bot/profile/{_ID.format('user_id')}$"), MessagingApi.profile),
    (
        "GET",
        re.compile(rf"^/v2/bot/(?:group|room)/{_ID.format('chat_id')}/member/{_ID.format('user_id')}$"),
        MessagingApi.chat_member_profile,
    ),
    ("GET", re.compile(r"^/v2/bot/info$"), MessagingApi.bot_info),
    ("POST", re.compile(r"^/v2/bot/chat/loading/start$"), MessagingApi.loading_start),
    ("POST", re.compile(r"^/v2/bot/chat/markAsRead$"), MessagingApi.mark_as_read_by_token),
    ("POST", re.compile(r"^/v2/bot/message/markAsRead$"), MessagingApi.mark_as_read_by_chat),
    ("GET", re.compile(rf"^/v2/bot/message/{_ID.format('message_id')}/content$"), MessagingApi.content),
    (
        "GET",
        re.compile(rf"^/v2/bot/message/{_ID.format('message_id')}/content/preview$"),
        MessagingApi.content_preview,
    ),
    (
        "GET",
        re.compile(rf"^/v2/bot/message/{_ID.format('message_id')}/content/transcoding$"),
        MessagingApi.content_transcoding,
    ),
]


def _match(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    for route_method, pattern, handler in _ROUTES:
        found = pattern.match(path)
        if found and route_method == method:
            return handler, found.groupdict()
    return None
