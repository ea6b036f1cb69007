"""Writes of the channel-agnostic core: conversations, messages, heartbeats."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy

from . import live
from .channels import channel_for
from .files import content_type_base, file_name_clean, original_name_keep
from .models import (
    Attachment,
    AttachmentState,
    Conversation,
    ConversationState,
    DeliveryState,
    Direction,
    Message,
    MessageKind,
    MessagingAccount,
    SocialProfile,
    ThreadType,
    WorkerHeartbeat,
)

logger = logging.getLogger(__name__)

OUTBOUND_KINDS = {
    MessageKind.TEXT,
    MessageKind.IMAGE,
    MessageKind.VIDEO,
    MessageKind.AUDIO,
    MessageKind.DOCUMENT,
    MessageKind.STICKER,
    MessageKind.LOCATION,
}
QUICK_REPLY_MAX_ITEMS = 13
# The kinds of message a file goes as, as the refusals of a file name them ("A document must be ...").
UPLOAD_KIND_WORDS = {
    MessageKind.IMAGE: pgettext_lazy("kind of file in a sentence", "image"),
    MessageKind.VIDEO: pgettext_lazy("kind of file in a sentence", "video"),
    MessageKind.AUDIO: pgettext_lazy("kind of file in a sentence", "audio"),
    MessageKind.DOCUMENT: pgettext_lazy("kind of file in a sentence", "document"),
}

# What an agent may upload, by message kind: the types LINE can show (image messages: JPEG or PNG;
# video: MP4; audio: M4A or MP3) and, for documents (sent as a link the customer opens), common
# document formats. Each type with the file extensions it may carry, and the bytes it starts with
# where it has a signature. A declared type must be one of these and match the extension; a file
# declared as octet-stream (curl's default) is judged by its extension. Never HTML, SVG or scripts.
_JPEG = {"image/jpeg": ((".jpg", ".jpeg"), (b"\xff\xd8\xff",))}
_PNG = {"image/png": ((".png",), (b"\x89PNG\r\n\x1a\n",))}
_PDF = {"application/pdf": ((".pdf",), (b"%PDF-",))}
_ZIP = (b"PK\x03\x04",)
_OLE = (b"\xd0\xcf\x11\xe0",)
UPLOAD_TYPES: dict[str, dict[str, tuple[tuple[str, ...], tuple[bytes, ...]]]] = {
    MessageKind.IMAGE: {**_JPEG, **_PNG},
    MessageKind.VIDEO: {"video/mp4": ((".mp4",), ())},
    MessageKind.AUDIO: {
        "audio/mp4": ((".m4a",), ()),
        "audio/x-m4a": ((".m4a",), ()),
        "audio/m4a": ((".m4a",), ()),
        "audio/mpeg": ((".mp3",), ()),
        "audio/mp3": ((".mp3",), ()),
    },
    MessageKind.DOCUMENT: {
        **_PDF,
        **_JPEG,
        **_PNG,
        "text/plain": ((".txt",), ()),
        "text/csv": ((".csv",), ()),
        "application/msword": ((".doc",), _OLE),
        "application/vnd.ms-excel": ((".xls",), _OLE),
        "application/vnd.ms-powerpoint": ((".ppt",), _OLE),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ((".docx",), _ZIP),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ((".xlsx",), _ZIP),
        "application/vnd.openxmlformats-officedocument.presentationml.presentation": ((".pptx",), _ZIP),
        "application/zip": ((".zip",), _ZIP),
    },
}
UNDECLARED_TYPES = {"", "application/octet-stream"}


def worker_heartbeat_record(*, token: str, hostname: str) -> WorkerHeartbeat:
    """Record that a worker ran a task; running it twice with one token keeps one row."""
    heartbeat, _ = WorkerHeartbeat.objects.get_or_create(token=token, defaults={"hostname": hostname})
    return heartbeat


def worker_heartbeats_prune(*, older_than: datetime.timedelta = datetime.timedelta(days=1)) -> int:
    """Delete heartbeats older than `older_than`; returns how many were deleted."""
    deleted, _ = WorkerHeartbeat.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted


def social_profile_ensure(*, account: MessagingAccount, external_id: str) -> tuple[SocialProfile, bool]:
    """The social profile of `external_id` on `account`, created on first contact (the caller looked
    it up already and found none: it is inserted at once, not looked up again).

    Concurrent first contacts create one row: the unique constraint decides, the loser reads it."""
    try:
        with transaction.atomic():
            return SocialProfile.objects.create(messaging_account=account, external_id=external_id), True
    except IntegrityError:
        return SocialProfile.objects.get(messaging_account=account, external_id=external_id), False


def conversation_new_hook(*, conversation: Conversation) -> None:
    """Called once for every new conversation, after commit: queue its routing (it was created due
    for routing, `routing_due_at`, so a lost enqueue is swept up). Never raises."""
    from routing.services import conversation_routing_schedule

    try:
        conversation_routing_schedule(conversation=conversation)
    except Exception:
        logger.exception("Routing not scheduled (the sweep will) conversation=%s", conversation.pk)


def _open_conversations_locked(account_id: object) -> QuerySet[Conversation]:
    return (
        Conversation.objects.select_for_update()
        .filter(messaging_account_id=account_id)
        .exclude(state=ConversationState.CLOSED)
    )


def conversations_open_locked(
    *, account_id: object, thread_ids: Iterable[str]
) -> dict[str, Conversation | None]:
    """The open (not closed) conversation of each of these threads of an account, None for a thread
    without one; locked until the end of the transaction. One query, for callers about to call
    conversation_ensure_open for several threads (pass the result as `known`)."""
    wanted = set(thread_ids)
    known: dict[str, Conversation | None] = dict.fromkeys(wanted)
    for conversation in _open_conversations_locked(account_id).filter(thread_id__in=wanted):
        known[conversation.thread_id] = conversation
    return known


def conversation_ensure_open(
    *,
    account: MessagingAccount,
    thread_type: str,
    thread_id: str,
    social_profile: SocialProfile | None,
    known: dict[str, Conversation | None] | None = None,
) -> tuple[Conversation, bool]:
    """The open (not closed) conversation of a thread, created when there is none.

    A partial unique constraint allows one non-closed conversation per thread, so two workers that
    race here end up with the same row. Must run inside a transaction. `known`: the account's open
    conversations as conversations_open_locked read them earlier in this transaction, kept up to
    date here (a thread it does not cover is read from the database)."""
    if known is not None and thread_id in known:
        existing = known[thread_id]
    else:
        existing = _open_conversations_locked(account.pk).filter(thread_id=thread_id).first()
    if existing:
        if existing.state == ConversationState.WAITING:
            # The customer wrote again: back into its queue (the row is locked: the change cannot race).
            from .lifecycle import REOPEN, conversation_transition

            conversation_transition(conversation=existing, action=REOPEN)
        return existing, False
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                messaging_account=account,
                thread_type=thread_type,
                thread_id=thread_id,
                social_profile=social_profile if thread_type == ThreadType.USER else None,
                # Recorded in this transaction: routing is never lost (conversations_routing_sweep).
                routing_due_at=timezone.now(),
            )
    except IntegrityError:
        conversation = _open_conversations_locked(account.pk).get(thread_id=thread_id)
        created = False
    else:
        created = True
        transaction.on_commit(lambda: conversation_new_hook(conversation=conversation))
    if known is not None:
        known[thread_id] = conversation
    return conversation, created


def conversation_touch(*, conversation_id: int, at: datetime.datetime) -> None:
    """Move the conversation's last activity forward (never back: events arrive out of order)."""
    Conversation.objects.filter(
        Q(last_message_at__isnull=True) | Q(last_message_at__lt=at), pk=conversation_id
    ).update(last_message_at=at)


