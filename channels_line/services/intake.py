"""Webhook intake: verify the signature on the raw body, keep every event once, enqueue after commit.

The view answers as soon as the events are in the database; everything else happens in workers."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from linebot.v3 import SignatureValidator

from omnichannel.models import ChannelType, MessagingAccount

from ..models import EventState, LineWebhookEvent, LineWebhookRejectedBody
from .event_store import processing_enqueue, webhook_events
from .event_writer import events_store_webhook
from .intake_load import webhook_in_flight

logger = logging.getLogger(__name__)


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
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # The SDK works on text; a body that is not UTF-8 is checked on its bytes.
        expected = b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()
        return hmac.compare_digest(expected, signature)
    return SignatureValidator(channel_secret).validate(text, signature)


def line_webhook_receive(*, account: MessagingAccount, body: bytes, signature: str | None) -> WebhookReceipt:
    """Verify and store one webhook delivery; each new event is queued for processing once stored.

    Raises WebhookRejected for a missing or wrong signature or an unreadable body (the latter kept),
    TimeoutError or DatabaseError when the events could not be stored (nothing acknowledged)."""
    if not signature:
        logger.warning("LINE webhook without signature account=%s", account.pk)
        raise WebhookRejected(400, "missing x-line-signature header")
    if not signature_is_valid(body=body, signature=signature, channel_secret=account.line.channel_secret):
        logger.warning("LINE webhook with a wrong signature account=%s", account.pk)
        raise WebhookRejected(400, "invalid signature")
    # Only signed requests count: requests that anyone can send must not slow processing down.
    with webhook_in_flight():  # processing on this host gives way while many are (intake_load.py)
        return _webhook_store(account=account, body=body)


def _webhook_store(*, account: MessagingAccount, body: bytes) -> WebhookReceipt:
    try:
        events = webhook_events(body)
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"malformed body: {exc.__class__.__name__}: {exc}"[:500]
        LineWebhookRejectedBody.objects.create(
            messaging_account=account, body=body.decode("utf-8", errors="replace"), reason=reason
        )
        logger.warning("LINE webhook body kept as rejected account=%s reason=%s", account.pk, reason)
        raise WebhookRejected(400, "malformed JSON body") from exc

    results = events_store_webhook(account_id=account.pk, body=body, events=events)
    stored = sum(1 for pk in results if pk)
    duplicates = len(results) - stored
    if duplicates:
        logger.info("LINE webhook duplicates ignored account=%s count=%s", account.pk, duplicates)
    return WebhookReceipt(stored=stored, duplicates=duplicates)


def line_events_sweep(
    *,
    older_than: datetime.timedelta = datetime.timedelta(minutes=2),
    resweep_after: datetime.timedelta = datetime.timedelta(minutes=10),
    limit: int = 500,
) -> int:
    """Enqueue events still pending after `older_than` (their first enqueue was lost, e.g. the broker
    was down); an event swept once waits `resweep_after` before the next sweep. Returns the count."""
    now = timezone.now()
    pending = list(
        LineWebhookEvent.objects.filter(state=EventState.PENDING, received_at__lt=now - older_than)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - resweep_after))
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )
    line_events_mark_enqueued(event_pks=pending)
    processing_enqueue(pending)
    return len(pending)


def line_events_mark_enqueued(*, event_pks: list[int]) -> None:
    """Record that these events were queued again now: the sweep leaves them alone for a while."""
    LineWebhookEvent.objects.filter(pk__in=event_pks).update(enqueued_at=timezone.now())
