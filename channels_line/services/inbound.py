"""Event processing: one stored webhook event becomes profiles, conversations and messages.

Idempotent: an event is processed under a row lock and marked processed in the same transaction;
messages are unique per (conversation, LINE message ID); profiles and open conversations are
unique in the database, so concurrent workers converge on the same rows."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import mimetypes
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import IO

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from omnichannel import live
from omnichannel.files import content_type_base, file_name_clean, original_name_keep
from omnichannel.models import (
    Attachment,
    AttachmentState,
    ChannelType,
    Conversation,
    ConversationState,
    Direction,
    LiveNotice,
    Message,
    MessageEdit,
    MessageKind,
    MessagingAccount,
    SocialProfile,
    ThreadType,
)
from omnichannel.services import (
    conversation_ensure_open,
    conversation_touch,
    conversations_open_locked,
    social_profile_ensure,
)
from routing.selectors import channel_instance_attachment_policy

from ..client import LineApiError, LineContent, line_client, line_errors, line_message_content
from ..models import EventState, LineWebhookEvent

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


def _object(value: object) -> dict:
    """A JSON object of the event, or {} when the event holds something else there."""
    return value if isinstance(value, dict) else {}


def _string(value: object) -> str:
    """A text field of the event: "" when missing or null, JSON text when it is something else."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


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