def conversation_close(*, conversation: Conversation, actor: AbstractBaseUser | None = None) -> Conversation:
    """Close a conversation (omnichannel.lifecycle: capacity and offers released); the customer's next
    message opens a new one. Raises LifecycleConflict when it is closed already."""
    from .lifecycle import CLOSE, conversation_transition

    return conversation_transition(conversation=conversation, action=CLOSE, actor=actor)


def _validate_outbound(*, kind: str, text: str, payload: dict, file: UploadedFile | None) -> None:
    if kind not in OUTBOUND_KINDS:
        raise ValidationError(
            {"kind": gettext("Messages of kind '%(kind)s' cannot be sent.") % {"kind": kind}}
        )
    if kind == MessageKind.TEXT and not text.strip():
        raise ValidationError({"text": gettext("A text message needs some text.")})
    if kind in {MessageKind.IMAGE, MessageKind.VIDEO, MessageKind.AUDIO, MessageKind.DOCUMENT} and not file:
        raise ValidationError(
            {"file": gettext("A %(kind)s message needs a file.") % {"kind": UPLOAD_KIND_WORDS[kind]}}
        )
    if kind == MessageKind.STICKER and not (payload.get("package_id") and payload.get("sticker_id")):
        raise ValidationError({"payload": gettext("A sticker needs package_id and sticker_id.")})
    if kind == MessageKind.LOCATION:
        missing = [k for k in ("title", "address", "latitude", "longitude") if payload.get(k) in (None, "")]
        if missing:
            raise ValidationError(
                {"payload": gettext("A location needs %(fields)s.") % {"fields": ", ".join(missing)}}
            )
    quick_replies = payload.get("quick_replies") or []
    if len(quick_replies) > QUICK_REPLY_MAX_ITEMS:
        raise ValidationError(
            {"payload": gettext("At most %(count)s quick replies.") % {"count": QUICK_REPLY_MAX_ITEMS}}
        )
    if any(not str(item.get("label", "")).strip() for item in quick_replies):
        raise ValidationError({"payload": gettext("Every quick reply needs a label.")})


