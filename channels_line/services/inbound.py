"""Event processing: one stored webhook event becomes profiles, conversations and messages.

Idempotent: an event is processed under a row lock and marked processed in the same transaction;
messages are unique per (conversation, LINE message ID); profiles and open conversations are
unique in the database, so concurrent workers converge on the same rows."""

from __future__ import annotations

import datetime
import enum
import hashlib
import logging
import mimetypes
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from omnichannel.models import (
    Attachment,
    AttachmentState,
    Conversation,
    ConversationState,
    Direction,
    Message,
    MessageEdit,
    MessageKind,
    SocialProfile,
    ThreadType,
)
from omnichannel.services import (
    conversation_ensure_open,
    conversation_touch,
    conversations_open_locked,
    social_profile_ensure,
)

from ..client import LineApiError, line_client, line_errors
from ..models import EventState, LineWebhookEvent
from .intake_load import yield_to_intake

logger = logging.getLogger(__name__)

STICKER_IMAGE_URL = (
    "https://stickershop.line-scdn.net/stickershop/v1/sticker/{sticker_id}/android/sticker.png"
)
MEDIA_TYPES = {
    "image": MessageKind.IMAGE,
    "video": MessageKind.VIDEO,
    "audio": MessageKind.AUDIO,
    "file": MessageKind.FILE,
}
# After a failed profile fetch, events of that customer do not ask LINE again before this.
PROFILE_RETRY_AFTER = datetime.timedelta(minutes=5)
# Event types that start a conversation when there is none; the others join an open one if any.
CONVERSATION_STARTERS = {"message", "postback", "follow", "join", "memberJoined"}


# --- Profiles -------------------------------------------------------------------------------------


def _profile_is_stale(profile: SocialProfile) -> bool:
    attempted = profile.profile_attempted_at
    if (
        attempted
        and attempted != profile.profile_fetched_at
        and attempted > timezone.now() - PROFILE_RETRY_AFTER
    ):
        # The last fetch failed a moment ago: a failing channel is not asked again on every event,
        # each of which would wait out LINE_API_TIMEOUT in the inbound queue.
        return False
    if profile.profile_fetched_at is None:
        return True
    return profile.profile_fetched_at < timezone.now() - datetime.timedelta(
        hours=settings.LINE_PROFILE_MAX_AGE_HOURS
    )


def line_profile_refresh(*, social_profile_pk: int) -> SocialProfile | None:
    """Fetch display name, picture, status message and language from LINE. A failure is logged and
    leaves the profile as it was; it is tried again on an event PROFILE_RETRY_AFTER later."""
    profile = (
        SocialProfile.objects.select_related("messaging_account__line").filter(pk=social_profile_pk).first()
    )
    if profile is None:
        return None
    try:
        with line_client(profile.messaging_account.line.channel_access_token) as client, line_errors():
            info = client.api.get_profile(profile.external_id, _request_timeout=client.timeout)
    except LineApiError as error:
        logger.warning(
            "LINE profile fetch failed account=%s user=%s error=%s",
            profile.messaging_account_id,
            profile.external_id,
            error,
        )
        profile.profile_attempted_at = timezone.now()
        profile.save(update_fields=["profile_attempted_at"])
        return profile
    profile.display_name = (info.display_name or "")[:200]
    profile.picture_url = (info.picture_url or "")[:1000]
    profile.status_message = (info.status_message or "")[:1000]
    profile.language = (info.language or "")[:20]
    profile.profile_raw = info.to_dict()
    profile.profile_fetched_at = profile.profile_attempted_at = timezone.now()
    profile.save(
        update_fields=[
            "display_name",
            "picture_url",
            "status_message",
            "language",
            "profile_raw",
            "profile_fetched_at",
            "profile_attempted_at",
        ]
    )
    return profile


ProfileKey = tuple[object, str, str]  # account ID, LINE user ID, source type


def _profile_key(event: LineWebhookEvent) -> ProfileKey:
    return (event.messaging_account_id, event.source_user_id, event.source_type)


