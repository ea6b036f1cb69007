"""How much of each LINE account's monthly message quota is used (the supervisors' dashboard).

LINE counts push messages against a monthly limit (replies are free): `GET /v2/bot/message/quota`
gives the limit ("limited" with a value, or "none") and `GET /v2/bot/message/quota/consumption` the
messages sent this month. The answer is kept in Django's cache for QUOTA_CACHE_SECONDS, shared by
every web process: dashboards re-render on every live change, and LINE is asked again only once the
cached answer is older than that. A failed call is kept too (for a shorter time, so that a broken
token or an outage is not asked again by every refresh of every open dashboard) and shown as
"unknown" with LINE's reason.

No model: the number is LINE's, a few minutes old at most, and worth nothing once stale."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from ..client import LineApiError, line_client, line_errors
from ..models import LineAccount

logger = logging.getLogger(__name__)

QUOTA_CACHE_SECONDS = 300
QUOTA_FAILURE_CACHE_SECONDS = 60
# From this share of the limit on, the dashboard warns.
QUOTA_WARNING_RATIO = 0.8
_CACHE_KEY = "line-message-quota:{account_id}"


@dataclass(frozen=True)
class MessageQuota:
    """One account's quota as LINE answered it at `checked_at`; `error` set when it could not say."""

    account_id: str
    account_name: str
    checked_at: datetime
    # None: no limit ("none"), or unknown when `error` is set.
    limit: int | None = None
    used: int | None = None
    error: str = ""

    @property
    def known(self) -> bool:
        return not self.error

    @property
    def ratio(self) -> float | None:
        if self.error or self.limit is None or self.used is None:
            return None
        if self.limit == 0:
            return 1.0
        return self.used / self.limit

    @property
    def percent(self) -> int | None:
        ratio = self.ratio
        return None if ratio is None else round(ratio * 100)

    @property
    def near_limit(self) -> bool:
        ratio = self.ratio
        return ratio is not None and ratio >= QUOTA_WARNING_RATIO


def _cache_key(account_id: object) -> str:
    return _CACHE_KEY.format(account_id=account_id)


def message_quota_fetch(*, line_account: LineAccount) -> MessageQuota:
    """Ask LINE for one account's limit and this month's consumption (two calls), keep the answer
    (or the failure) in the cache, and return it."""
    account = line_account.messaging_account
    now = timezone.now()
    try:
        with line_client(line_account.channel_access_token) as client, line_errors():
            limit = client.api.get_message_quota(_request_timeout=client.timeout)
            consumption = client.api.get_message_quota_consumption(_request_timeout=client.timeout)
        quota = MessageQuota(
            account_id=str(account.pk),
            account_name=account.name,
            checked_at=now,
            limit=limit.value if limit.type == "limited" else None,
            used=consumption.total_usage,
        )
        timeout = QUOTA_CACHE_SECONDS
    except LineApiError as error:
        logger.warning("LINE message quota unknown account=%s: %s", account.pk, error)
        quota = MessageQuota(
            account_id=str(account.pk), account_name=account.name, checked_at=now, error=str(error)
        )
        timeout = QUOTA_FAILURE_CACHE_SECONDS
    cache.set(_cache_key(account.pk), asdict(quota), timeout)
    return quota


def message_quotas(*, refresh: bool = False) -> list[MessageQuota]:
    """The quota of every enabled LINE account, by name: from the cache while it is fresh (no call to
    LINE), else fetched now (`refresh` fetches every one). One query for the accounts."""
    line_accounts = list(
        LineAccount.objects.select_related("messaging_account")
        .filter(messaging_account__enabled=True)
        .order_by("messaging_account__name", "messaging_account_id")
    )
    cached: dict[str, dict[str, Any]] = (
        {} if refresh else cache.get_many([_cache_key(line.pk) for line in line_accounts])
    )
    quotas = []
    for line in line_accounts:
        entry = cached.get(_cache_key(line.pk))
        if entry is not None:
            # The name may have changed since; the numbers are LINE's.
            quotas.append(MessageQuota(**{**entry, "account_name": line.messaging_account.name}))
        else:
            quotas.append(message_quota_fetch(line_account=line))
    return quotas