def upload_check(*, kind: str, file: UploadedFile) -> str:
    """The content type an agent's file is stored with, once it passes the size cap
    (ATTACHMENT_UPLOAD_MAX_BYTES) and the allow-list of its kind (UPLOAD_TYPES). Raises a
    ValidationError on `file` that names the limit or the types allowed."""
    cap = settings.ATTACHMENT_UPLOAD_MAX_BYTES
    if file.size is not None and file.size > cap:
        raise ValidationError(
            {
                "file": gettext(
                    "The file is %(size)s bytes; a file sent to customers may be at most %(limit)s bytes."
                )
                % {"size": f"{file.size:,}", "limit": f"{cap:,}"}
            }
        )
    allowed = UPLOAD_TYPES.get(kind, {})
    listing = ", ".join(sorted({ext for extensions, _ in allowed.values() for ext in extensions}))
    refusal = ValidationError(
        {
            "file": gettext("A %(kind)s must be one of these types: %(types)s.")
            % {"kind": UPLOAD_KIND_WORDS.get(kind, kind), "types": listing}
        }
    )
    name = (getattr(file, "name", "") or "").lower()
    declared = content_type_base(getattr(file, "content_type", "") or "")
    if declared in UNDECLARED_TYPES:
        matches = [t for t, (extensions, _) in allowed.items() if name.endswith(extensions)]
    else:
        matches = [declared] if declared in allowed and name.endswith(allowed[declared][0]) else []
    if not matches:
        raise refusal
    content_type = matches[0]
    signatures = allowed[content_type][1]
    if signatures:
        file.seek(0)
        head = file.read(16)
        file.seek(0)
        if not head.startswith(signatures):
            raise ValidationError(
                {
                    "file": gettext("The file's content is not %(type)s, as its name or type says.")
                    % {"type": content_type}
                }
            )
    return content_type


def message_send(
    *,
    conversation: Conversation,
    author: AbstractBaseUser | None,
    kind: str = MessageKind.TEXT,
    text: str = "",
    payload: dict | None = None,
    file: UploadedFile | None = None,
) -> Message:
    """Store an outbound message (an agent's, or the system's when `author` is None) and queue its
    delivery through the conversation's channel once the transaction commits."""
    payload = dict(payload or {})
    _validate_outbound(kind=kind, text=text, payload=payload, file=file)
    content_type = upload_check(kind=kind, file=file) if file is not None else ""
    if file is not None:
        from routing.selectors import channel_instance_attachment_policy  # routing builds on the core

        policy = channel_instance_attachment_policy(messaging_account_id=conversation.messaging_account_id)
        if policy.agents_refusal:
            raise ValidationError({"file": policy.agents_refusal})
    if conversation.social_profile_id and not conversation.social_profile.is_reachable:
        raise ValidationError(gettext("The customer has blocked this account: messages cannot reach them."))
    if conversation.state == ConversationState.CLOSED:
        raise ValidationError(gettext("The conversation is closed."))
    now = timezone.now()
    with transaction.atomic():
        message = Message.objects.create(
            conversation=conversation,
            direction=Direction.OUTBOUND,
            kind=kind,
            text=text,
            payload=payload,
            author=author if author and author.is_authenticated else None,
            sent_at=now,
            delivery_state=DeliveryState.PENDING,
            delivery_due_at=now,
        )
        if file is not None:
            original = getattr(file, "name", "") or ""
            file_name = file_name_clean(original, fallback=f"{kind}-{message.uuid}")
            Attachment.objects.create(
                message=message,
                file=File(file, name=file_name),
                file_name=file_name,
                original_name=original_name_keep(original),
                content_type=content_type,
                size=file.size,
                state=AttachmentState.READY,
            )
        conversation_touch(conversation_id=conversation.pk, at=now)
        live.publish(
            live.MESSAGE,
            agent_id=conversation.assigned_agent_id,
            conversation_id=conversation.pk,
            message=message.pk,
        )
        _delivery_schedule_on_commit(message)
    return message