def line_profile_refresh(*, profile: SocialProfile, account: MessagingAccount) -> SocialProfile:
    """Fetch display name, picture, status message and language from LINE (with the token of
    `account`, the profile's, its LINE channel loaded). A failure is logged and leaves the profile as
    it was; it is tried again on an event PROFILE_RETRY_AFTER later."""
    try:
        with line_client(account.line.channel_access_token) as client, line_errors():
            info = client.api.get_profile(profile.external_id, _request_timeout=client.timeout)
    except Exception as error:  # LINE's refusal, or anything else: the events go on without it
        logger.warning(
            "LINE profile fetch failed account=%s user=%s error=%s",
            profile.messaging_account_id,
            profile.external_id,
            error,
            exc_info=not isinstance(error, LineApiError),
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


def _profiles_known(keys: Iterable[ProfileKey]) -> dict[tuple[object, str], SocialProfile]:
    """The stored profiles of these customers, one query per account (without the raw LINE
    profile, which processing never reads)."""
    wanted: dict[object, set[str]] = {}
    for account_id, user_id, _ in keys:
        if user_id:
            wanted.setdefault(account_id, set()).add(user_id)
    return {
        (profile.messaging_account_id, profile.external_id): profile
        for account_id, user_ids in wanted.items()
        for profile in SocialProfile.objects.filter(
            messaging_account_id=account_id, external_id__in=user_ids
        ).defer("profile_raw")
    }


def _profiles_prepare(
    keys: Sequence[ProfileKey], accounts: dict[object, MessagingAccount]
) -> dict[ProfileKey, SocialProfile | None]:
    """The social profile of each customer: the known ones in one query per account, the new ones
    created. A stale profile of a one-to-one chat is fetched from LINE here, outside the events'
    transactions: no lock is held during the HTTP call."""
    known = _profiles_known(keys)
    profiles: dict[ProfileKey, SocialProfile | None] = {}
    for key in keys:
        account_id, user_id, source_type = key
        if key in profiles:
            continue
        if not user_id:
            profiles[key] = None
            continue
        profile = known.get((account_id, user_id))
        if profile is None:
            if account_id not in accounts:
                accounts.update(MessagingAccount.objects.in_bulk([account_id]))
            profile, _ = social_profile_ensure(account=accounts[account_id], external_id=user_id)
            known[(account_id, user_id)] = profile
        if source_type == ThreadType.USER and _profile_is_stale(profile):
            line_profile_refresh(profile=profile, account=accounts[account_id])
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
# locked) in one query at its start instead of one query per event. Good for one transaction only:
# when an event fails, the transaction is rolled back and the next one reads them again.
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
    external_id = str(fields.pop("external_id", ""))[:100]
    if event.raw_as_signed:
        fields["is_flagged"] = True  # stored altered (event_store.webhook_events): a human looks
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
        existing = (
            Message.objects.filter(conversation=conversation, external_id=external_id).first()
            if external_id
            else None
        )
        if existing is None:
            raise  # not the same LINE message twice: a real error
        return existing
    # The conversation's last activity moves once per transaction (_events_process_locked).
    return message


def _handle_message(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    conversation = _conversation(event, profile, create=True)
    if conversation is None:
        return None
    content = _object(event.raw.get("message"))
    content_type = _string(content.get("type"))
    extras = {k: content[k] for k in ("quoteToken", "markAsReadToken", "quotedMessageId") if k in content}
    if event.mode == "standby":
        extras["standby"] = True

    def add(**fields: object) -> Message:
        return _add_message(event, conversation, profile, external_id=_string(content.get("id")), **fields)

    if content_type == "text":
        payload = {**extras, **{k: content[k] for k in ("emojis", "mention") if k in content}}
        return add(kind=MessageKind.TEXT, text=_string(content.get("text")), payload=payload)
    if content_type == "sticker":
        payload = {
            **extras,
            "package_id": content.get("packageId"),
            "sticker_id": content.get("stickerId"),
            "sticker_resource_type": content.get("stickerResourceType"),
            "keywords": content.get("keywords") or [],
            "image_url": STICKER_IMAGE_URL.format(sticker_id=content.get("stickerId")),
        }
        return add(kind=MessageKind.STICKER, text=_string(content.get("text")), payload=payload)
    if content_type == "location":
        payload = {**extras, **{k: content.get(k) for k in ("title", "address", "latitude", "longitude")}}
        text = " · ".join(str(v) for v in (content.get("title"), content.get("address")) if v)
        return add(kind=MessageKind.LOCATION, text=text, payload=payload)
    if content_type in MEDIA_TYPES:
        payload = {**extras, **{k: content[k] for k in ("imageSet", "duration") if k in content}}
        # The channel instance's user features decide (one query); a refused file is flagged to the agent.
        policy = channel_instance_attachment_policy(messaging_account_id=event.messaging_account_id)
        refusal = policy.customers_refusal
        flag = {"is_flagged": True} if refusal else {}
        message = add(
            kind=MEDIA_TYPES[content_type], text=_string(content.get("fileName")), payload=payload, **flag
        )
        if not message.attachments.exists():
            _attachment_create(message=message, content=content, refusal=refusal)
        return message
    # A message type this version does not know: kept raw, flagged for a human.
    return add(
        kind=MessageKind.UNKNOWN,
        is_flagged=True,
        text=f"Unsupported LINE message type “{content_type}”",
        payload=extras,
    )


def _attachment_create(*, message: Message, content: dict, refusal: str = "") -> Attachment:
    """The attachment of a customer's media message: downloaded after the commit, or, without a
    download, hosted elsewhere, too large, or refused (`refusal`: why; its name and size are kept)."""
    provider = _object(content.get("contentProvider"))
    size = content.get("fileSize")
    original = _string(content.get("fileName"))
    # LINE names only files; images, video and audio get a name when downloaded (by content type).
    safe_name = file_name_clean(original, fallback=_string(content.get("id")) or "file") if original else ""
    attachment = Attachment(
        message=message,
        file_name=safe_name,
        original_name=original_name_keep(original),
        size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        duration_ms=content.get("duration") if isinstance(content.get("duration"), int) else None,
    )
    if refusal:
        attachment.state = AttachmentState.REFUSED
        attachment.error = refusal
    elif provider.get("type") == "external":
        attachment.state = AttachmentState.EXTERNAL
        attachment.external_url = _string(provider.get("originalContentUrl"))[:2000]
        attachment.preview_url = _string(provider.get("previewImageUrl"))[:2000]
    elif attachment.size is not None and attachment.size > settings.LINE_MEDIA_MAX_BYTES:
        attachment.state = AttachmentState.TOO_LARGE
        attachment.error = f"{attachment.size} bytes is over the {settings.LINE_MEDIA_MAX_BYTES}-byte limit"
    if attachment.state == AttachmentState.PENDING:
        attachment.fetch_due_at = timezone.now()
    attachment.save()
    if attachment.state == AttachmentState.PENDING:
        from ..tasks import line_message_content_fetch

        # robust: a broker outage is logged; the sweep (line_attachments_sweep) queues it later.
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
    content = _object(event.raw.get("message"))
    message = _inbound_by_line_id(event, _string(content.get("id"))[:100])
    if message is None:
        # The original never reached us: keep the edited version as a message of its own.
        return _handle_message(event, profile)
    new_text = _string(content.get("text"))
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
    line_message_id = _string(_object(event.raw.get("unsend")).get("messageId"))[:100]
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
    unblocked = _object(event.raw.get("follow")).get("isUnblocked") is True
    text = "Unblocked the account" if unblocked else "Added the account as a friend"
    return _event_marker(event, profile, text=text, detail={"unblocked": unblocked})


def _handle_unfollow(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    _reachability(profile, False, event.line_timestamp)
    return _event_marker(event, profile, text="Blocked the account: messages can no longer reach them")


def _handle_postback(event: LineWebhookEvent, profile: SocialProfile | None) -> Message | None:
    conversation = _conversation(event, profile, create=True)
    if conversation is None:
        return None
    postback = _object(event.raw.get("postback"))
    return _add_message(
        event,
        conversation,
        profile,
        kind=MessageKind.POSTBACK,
        text=_string(postback.get("data")),
        payload={"data": postback.get("data"), "params": _object(postback.get("params"))},
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
# A transaction takes up to EVENTS_PER_TRANSACTION events: each transaction has a fixed cost (taking
# the events, reading their conversations, writing the outcome, the commit), and on SQLite holds the
# one write lock that webhooks wait for: a few events keep it short.
EVENTS_PER_TRANSACTION = 4
# Errors that a later try can pass: the database or the network, not the event's content.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, OSError)


def line_events_process(*, event_pks: Sequence[int]) -> list[LineWebhookEvent]:
    """Process stored events exactly once each, in LINE timestamp order, a few per transaction.

    Each transaction takes the task's next events and, while it has room (EVENTS_PER_TRANSACTION),
    other events that are due (never tried yet, oldest first, whose customer's profile needs no call
    to LINE): under load a task carries several events and the tasks of the events it took find
    nothing to do (one query); a lone event is processed at once, alone. The events are taken under
    a row lock (on PostgreSQL, skipping those another transaction holds; SQLite has one writer) and
    marked processed in the same transaction: an event is processed once.

    An event that fails has its transaction rolled back and its failure recorded on its own; the
    other events of that transaction are processed again in the next one (a failing event never
    undoes another's work). A failure a retry can pass (TRANSIENT_ERRORS) leaves the event pending
    with its error for a later try, failed after MAX_ATTEMPTS; any other failure marks it failed at
    once, with the reason. Profiles of the task's own events are prepared first, outside the
    transactions, so that no lock is held while LINE is called. Running it twice changes nothing."""
    # Who the customers are, and their accounts: the events themselves are read when taken.
    own = list(
        LineWebhookEvent.objects.select_related("messaging_account__line")
        .filter(pk__in=list(event_pks), state=EventState.PENDING)
        .order_by("line_timestamp", "id")
        .only("messaging_account", "source_user_id", "source_type", "line_timestamp")
    )
    if not own:
        return []
    accounts = {event.messaging_account_id: event.messaging_account for event in own}
    profiles = _profiles_prepare([_profile_key(event) for event in own], accounts)
    remaining = [event.pk for event in own]
    done: list[LineWebhookEvent] = []
    while remaining:
        batch, remaining = remaining[:EVENTS_PER_TRANSACTION], remaining[EVENTS_PER_TRANSACTION:]
        processed, failed = _events_process_locked(batch, profiles, accounts)
        done += processed
        if failed is not None:
            # Rolled back with the failing event: the rest of its transaction goes again, first (an
            # event taken from another task is no longer due once it has failed: never taken again).
            remaining = [pk for pk in batch if pk != failed.pk] + remaining
    return done


# Other due events are looked for among this many oldest pending events only: a claim reads a few
# rows whatever the backlog, even when none of them can be taken.
CLAIM_WINDOW = 32


def _events_claim(own_pks: list[int]) -> list[LineWebhookEvent]:
    """Lock and read, in one query, these events while still pending, and other due events up to
    EVENTS_PER_TRANSACTION in all: among the CLAIM_WINDOW oldest pending events, those never tried
    (their own task is still to come), oldest first, of a customer whose profile is stored and needs
    no call to LINE now (_profile_is_stale's rule: fetched within LINE_PROFILE_MAX_AGE_HOURS, or
    tried within PROFILE_RETRY_AFTER). On PostgreSQL, events another transaction holds are skipped:
    a copy of this task, or a transaction that took them as others, processes them.

    Written as SQL: Django took 2.7 ms of CPU to compile this query (its subqueries), for a
    statement that runs in a hundredth of that; a worker spent more time here than anywhere else."""
    meta, profiles = LineWebhookEvent._meta, SocialProfile._meta
    ops = connection.ops
    room = EVENTS_PER_TRANSACTION - len(own_pks)
    own = ", ".join(["%s"] * len(own_pks))
    skip_locked = connection.features.has_select_for_update_skip_locked
    table = ops.quote_name(meta.db_table)
    others = ""
    params: list[object] = [*own_pks, EventState.PENDING]
    if room > 0:
        fetched = ops.quote_name(profiles.get_field("profile_fetched_at").column)
        attempted = ops.quote_name(profiles.get_field("profile_attempted_at").column)
        now = timezone.now()
        others = (
            f" UNION ALL SELECT due.id FROM (SELECT o.id FROM {table} o "  # noqa: S608
            f"WHERE o.id IN (SELECT w.id FROM {table} w WHERE w.state = %s ORDER BY w.received_at LIMIT %s) "
            f"AND o.attempts = 0 AND o.id NOT IN ({own}) "
            "AND (o.source_user_id = '' OR EXISTS (SELECT 1 FROM "
            f"{ops.quote_name(profiles.db_table)} p WHERE p.messaging_account_id = o.messaging_account_id "
            f"AND p.external_id = o.source_user_id "
            f"AND (o.source_type <> %s OR p.{fetched} >= %s OR p.{attempted} > %s))) "
            f"ORDER BY o.received_at LIMIT %s{' FOR UPDATE SKIP LOCKED' if skip_locked else ''}) due"
        )
        params += [
            EventState.PENDING,
            CLAIM_WINDOW,
            *own_pks,
            ThreadType.USER,
            ops.adapt_datetimefield_value(
                now - datetime.timedelta(hours=settings.LINE_PROFILE_MAX_AGE_HOURS)
            ),
            ops.adapt_datetimefield_value(now - PROFILE_RETRY_AFTER),
            room,
        ]
    columns = ", ".join(f"e.{ops.quote_name(field.column)}" for field in meta.concrete_fields)
    # Only identifiers from the models' own metadata are interpolated; every value is a parameter.
    # `e.state` again on the locked row itself: on PostgreSQL an event whose processing committed
    # between this statement's snapshot (the subquery's) and the lock is re-read, and only a condition
    # on the row excludes it then; without it, that event was processed a second time.
    sql = (
        f"SELECT {columns} FROM {table} e WHERE e.id IN "  # noqa: S608
        f"(SELECT mine.id FROM {table} mine WHERE mine.id IN ({own}) AND mine.state = %s{others}) "
        f"AND e.state = %s{' FOR UPDATE OF e SKIP LOCKED' if skip_locked else ''}"
    )
    params.append(EventState.PENDING)
    return sorted(LineWebhookEvent.objects.raw(sql, params), key=lambda e: (e.line_timestamp, e.pk))


def _events_process_locked(
    own_pks: list[int],
    profiles: dict[ProfileKey, SocialProfile | None],
    accounts: dict[object, MessagingAccount],
) -> tuple[list[LineWebhookEvent], LineWebhookEvent | None]:
    """Process events in one transaction. Returns those processed by this call, and the event that
    failed, if one did: the transaction was rolled back, its failure recorded, and the events
    returned are only that one."""
    current: LineWebhookEvent | None = None
    try:
        with transaction.atomic():
            events = _events_claim(own_pks)
            others = [e for e in events if _profile_key(e) not in profiles]
            if others:
                known = _profiles_known(_profile_key(e) for e in others)
                for event in others:
                    account_id, user_id, _ = key = _profile_key(event)
                    profiles[key] = known.get((account_id, user_id)) if user_id else None
                # A profile gone since the claim: that event is left to its own task.
                events = [e for e in events if not e.source_user_id or profiles.get(_profile_key(e))]
            if not events:
                return [], None
            if missing := {e.messaging_account_id for e in events} - accounts.keys():
                accounts.update(MessagingAccount.objects.in_bulk(list(missing)))
            for event in events:
                event.messaging_account = accounts[event.messaging_account_id]
            _conversations_lock(events)
            threads: dict[object, set[str]] = {}
            for event in events:
                if thread_id := _thread(event)[1]:
                    threads.setdefault(event.messaging_account_id, set()).add(thread_id)
            known_conversations = {
                account_id: conversations_open_locked(account_id=account_id, thread_ids=thread_ids)
                for account_id, thread_ids in threads.items()
            }
            token = _known_conversations.set(known_conversations)
            try:
                for event in events:
                    current = event
                    handle = HANDLERS.get(event.event_type, _handle_other)
                    message = handle(event, profiles[_profile_key(event)])
                    current = None
                    event.attempts += 1
                    event.state = EventState.PROCESSED
                    event.processed_at = timezone.now()
                    event.last_error = ""
                    event.message = message
                    event.conversation = message.conversation if message else None
            finally:
                _known_conversations.reset(token)
            _conversations_touch(events)
            _events_save_outcome(events)
            _messages_announce(events)
    except Exception as exc:
        if current is None:
            raise  # not one event's failure (taking the events, the locks, the outcome): the task's
        return _event_failed(current, exc), current
    return events, None


def _event_failed(event: LineWebhookEvent, exc: Exception) -> list[LineWebhookEvent]:
    """Record the failure of an event whose transaction was rolled back, in a transaction of its own,
    unless it is no longer pending as it was (processed meanwhile by another worker). Returns it
    when recorded."""
    logger.error(
        "LINE event processing failed account=%s event=%s attempt=%s",
        event.messaging_account_id,
        event.webhook_event_id,
        event.attempts + 1,
        exc_info=exc,
    )
    tried = event.attempts
    event.attempts = tried + 1
    event.last_error = f"{exc.__class__.__name__}: {exc}"[:2000]
    if event.attempts >= MAX_ATTEMPTS or not isinstance(exc, TRANSIENT_ERRORS):
        event.state = EventState.FAILED
    else:
        event.state = EventState.PENDING
    recorded = LineWebhookEvent.objects.filter(pk=event.pk, state=EventState.PENDING, attempts=tried).update(
        state=event.state, attempts=event.attempts, last_error=event.last_error
    )
    return [event] if recorded else []


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


def _messages_announce(events: list[LineWebhookEvent]) -> None:
    """Tell the pages showing these conversations (and the agents working them) about the messages
    added or changed, in one statement."""
    live.publish_many(
        LiveNotice(
            kind=live.MESSAGE,
            agent_id=event.conversation.assigned_agent_id,
            conversation_id=event.conversation_id,
            data={"message": event.message_id},
        )
        for event in events
        if event.message_id is not None
    )


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


def _thread_lock_key(account_id: object, thread_id: str) -> int:
    digest = hashlib.blake2b(f"line-thread:{account_id}:{thread_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _conversations_lock(events: list[LineWebhookEvent]) -> None:
    """Serialize the transactions that go to the same conversation threads, taking their locks all
    at once and in one order (one statement: the keys in ascending order). Taken one by one in
    event order, two workers whose events cross (customer A then B, B then A) deadlock on
    PostgreSQL: on existing conversations' rows, and on new ones in the unique index. A
    transaction-scoped advisory lock per thread covers both, even before the conversation exists.
    SQLite has one writer at a time and nothing to lock."""
    if connection.vendor != "postgresql":
        return
    keys = sorted(
        {
            _thread_lock_key(event.messaging_account_id, thread_id)
            for event in events
            if (thread_id := _thread(event)[1])
        }
    )
    if keys:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key", [keys])


def line_event_process(*, event_pk: int) -> LineWebhookEvent | None:
    """Process one stored event (see line_events_process); returns it as stored afterwards."""
    line_events_process(event_pks=[event_pk])
    return LineWebhookEvent.objects.filter(pk=event_pk).first()


# --- Media ----------------------------------------------------------------------------------------


# A download LINE cannot give yet (transcoding, or LINE unreachable) is tried this many times in all.
CONTENT_MAX_ATTEMPTS = 9


def line_attachment_fetch(*, attachment_pk: int) -> float | None:
    """Download an inbound attachment from LINE's data host into storage, streamed in chunks through
    a temporary file (never whole in memory), within LINE_MEDIA_MAX_BYTES: a body announced or
    found larger is not read further and the attachment is marked too large. Its name is made safe
    (omnichannel.files.file_name_clean; the sender's kept as `original_name`). Returns the seconds
    after which to try again (LINE answers 202 while it transcodes a video or audio; LINE
    unreachable), with the attachment due then, or None when there is nothing more to do
    (downloaded, failed, too large, or not waiting for a download)."""
    attachment = (
        Attachment.objects.select_related("message__conversation__messaging_account__line")
        .filter(pk=attachment_pk)
        .first()
    )
    if attachment is None or attachment.state != AttachmentState.PENDING:
        return None
    message = attachment.message
    line = message.conversation.messaging_account.line
    attempts = attachment.fetch_attempts + 1
    if attempts > CONTENT_MAX_ATTEMPTS:  # every try ended without an outcome (workers lost)
        return _attachment_failed(attachment_pk, f"Gave up after {attachment.fetch_attempts} attempts.")
    final_attempt = attempts == CONTENT_MAX_ATTEMPTS
    # Started now: the sweep leaves it alone for QUEUE_SWEEP_AFTER_SECONDS.
    Attachment.objects.filter(pk=attachment_pk).update(fetch_attempts=attempts, fetch_due_at=timezone.now())
    with tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR) as spool:
        try:
            with (
                line_client(line.channel_access_token) as client,
                line_errors(),
                line_message_content(client, message.external_id) as content,
            ):
                if content.status == 202:
                    # LINE is still transcoding (video, audio): no content yet.
                    if final_attempt:
                        return _attachment_failed(attachment_pk, "LINE never finished preparing the content")
                    return _attachment_retry_later(
                        attachment_pk, "LINE is still preparing the content", attempts
                    )
                size = _content_spool(content, spool)
                content_type = content_type_base(content.content_type) or "application/octet-stream"
        except LineApiError as error:
            if error.retryable and not final_attempt:
                return _attachment_retry_later(attachment_pk, str(error), attempts)
            return _attachment_failed(attachment_pk, str(error))
        except ContentTooLarge as too_large:
            Attachment.objects.filter(pk=attachment_pk, state=AttachmentState.PENDING).update(
                state=AttachmentState.TOO_LARGE, error=str(too_large)
            )
            logger.info("LINE content not downloaded attachment=%s: %s", attachment_pk, too_large)
            return None
        generated = f"{message.external_id or attachment_pk}{_extension(content_type)}"
        name = (
            file_name_clean(attachment.file_name, fallback=generated) if attachment.file_name else generated
        )
        # Written to storage before the transaction: a large file is copied without holding the row
        # lock (on SQLite, the one write lock) meanwhile.
        spool.seek(0)
        field = attachment.file.field
        stored = field.storage.save(
            field.generate_filename(attachment, name), File(spool), max_length=field.max_length
        )
    with transaction.atomic():
        current = Attachment.objects.select_for_update().get(pk=attachment_pk)
        if current.state != AttachmentState.PENDING:
            # Another try finished first, or the customer unsent it meanwhile.
            transaction.on_commit(lambda: current.file.storage.delete(stored))
            return None
        current.file.name = stored
        current.file_name = name
        current.content_type = content_type
        current.size = size
        current.state = AttachmentState.READY
        current.error = ""
        current.save(update_fields=["file", "file_name", "content_type", "size", "state", "error"])
        live.message_changed(message_id=current.message_id)
    return None


class ContentTooLarge(Exception):
    """LINE's content is over LINE_MEDIA_MAX_BYTES: announced so, or found so while reading."""


def _content_spool(content: LineContent, spool: IO[bytes]) -> int:
    """Copy the content into `spool` chunk by chunk; returns its size. Raises ContentTooLarge as soon
    as the announced length, or the bytes read so far, pass the cap (the rest is not read)."""
    cap = settings.LINE_MEDIA_MAX_BYTES
    if content.content_length is not None and content.content_length > cap:
        raise ContentTooLarge(f"{content.content_length} bytes is over the {cap}-byte limit")
    size = 0
    for chunk in content.chunks():
        size += len(chunk)
        if size > cap:
            raise ContentTooLarge(f"Over the {cap}-byte limit: the download was stopped after {size} bytes")
        spool.write(chunk)
    return size


def line_attachments_sweep(*, now: datetime.datetime | None = None) -> int:
    """Queue again the downloads overdue by QUEUE_SWEEP_AFTER_SECONDS (their enqueue, or the worker
    running them, was lost). Returns how many were queued."""
    from ..tasks import line_message_content_fetch

    now = now or timezone.now()
    overdue = list(
        Attachment.objects.filter(
            state=AttachmentState.PENDING,
            fetch_due_at__lte=now - datetime.timedelta(seconds=settings.QUEUE_SWEEP_AFTER_SECONDS),
            message__conversation__messaging_account__channel_type=ChannelType.LINE,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for attachment_pk in overdue:
        Attachment.objects.filter(pk=attachment_pk).update(fetch_due_at=now)
        try:
            line_message_content_fetch.delay(attachment_pk)
        except Exception:
            logger.exception(
                "LINE content download not queued (the next sweep will) attachment=%s", attachment_pk
            )
            break
    return len(overdue)


def _extension(content_type: str) -> str:
    return mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""


def _attachment_retry_later(attachment_pk: int, error: str, attempts: int) -> float:
    seconds = min(5 * 2 ** (attempts - 1), 300)
    Attachment.objects.filter(pk=attachment_pk).update(
        error=error[:2000], fetch_due_at=timezone.now() + datetime.timedelta(seconds=seconds)
    )
    return seconds


def _attachment_failed(attachment_pk: int, error: str) -> None:
    logger.warning("LINE content download failed attachment=%s error=%s", attachment_pk, error)
    with transaction.atomic():
        if Attachment.objects.filter(pk=attachment_pk, state=AttachmentState.PENDING).update(
            state=AttachmentState.FAILED, error=error[:2000]
        ):
            live.message_changed(message_id=Attachment.objects.get(pk=attachment_pk).message_id)
