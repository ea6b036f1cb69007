"""LINE messaging accounts: create, update, check credentials."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from omnichannel.models import ChannelType, MessagingAccount

from ..client import LineApiError, line_client, line_errors
from ..models import LineAccount
from .intake import webhook_account_cache_clear

logger = logging.getLogger(__name__)


def _validate_credentials(
    *, channel_id: str, channel_secret: str | None, channel_access_token: str | None
) -> None:
    errors = {}
    if not channel_id.isdigit():
        errors["channel_id"] = "The Channel ID is the number shown in the console's Basic settings."
    if channel_secret is not None and (len(channel_secret) != 32 or not channel_secret.isalnum()):
        errors["channel_secret"] = "The Channel secret is 32 letters and digits (console: Basic settings)."
    if channel_access_token is not None and len(channel_access_token.strip()) < 20:
        errors["channel_access_token"] = (
            "Paste the long-lived channel access token (console: Messaging API tab)."
        )
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def line_account_create(
    *, name: str, channel_id: str, channel_secret: str, channel_access_token: str, enabled: bool = True
) -> MessagingAccount:
    """Create a messaging account of type LINE with its (encrypted) credentials."""
    channel_id = channel_id.strip()
    channel_secret = channel_secret.strip()
    _validate_credentials(
        channel_id=channel_id, channel_secret=channel_secret, channel_access_token=channel_access_token
    )
    if MessagingAccount.objects.filter(name=name).exists():
        raise ValidationError({"name": "A messaging account with this name exists already."})
    if LineAccount.objects.filter(channel_id=channel_id).exists():
        raise ValidationError({"channel_id": "This LINE channel is connected already."})
    account = MessagingAccount.objects.create(name=name, channel_type=ChannelType.LINE, enabled=enabled)
    LineAccount.objects.create(
        messaging_account=account,
        channel_id=channel_id,
        channel_secret=channel_secret,
        channel_access_token=channel_access_token.strip(),
    )
    logger.info("LINE messaging account created account=%s channel_id=%s", account.pk, channel_id)
    return account


@transaction.atomic
def line_account_update(
    *,
    account: MessagingAccount,
    name: str | None = None,
    enabled: bool | None = None,
    channel_id: str | None = None,
    channel_secret: str | None = None,
    channel_access_token: str | None = None,
) -> MessagingAccount:
    """Change what is given; secrets left as None (or empty) keep their stored value."""
    line = account.line
    channel_secret = (channel_secret or "").strip() or None
    channel_access_token = (channel_access_token or "").strip() or None
    new_channel_id = (channel_id or line.channel_id).strip()
    _validate_credentials(
        channel_id=new_channel_id, channel_secret=channel_secret, channel_access_token=channel_access_token
    )
    if name is not None and MessagingAccount.objects.filter(name=name).exclude(pk=account.pk).exists():
        raise ValidationError({"name": "A messaging account with this name exists already."})
    if LineAccount.objects.filter(channel_id=new_channel_id).exclude(pk=account.pk).exists():
        raise ValidationError({"channel_id": "This LINE channel is connected already."})
    account_fields = []
    if name is not None:
        account.name = name
        account_fields.append("name")
    if enabled is not None:
        account.enabled = enabled
        account_fields.append("enabled")
    if account_fields:
        account.save(update_fields=[*account_fields, "updated_at"])
    line.channel_id = new_channel_id
    line_fields = ["channel_id"]
    if channel_secret:
        line.channel_secret = channel_secret
        line_fields.append("channel_secret")
    if channel_access_token:
        line.channel_access_token = channel_access_token
        line_fields.append("channel_access_token")
    line.save(update_fields=line_fields)
    # Now, and again after commit (a request in between may have cached the old values).
    webhook_account_cache_clear(account_id=account.pk)
    transaction.on_commit(lambda: webhook_account_cache_clear(account_id=account.pk))
    return account


@dataclass(frozen=True)
class CredentialsCheck:
    ok: bool
    message: str


def line_account_check_credentials(*, account: MessagingAccount) -> CredentialsCheck:
    """Call LINE's bot info with the account's token; store and return the outcome in plain words."""
    line = account.line
    try:
        with line_client(line.channel_access_token) as client, line_errors():
            info = client.api.get_bot_info(_request_timeout=client.timeout)
    except LineApiError as error:
        verdict = "LINE refused the credentials" if error.status else "The check could not be made"
        result = CredentialsCheck(False, f"{verdict}: {error}")
        logger.warning("LINE credentials check failed account=%s error=%s", account.pk, error)
    else:
        line.bot_user_id = info.user_id or ""
        line.bot_basic_id = info.basic_id or ""
        line.bot_display_name = info.display_name or ""
        result = CredentialsCheck(True, f"Connected to LINE bot “{info.display_name}” ({info.basic_id}).")
    line.last_checked_at = timezone.now()
    line.last_check_ok = result.ok
    line.last_check_message = result.message
    line.save(
        update_fields=[
            "bot_user_id",
            "bot_basic_id",
            "bot_display_name",
            "last_checked_at",
            "last_check_ok",
            "last_check_message",
        ]
    )
    return result


@transaction.atomic
def line_account_delete(*, account: MessagingAccount) -> None:
    """Delete an account with its conversations, profiles and events (channel instances go first:
    routing issue)."""
    account_id = account.pk
    account.delete()
    webhook_account_cache_clear(account_id=account_id)
    transaction.on_commit(lambda: webhook_account_cache_clear(account_id=account_id))
    logger.info("LINE messaging account deleted account=%s", account.pk)