def _profiles_for_events(events: Sequence[LineWebhookEvent]) -> dict[ProfileKey, SocialProfile | None]:
    """The social profile of each event's customer: the known ones in one query per account, the
    new ones created. A stale profile of a one-to-one chat is fetched from LINE here, outside the
    events' transactions: no lock is held during the HTTP call."""
    wanted: dict[object, set[str]] = {}
    for event in events:
        if event.source_user_id:
            wanted.setdefault(event.messaging_account_id, set()).add(event.source_user_id)
    known = {
        (profile.messaging_account_id, profile.external_id): profile
        for account_id, user_ids in wanted.items()
        for profile in SocialProfile.objects.filter(messaging_account_id=account_id, external_id__in=user_ids)
    }
    profiles: dict[ProfileKey, SocialProfile | None] = {}
    for event in events:
        key = _profile_key(event)
        if key in profiles:
            continue
        if not event.source_user_id:
            profiles[key] = None
            continue
        profile = known.get((event.messaging_account_id, event.source_user_id))
        if profile is None:
            profile, _ = social_profile_ensure(
                account=event.messaging_account, external_id=event.source_user_id
            )
            known[(event.messaging_account_id, event.source_user_id)] = profile
        if event.source_type == ThreadType.USER and _profile_is_stale(profile):
            profile = line_profile_refresh(social_profile_pk=profile.pk) or profile
            known[(event.messaging_account_id, event.source_user_id)] = profile
        profiles[key] = profile
    return profiles


# --- Processing -----------------------------------------------------------------------------------


def _thread(event: LineWebhookEvent) -> tuple[str, str]:
    if event.source_type == "group" and event.source_group_id:
        return ThreadType.GROUP, event.source_group_id
    if event.source_type == "room" and event.source_room_id:
        return ThreadType.ROOM, event.source_room_id
    return ThreadType.USER, event.source_user_id


# The open conversations of the threads the current transaction processes, by account: read (and
# locked) in one query at its start instead of one query per event. Cleared when an event fails
# (its savepoint may have undone a conversation it created or reopened).
_known_conversations: ContextVar[dict[object, dict[str, Conversation | None]] | None] = ContextVar(
    "line_known_conversations", default=None
)


def _conversation(
    event: LineWebhookEvent, profile: SocialProfile | None, *, create: bool
) -> Conversation | None:
    thread_type, thread_id = _thread(event)
    if not thread_id:
        return None
    account = event.messaging_account
    by_account = _known_conversations.get()
    known = by_account.get(account.pk) if by_account is not None else None
    if not create:
        if known is not None and thread_id in known:
            return known[thread_id]
        return (
            Conversation.objects.filter(messaging_account=account, thread_id=thread_id)
            .exclude(state=ConversationState.CLOSED)
            .first()
        )
    conversation, _ = conversation_ensure_open(
        account=account, thread_type=thread_type, thread_id=thread_id, social_profile=profile, known=known
    )
    return conversation


def _add_message(
    event: LineWebhookEvent, conversation: Conversation, profile: SocialProfile | None, **fields
) -> Message:
    """Create the inbound message for an event; the same LINE message ID twice keeps the first."""
    external_id = fields.pop("external_id", "")
    try:
        with transaction.atomic():
            message = Message.objects.create(
                conversation=conversation,
                direction=Direction.INBOUND,
                external_id=external_id,
                sender_profile=profile,
                sent_at=event.line_timestamp,
                raw=event.raw,
                **fields,
            )
    except IntegrityError:
        return Message.objects.get(conversation=conversation, external_id=external_id)
    # The conversation's last activity moves once per transaction (_events_process_locked).
    return message


