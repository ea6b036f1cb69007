"""Webhook intake: verify the signature on the raw body, keep every event once, enqueue after commit.

The view answers as soon as the events are in the database; everything else happens in workers."""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import logging
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass

from django.conf import settings
from django.db import DataError, transaction
from django.db.models import Q
from django.utils import timezone

from omnichannel.models import ChannelType, MessagingAccount

from ..models import EventState, LineWebhookEvent, LineWebhookRejectedBody
from .event_store import (
    UnreadableBody,
    event_row,
    events_insert,
    processing_enqueue,
    webhook_events,
)

logger = logging.getLogger(__name__)

# Events swept are marked and queued this many at a time (one UPDATE, a few tasks).
SWEEP_CHUNK = 1000
# Rows of one INSERT: about 20 parameters each, far below SQLite's 32,766 and PostgreSQL's 65,535.
INSERT_ROWS_MAX = 500


class WebhookRejected(Exception):
    """A request the webhook refuses; `status` and `reason` go back to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookReceipt:
    stored: int
    duplicates: int


# Every webhook request needs its account's secret. A few seconds of in-process caching takes the
# query and the decryption off the hot path; account changes clear this process's entry at once
# and reach the other web processes within LINE_WEBHOOK_ACCOUNT_CACHE_SECONDS.
_account_cache: dict[uuid.UUID, tuple[float, MessagingAccount]] = {}


def webhook_account_cache_clear(*, account_id: uuid.UUID | None = None) -> None:
    if account_id is None:
        _account_cache.clear()
    else:
        _account_cache.pop(account_id, None)


def account_for_webhook(*, account_id: str) -> MessagingAccount:
    """The enabled LINE account behind a webhook path, with its credentials (one query, cached)."""
    try:
        account_uuid = uuid.UUID(str(account_id))
    except ValueError:
        raise WebhookRejected(404, "unknown account") from None
    now = time.monotonic()
    cached = _account_cache.get(account_uuid)
    if cached is not None and cached[0] > now:
        return cached[1]
    account = (
        MessagingAccount.objects.select_related("line")
        .filter(pk=account_uuid, channel_type=ChannelType.LINE, enabled=True, line__isnull=False)
        .first()
    )
    if account is None:
        _account_cache.pop(account_uuid, None)
        raise WebhookRejected(404, "unknown or disabled account")
    account.line.channel_secret  # noqa: B018 - decrypted once, here, not on every request
    _account_cache[account_uuid] = (now + settings.LINE_WEBHOOK_ACCOUNT_CACHE_SECONDS, account)
    return account


def signature_is_valid(*, body: bytes, signature: str, channel_secret: str) -> bool:
    """LINE's X-Line-Signature: the base64 HMAC-SHA256 of the raw body with the channel secret.
    Computed on the bytes as received (whatever they hold), compared in constant time as bytes (a
    header may carry any character)."""
    expected = b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def line_webhook_receive(*, account: MessagingAccount, body: bytes, signature: str | None) -> WebhookReceipt:
    """Verify one webhook delivery and keep each of its events once (one INSERT per 500 events, in
    one transaction), then queue the new ones for processing after the commit (a lost enqueue is
    the sweep's: the events are stored).

    Raises WebhookRejected for a missing or wrong signature, or for a signed body that holds no
    readable events (that body is kept as rejected); DatabaseError when the database cannot be
    reached (nothing stored: LINE's redelivery brings the events again)."""
    if not signature:
        logger.warning("LINE webhook without signature account=%s", account.pk)
        raise WebhookRejected(400, "missing x-line-signature header")
    if not signature_is_valid(body=body, signature=signature, channel_secret=account.line.channel_secret):
        logger.warning("LINE webhook with a wrong signature account=%s", account.pk)
        raise WebhookRejected(400, "invalid signature")
    try:
        events = webhook_events(body)
    except UnreadableBody as unreadable:
        _rejected_body_keep(account=account, body=body, reason=str(unreadable))
        raise WebhookRejected(400, f"unreadable body: {unreadable}") from None
    rows = [event_row(account_id=account.pk, signed=signed) for signed in events]
    try:
        with transaction.atomic():
            stored: dict[str, int] = {}
            for start in range(0, len(rows), INSERT_ROWS_MAX):  # within the database's parameter limit
                stored |= events_insert(rows[start : start + INSERT_ROWS_MAX])
            if stored:
                transaction.on_commit(functools.partial(processing_enqueue, stored.values()), robust=True)
    except DataError as refused:
        # Not expected (webhook_events makes every event storable), but a redelivery could not cure
        # it either: keep the body for inspection rather than have LINE retry for ever.
        _rejected_body_keep(account=account, body=body, reason=f"the database refused the events: {refused}")
        raise WebhookRejected(400, "events the database refuses; body kept for inspection") from None
    duplicates = len(rows) - len(stored)
    if duplicates:
        logger.info("LINE webhook duplicates ignored account=%s count=%s", account.pk, duplicates)
    return WebhookReceipt(stored=len(stored), duplicates=duplicates)


def _rejected_body_keep(*, account: MessagingAccount, body: bytes, reason: str) -> None:
    # Any bytes, as text a database takes: invalid UTF-8 and NULs written as escapes.
    text = body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    LineWebhookRejectedBody.objects.create(messaging_account=account, body=text, reason=reason[:500])
    logger.warning("LINE webhook body kept as rejected account=%s reason=%s", account.pk, reason)


def line_events_sweep(*, now: datetime.datetime | None = None) -> int:
    """Queue the events still pending QUEUE_SWEEP_AFTER_SECONDS after they were received or last
    queued: their enqueue was lost (the broker was down, the process died) or their task was. All
    of them at once, in tasks of PROCESS_BATCH_SIZE: after a broker outage the backlog drains at
    processing speed. Returns the count."""
    now = now or timezone.now()
    overdue = now - datetime.timedelta(seconds=settings.QUEUE_SWEEP_AFTER_SECONDS)
    pending = list(
        LineWebhookEvent.objects.filter(state=EventState.PENDING, received_at__lt=overdue)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=overdue))
        .order_by("received_at")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(pending), SWEEP_CHUNK):
        chunk = pending[start : start + SWEEP_CHUNK]
        line_events_mark_enqueued(event_pks=chunk)
        if not processing_enqueue(chunk):
            break  # the broker is still down: the next sweep tries again
    return len(pending)


def line_events_mark_enqueued(*, event_pks: list[int]) -> None:
    """Record that these events were queued again now: the sweep leaves them alone for a while."""
    LineWebhookEvent.objects.filter(pk__in=event_pks).update(enqueued_at=timezone.now())


def line_events_process_again(*, event_pks: list[int]) -> int:
    """Queue failed events for processing again (an administrator's decision, say after a fix):
    they go back to pending with their tries counted from zero. Returns how many."""
    with transaction.atomic():
        failed = list(
            LineWebhookEvent.objects.select_for_update()
            .filter(pk__in=event_pks, state=EventState.FAILED)
            .values_list("pk", flat=True)
        )
        LineWebhookEvent.objects.filter(pk__in=failed).update(
            state=EventState.PENDING, attempts=0, enqueued_at=timezone.now()
        )
        transaction.on_commit(functools.partial(processing_enqueue, failed), robust=True)
    return len(failed)