def _delivery_schedule_on_commit(message: Message) -> None:
    # robust: a broker outage is logged, not raised; the message is stored and due, so the sweep
    # (message_deliveries_sweep) queues it once the broker is back.
    adapter = channel_for(message.conversation.messaging_account)
    transaction.on_commit(lambda: adapter.message_delivery_schedule(message=message), robust=True)


def message_delivery_in_turn(*, message: Message) -> bool:
    """Whether the conversation's earlier outbound messages have all left (delivered or failed): a
    conversation's messages reach the customer in the order they were written (an agent's text and
    the file sent with it, two quick answers), whichever worker takes them. A message that is not in
    turn waits, pending: the delivery of the one before it queues it when it ends."""
    return not Message.objects.filter(
        conversation_id=message.conversation_id,
        direction=Direction.OUTBOUND,
        delivery_state__in=(DeliveryState.PENDING, DeliveryState.SENDING),
        pk__lt=message.pk,
    ).exists()


def message_next_delivery_schedule(*, conversation_id: int) -> None:
    """A delivery of the conversation ended (delivered or failed): queue, once the transaction commits,
    its next outbound message that waits its turn. One that waits for a retry's backoff is left to its
    own retry; a lost enqueue is the sweep's (message_deliveries_sweep)."""
    waiting = (
        Message.objects.select_related("conversation__messaging_account")
        .filter(
            conversation_id=conversation_id,
            direction=Direction.OUTBOUND,
            delivery_state=DeliveryState.PENDING,
        )
        .order_by("pk")
        .first()
    )
    if (
        waiting is not None
        and waiting.delivery_due_at is not None
        and waiting.delivery_due_at <= timezone.now()
    ):
        _delivery_schedule_on_commit(waiting)


def _retryable(*, now: datetime.datetime) -> Q:
    """Outbound messages an agent may send again: failed, or stuck (a pending one overdue, a sending
    one whose attempt has outlived DELIVERY_SENDING_TIMEOUT_SECONDS)."""
    return (
        Q(delivery_state=DeliveryState.FAILED)
        | Q(delivery_state=DeliveryState.PENDING, delivery_due_at__lt=now - _sweep_after())
        | Q(
            delivery_state=DeliveryState.SENDING,
            delivery_due_at__lt=now - datetime.timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT_SECONDS),
        )
    )


def _sweep_after() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.QUEUE_SWEEP_AFTER_SECONDS)


def message_retry(*, message: Message) -> Message:
    """Queue an outbound message again: a failed one, or one stuck pending or sending (same UUID:
    the channel will not send it twice)."""
    if message.direction != Direction.OUTBOUND:
        raise ValidationError(gettext("Only an outbound message can be sent again."))
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(_retryable(now=now), pk=message.pk).update(
            delivery_state=DeliveryState.PENDING,
            delivery_error="",
            delivery_attempts=0,
            # A failed message's reason was shown: sending it again is the agent's decision (a reply
            # in doubt goes as a push, with the retry key). A stuck one keeps its method, so that a
            # reply in doubt fails with that reason first.
            delivery_method=Case(
                When(delivery_state=DeliveryState.FAILED, then=Value("")), default=F("delivery_method")
            ),
            delivery_due_at=now,
        )
        if not updated:
            raise ValidationError(
                gettext(
                    "Only a failed message, or one stuck pending or sending for a while, can be sent "
                    "again: this one is delivered, or its delivery is under way."
                )
            )
        live.message_changed(message_id=message.pk, conversation_id=message.conversation_id)
        _delivery_schedule_on_commit(message)
    message.refresh_from_db()
    return message