def _handle_message(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    conversation = _conversation(event, profile, create=True)
    if conversation is None:
        return None
    content = event.raw.get("message") or {}
    content_type = content.get("type", "")
    extras = {k: content[k] for k in ("quoteToken", "markAsReadToken", "quotedMessageId") if k in content}
    if event.mode == "standby":
        extras["standby"] = True

    def add(**fields: object) -> Message:
        return _add_message(event, conversation, profile, external_id=str(content.get("id") or ""), **fields)

    if content_type == "text":
        payload = {**extras, **{k: content[k] for k in ("emojis", "mention") if k in content}}
        return add(kind=MessageKind.TEXT, text=content.get("text", ""), payload=payload)
    if content_type == "sticker":
        payload = {
            **extras,
            "package_id": content.get("packageId"),
            "sticker_id": content.get("stickerId"),
            "sticker_resource_type": content.get("stickerResourceType"),
            "keywords": content.get("keywords") or [],
            "image_url": STICKER_IMAGE_URL.format(sticker_id=content.get("stickerId")),
        }
        return add(kind=MessageKind.STICKER, text=content.get("text", ""), payload=payload)
    if content_type == "location":
        payload = {**extras, **{k: content.get(k) for k in ("title", "address", "latitude", "longitude")}}
        text = " · ".join(str(v) for v in (content.get("title"), content.get("address")) if v)
        return add(kind=MessageKind.LOCATION, text=text, payload=payload)
    if content_type in MEDIA_TYPES:
        payload = {**extras, **{k: content[k] for k in ("imageSet", "duration") if k in content}}
        message = add(kind=MEDIA_TYPES[content_type], text=content.get("fileName", ""), payload=payload)
        if not message.attachments.exists():
            _attachment_create(message=message, content=content)
        return message
    # A message type this version does not know: kept raw, flagged for a human.
    return add(
        kind=MessageKind.UNKNOWN,
        is_flagged=True,
        text=f"Unsupported LINE message type “{content_type}”",
        payload=extras,
    )


def _attachment_create(*, message: Message, content: dict) -> Attachment:
    provider = content.get("contentProvider") or {}
    size = content.get("fileSize")
    attachment = Attachment(
        message=message,
        file_name=str(content.get("fileName") or "")[:255],
        size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        duration_ms=content.get("duration") if isinstance(content.get("duration"), int) else None,
    )
    if provider.get("type") == "external":
        attachment.state = AttachmentState.EXTERNAL
        attachment.external_url = str(provider.get("originalContentUrl") or "")[:2000]
        attachment.preview_url = str(provider.get("previewImageUrl") or "")[:2000]
    elif attachment.size is not None and attachment.size > settings.LINE_MEDIA_MAX_BYTES:
        attachment.state = AttachmentState.TOO_LARGE
        attachment.error = f"{attachment.size} bytes is over the {settings.LINE_MEDIA_MAX_BYTES}-byte limit"
    attachment.save()
    if attachment.state == AttachmentState.PENDING:
        from ..tasks import line_message_content_fetch

        transaction.on_commit(lambda: line_message_content_fetch.delay(attachment.pk), robust=True)
    return attachment


def _inbound_by_line_id(event: LineWebhookEvent, line_message_id: str) -> Message | None:
    return (
        Message.objects.select_for_update()
        .filter(
            conversation__messaging_account=event.messaging_account,
            external_id=line_message_id,
            direction=Direction.INBOUND,
        )
        .first()
    )


def _handle_message_edited(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    content = event.raw.get("message") or {}
    message = _inbound_by_line_id(event, str(content.get("id") or ""))
    if message is None:
        # The original never reached us: keep the edited version as a message of its own.
        return _handle_message(event, profile)
    new_text = content.get("text", "")
    if message.edits.filter(edited_at=event.line_timestamp).exists():
        return message
    MessageEdit.objects.create(
        message=message,
        previous_text=message.text,
        new_text=new_text,
        edited_at=event.line_timestamp,
        raw=event.raw,
    )
    if message.edited_at is None or message.edited_at <= event.line_timestamp:
        message.text = new_text
        message.edited_at = event.line_timestamp
        message.save(update_fields=["text", "edited_at"])
    return message


def _handle_unsend(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    line_message_id = str((event.raw.get("unsend") or {}).get("messageId") or "")
    message = _inbound_by_line_id(event, line_message_id)
    if message is None:
        conversation = _conversation(event, profile, create=False)
        if conversation is None:
            return None
        # Unsent before we stored it: keep only the marker.
        message = _add_message(
            event, conversation, profile, kind=MessageKind.TEXT, external_id=line_message_id
        )
    for attachment in message.attachments.all():
        if attachment.file:
            attachment.file.delete(save=False)
        attachment.file = ""
        attachment.external_url = attachment.preview_url = ""
        attachment.state = AttachmentState.REMOVED
        attachment.save(update_fields=["file", "external_url", "preview_url", "state"])
    message.edits.all().delete()
    message.text = ""
    message.payload = {}
    message.raw = {"unsend": event.raw}
    message.unsent_at = event.line_timestamp
    message.save(update_fields=["text", "payload", "raw", "unsent_at"])
    return message


def _reachability(profile: SocialProfile | None, reachable: bool, at: datetime.datetime) -> None:
    if profile is None:
        return
    # Out-of-order follow/unfollow: only a newer event changes the flag.
    if profile.reachability_changed_at and profile.reachability_changed_at > at:
        return
    profile.is_reachable = reachable
    profile.reachability_changed_at = at
    profile.save(update_fields=["is_reachable", "reachability_changed_at"])


def _handle_follow(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    _reachability(profile, True, event.line_timestamp)
    unblocked = bool((event.raw.get("follow") or {}).get("isUnblocked"))
    text = "Unblocked the account" if unblocked else "Added the account as a friend"
    return _event_marker(event, profile, text=text, detail={"unblocked": unblocked})


def _handle_unfollow(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    _reachability(profile, False, event.line_timestamp)
    return _event_marker(event, profile, text="Blocked the account: messages can no longer reach them")


def _handle_postback(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    conversation = _conversation(event, profile, create=True)
    if conversation is None:
        return None
    postback = event.raw.get("postback") or {}
    return _add_message(
        event,
        conversation,
        profile,
        kind=MessageKind.POSTBACK,
        text=str(postback.get("data", "")),
        payload={"data": postback.get("data"), "params": postback.get("params") or {}},
    )


EVENT_TEXTS = {
    "join": "The account joined the chat",
    "leave": "The account left the chat",
    "memberJoined": "Members joined the chat",
    "memberLeft": "Members left the chat",
    "beacon": "Customer near a beacon",
    "accountLink": "Account linking",
    "videoPlayComplete": "Customer watched a video to the end",
}


def _event_marker(
    event: LineWebhookEvent,
    profile: SocialProfile | None,
    *,
    text: str,
    detail: dict | None = None,
    flagged: bool = False,
) -> Message | None:
    # A flagged (unknown) event opens a conversation too: a person should look at it.
    conversation = _conversation(event, profile, create=flagged or event.event_type in CONVERSATION_STARTERS)
    if conversation is None:
        return None
    detail = dict(detail or {})
    for key in ("joined", "left", "beacon", "link", "videoPlayComplete"):
        if key in event.raw:
            detail[key] = event.raw[key]
    return _add_message(
        event,
        conversation,
        profile,
        kind=MessageKind.UNKNOWN if flagged else MessageKind.EVENT,
        text=text,
        payload={"event": event.event_type, **detail},
        is_flagged=flagged,
        external_id=f"event:{event.webhook_event_id}",
    )


def _handle_other(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    if event.event_type in EVENT_TEXTS:
        return _event_marker(event, profile, text=EVENT_TEXTS[event.event_type])
    # Unknown to this version: never dropped. The raw event stays on the event row, and a flagged
    # marker in the customer's conversation (when there is a source) tells an agent.
    logger.warning(
        "LINE event of unknown type kept account=%s event=%s type=%s",
        event.messaging_account_id,
        event.webhook_event_id,
        event.event_type,
    )
    if not event.source_user_id and not event.source_group_id and not event.source_room_id:
        return None
    return _event_marker(event, profile, text=f"Unsupported LINE event “{event.event_type}”", flagged=True)


HANDLERS: dict[str, Callable[[LineWebhookEvent, SocialProfile | None], Message | None]] = {
    "message": _handle_message,
    "messageEdited": _handle_message_edited,
    "unsend": _handle_unsend,
    "follow": _handle_follow,
    "unfollow": _handle_unfollow,
    "postback": _handle_postback,
}


MAX_ATTEMPTS = 5
# A transaction takes up to EVENTS_PER_TRANSACTION events: each has a fixed cost (locking the
# events, reading their conversations, writing the outcome, the commit), half of the work with 2
# events per transaction. On SQLite a transaction holds the one write lock, which the webhook's
# writer waits for: there it takes no further event once it has run for TRANSACTION_SECONDS (a
# slow machine, or a worker descheduled in favour of the web processes) or once it sees the
# webhook's writer waiting.
EVENTS_PER_TRANSACTION = 8
TRANSACTION_SECONDS = 0.01


def line_events_process(*, event_pks: Sequence[int]) -> list[LineWebhookEvent]:
    """Process stored events exactly once each, in LINE timestamp order, a few per transaction with a
    savepoint per event (a failing event does not undo the others; it stays pending with its error
    for a later try, and is marked failed after MAX_ATTEMPTS). Profiles are fetched first, outside
    the transaction, so that no lock is held while LINE is called. Running it twice changes nothing:
    processed events are skipped under a row lock."""
    events = list(
        LineWebhookEvent.objects.select_related("messaging_account__line")
        .filter(pk__in=list(event_pks))
        .exclude(state=EventState.PROCESSED)
        .order_by("line_timestamp", "id")
    )
    if not events:
        return []
    profiles = _profiles_for_events(events)
    done: list[LineWebhookEvent] = []
    while events:
        chunk, events = events[:EVENTS_PER_TRANSACTION], events[EVENTS_PER_TRANSACTION:]
        # A burst's webhooks go first (intake_load.py), up to a lag of LINE_PROCESSING_MAX_LAG_SECONDS.
        yield_to_intake(oldest_received_at=min(event.received_at for event in chunk))
        processed, left = _events_process_locked(chunk, profiles)
        done += processed
        events = left + events
    return done


def _events_process_locked(
    events: list[LineWebhookEvent], profiles: dict[ProfileKey, SocialProfile | None]
) -> tuple[list[LineWebhookEvent], list[LineWebhookEvent]]:
    """Process events in one transaction, at least one, until _commit_early() says to stop;
    returns the events processed (or failed) and those left for the next transaction."""
    done: list[LineWebhookEvent] = []
    left: list[LineWebhookEvent] = []
    with transaction.atomic():
        started = time.monotonic()
        locked = {
            row.pk: row
            for row in LineWebhookEvent.objects.select_for_update()
            .filter(pk__in=[e.pk for e in events])
            .exclude(state=EventState.PROCESSED)
            .order_by("pk")
        }
        _conversations_lock(events)
        threads: dict[object, set[str]] = {}
        for event in events:
            if thread_id := _thread(event)[1]:
                threads.setdefault(event.messaging_account_id, set()).add(thread_id)
        known = {
            account_id: conversations_open_locked(account_id=account_id, thread_ids=thread_ids)
            for account_id, thread_ids in threads.items()
        }
        token = _known_conversations.set(known)
        try:
            for index, event in enumerate(events):
                if done and _commit_early(started):
                    left = events[index:]
                    break
                if (row := locked.get(event.pk)) is not None:
                    done.append(_event_process(row, event, profiles, known))
        finally:
            _known_conversations.reset(token)
        _conversations_touch(done)
        _events_save_outcome(done)
    return done, left


def _conversations_touch(events: list[LineWebhookEvent]) -> None:
    """Move each conversation's last activity to its latest message of these events, once."""
    latest: dict[int, datetime.datetime] = {}
    for event in events:
        if event.state == EventState.PROCESSED and event.message_id is not None:
            message = event.message
            latest[message.conversation_id] = max(
                message.sent_at, latest.get(message.conversation_id, message.sent_at)
            )
    for conversation_id, at in latest.items():
        conversation_touch(conversation_id=conversation_id, at=at)


def _event_process(
    row: LineWebhookEvent,
    event: LineWebhookEvent,
    profiles: dict[ProfileKey, SocialProfile | None],
    known: dict[object, dict[str, Conversation | None]],
) -> LineWebhookEvent:
    """One event, locked (`row`), in a savepoint of its own: a failure is recorded on the row."""
    row.messaging_account = event.messaging_account
    row.attempts += 1
    try:
        with transaction.atomic():
            message = HANDLERS.get(row.event_type, _handle_other)(row, profiles[_profile_key(event)])
    except Exception as exc:
        logger.exception(
            "LINE event processing failed account=%s event=%s attempt=%s",
            row.messaging_account_id,
            row.webhook_event_id,
            row.attempts,
        )
        # The savepoint undid what the event did: conversations it created or reopened included.
        known.clear()
        row.last_error = f"{exc.__class__.__name__}: {exc}"[:2000]
        if row.attempts >= MAX_ATTEMPTS:
            row.state = EventState.FAILED
    else:
        row.state = EventState.PROCESSED
        row.processed_at = timezone.now()
        row.last_error = ""
        row.message = message
        row.conversation = message.conversation if message else None
    return row


def _events_save_outcome(events: list[LineWebhookEvent]) -> None:
    """Write each event's state, attempts, error and records in one statement run per row (Django's
    bulk_update builds a CASE expression per field and row: a fifth of a worker's time)."""
    if not events:
        return
    meta = LineWebhookEvent._meta
    ops = connection.ops
    names = ("state", "processed_at", "attempts", "last_error", "message", "conversation")
    assignments = ", ".join(f"{ops.quote_name(meta.get_field(name).column)} = %s" for name in names)
    # Only identifiers from the model's own metadata are interpolated; every value is a parameter.
    table, pk = ops.quote_name(meta.db_table), ops.quote_name(meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
    rows = [
        [
            event.state,
            ops.adapt_datetimefield_value(event.processed_at),
            event.attempts,
            event.last_error,
            event.message_id,
            event.conversation_id,
            event.pk,
        ]
        for event in events
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _commit_early(started: float) -> bool:
    """Whether the transaction should take no further event: on SQLite, when it has run for
    TRANSACTION_SECONDS or the webhook's event writer waits for the write lock it holds (see
    omnichannel/db/sqlite). On PostgreSQL the webhook's inserts never wait for it."""
    waiting = getattr(connection, "priority_writer_waiting", None)
    if waiting is None:
        return False
    return time.monotonic() - started > TRANSACTION_SECONDS or waiting()


def _thread_lock_key(account_id: object, thread_id: str) -> int:
    digest = hashlib.blake2b(f"line-thread:{account_id}:{thread_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _conversations_lock(events: list[LineWebhookEvent]) -> None:
    """Serialize the transactions that go to the same conversation threads, taking their locks all
    at once and in one order. Taken one by one in event order, two workers whose events cross
    (customer A then B, B then A) deadlock on PostgreSQL: on existing conversations' rows, and on
    new ones in the unique index. A transaction-scoped advisory lock per thread covers both, even
    before the conversation exists. SQLite has one writer at a time and nothing to lock."""
    if connection.vendor != "postgresql":
        return
    keys = sorted(
        {
            _thread_lock_key(event.messaging_account_id, thread_id)
            for event in events
            if (thread_id := _thread(event)[1])
        }
    )
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def line_event_process(*, event_pk: int) -> LineWebhookEvent | None:
    """Process one stored event (see line_events_process); returns it as stored afterwards."""
    line_events_process(event_pks=[event_pk])
    return LineWebhookEvent.objects.filter(pk=event_pk).first()


# --- Media ----------------------------------------------------------------------------------------


class FetchOutcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


def line_attachment_fetch(*, attachment_pk: int, final_attempt: bool = False) -> FetchOutcome:
    """Download an inbound attachment from LINE's data host into storage, within the size cap.
    LINE answers 202 while a video or audio is being transcoded: RETRY, unless this is the last try."""
    attachment = (
        Attachment.objects.select_related("message__conversation__messaging_account__line")
        .filter(pk=attachment_pk)
        .first()
    )
    if attachment is None or attachment.state != AttachmentState.PENDING:
        return FetchOutcome.DONE
    message = attachment.message
    line = message.conversation.messaging_account.line
    cap = settings.LINE_MEDIA_MAX_BYTES
    Attachment.objects.filter(pk=attachment_pk).update(fetch_attempts=attachment.fetch_attempts + 1)
    try:
        with line_client(line.channel_access_token) as client, line_errors():
            response = client.blob.get_message_content_with_http_info(
                message.external_id, _request_timeout=client.timeout
            )
    except LineApiError as error:
        if error.retryable and not final_attempt:
            _attachment_error(attachment_pk, str(error))
            return FetchOutcome.RETRY
        return _attachment_failed(attachment_pk, str(error))
    if response.status_code == 202:
        # LINE is still transcoding (video, audio): the SDK gives no content yet.
        if final_attempt:
            return _attachment_failed(attachment_pk, "LINE never finished preparing the content")
        _attachment_error(attachment_pk, "LINE is still preparing the content")
        return FetchOutcome.RETRY
    content = bytes(response.data or b"")
    content_type = (response.headers or {}).get("Content-Type", "application/octet-stream")
    if len(content) > cap:
        Attachment.objects.filter(pk=attachment_pk).update(
            state=AttachmentState.TOO_LARGE, error=f"{len(content)} bytes is over the {cap}-byte limit"
        )
        return FetchOutcome.FAILED
    name = attachment.file_name or f"{message.external_id}{_extension(content_type)}"
    with transaction.atomic():
        current = Attachment.objects.select_for_update().get(pk=attachment_pk)
        if current.state != AttachmentState.PENDING:
            return FetchOutcome.DONE
        current.file.save(name, ContentFile(content), save=False)
        current.file_name = name
        current.content_type = content_type.split(";")[0].strip()
        current.size = len(content)
        current.state = AttachmentState.READY
        current.error = ""
        current.save(update_fields=["file", "file_name", "content_type", "size", "state", "error"])
    return FetchOutcome.DONE


def _extension(content_type: str) -> str:
    return mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""


def _attachment_error(attachment_pk: int, error: str) -> None:
    Attachment.objects.filter(pk=attachment_pk).update(error=error[:2000])


def _attachment_failed(attachment_pk: int, error: str) -> FetchOutcome:
    logger.warning("LINE content download failed attachment=%s error=%s", attachment_pk, error)
    Attachment.objects.filter(pk=attachment_pk, state=AttachmentState.PENDING).update(
        state=AttachmentState.FAILED, error=error[:2000]
    )
    return FetchOutcome.FAILED