def message_deliveries_sweep(*, now: datetime.datetime | None = None) -> int:
    """Queue again the outbound deliveries whose enqueue or worker was lost: pending and overdue by
    QUEUE_SWEEP_AFTER_SECONDS, or sending for longer than DELIVERY_SENDING_TIMEOUT_SECONDS (a stuck
    attempt goes back to pending; the channel decides whether a second attempt is safe). Returns
    how many were queued."""
    now = now or timezone.now()
    stuck_since = now - datetime.timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT_SECONDS)
    Message.objects.filter(delivery_state=DeliveryState.SENDING, delivery_due_at__lt=stuck_since).update(
        delivery_state=DeliveryState.PENDING, delivery_due_at=now - _sweep_after()
    )
    overdue = list(
        Message.objects.select_related("conversation__messaging_account")
        .filter(delivery_state=DeliveryState.PENDING, delivery_due_at__lte=now - _sweep_after())
        .filter(direction=Direction.OUTBOUND)
        .order_by("delivery_due_at", "pk")
    )
    for message in overdue:
        Message.objects.filter(pk=message.pk, delivery_state=DeliveryState.PENDING).update(
            delivery_due_at=now
        )
        try:
            channel_for(message.conversation.messaging_account).message_delivery_schedule(message=message)
        except Exception:
            logger.exception("Delivery not queued (the next sweep will) message=%s", message.pk)
            break
    return len(overdue)


def conversation_mark_read(*, conversation: Conversation) -> None:
    """Tell the customer, through the channel, that their messages have been read."""
    adapter = channel_for(conversation.messaging_account)
    transaction.on_commit(lambda: adapter.conversation_mark_read_schedule(conversation_id=conversation.pk))


def conversation_typing(*, conversation: Conversation, seconds: int = 20) -> None:
    """Show the customer that an agent is typing (for about `seconds`, where the channel can)."""
    adapter = channel_for(conversation.messaging_account)
    transaction.on_commit(
        lambda: adapter.typing_indicator_schedule(conversation_id=conversation.pk, seconds=seconds)
    )


# The conversation page calls typing at most every ~10 s; the server takes one call per conversation
# in this many seconds, whatever the number of pages or agents (LINE's animation lasts longer anyway).
TYPING_MIN_INTERVAL_SECONDS = 5


def conversation_typing_throttled(*, conversation: Conversation, seconds: int = 20) -> bool:
    """conversation_typing, at most once per TYPING_MIN_INTERVAL_SECONDS per conversation (counted
    in the shared cache, so across web processes); False when this call was refused."""
    if not cache.add(f"omnichannel:typing:{conversation.pk}", 1, timeout=TYPING_MIN_INTERVAL_SECONDS):
        return False
    try:
        conversation_typing(conversation=conversation, seconds=seconds)
    except Exception:  # the broker is down: a lost typing indicator is harmless, a failed page is not
        logger.exception("Typing indicator not queued conversation=%s", conversation.pk)
        return False
    return True


def conversation_read_by_agent(*, conversation: Conversation, agent: AbstractBaseUser) -> bool:
    """The agent a conversation is assigned to opened it: what the customer wrote is read. Moves
    `agent_read_at` forward (the inbox's unread counts; their inbox pages hear of it) and tells the
    customer, through the channel, that their messages were read. Nothing for anyone else, nor when
    nothing was written since the last time. Returns whether anything was unread."""
    if agent.pk is None or conversation.assigned_agent_id != agent.pk:
        return False
    now = timezone.now()
    with transaction.atomic():
        updated = (
            Conversation.objects.filter(
                pk=conversation.pk, assigned_agent_id=agent.pk, last_message_at__isnull=False
            )
            .filter(Q(agent_read_at__isnull=True) | Q(agent_read_at__lt=F("last_message_at")))
            .update(agent_read_at=now)
        )
        if not updated:
            return False
        conversation.agent_read_at = now
        live.publish(live.CONVERSATION, agent_id=agent.pk, read=conversation.pk)
        # As conversation_mark_read, but robust: a broker outage must not fail the page that opened
        # it (a lost read mark is harmless: the next opening sends one).
        adapter = channel_for(conversation.messaging_account)
        transaction.on_commit(
            lambda: adapter.conversation_mark_read_schedule(conversation_id=conversation.pk), robust=True
        )
    return True


def sequence_split(text: str, size: int) -> Sequence[str]:
    """Split text in pieces of at most `size` characters, preferring line and word boundaries."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = rest.rfind("\n", 0, size)
        if cut < size // 2:
            cut = rest.rfind(" ", 0, size)
        if cut < size // 2:
            cut = size
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip("\n") if rest[cut : cut + 1] == "\n" else rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces
