"""LINE messaging accounts: create, update, check credentials."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, Value
from django.db.models.functions import Lower
from django.utils import timezone

from omnichannel.models import ChannelType, MessagingAccount

from ..client import LineApiError, line_client, line_errors
from ..models import LineAccount
from .intake import webhook_account_cache_clear

logger = logging.getLogger(__name__)

NAME_TAKEN = "A messaging account with this name exists already (names are compared without regard to case)."
CHANNEL_ID_TAKEN = "This LINE channel is connected already."
CHANNEL_SECRET_INVALID = (
    "The Channel secret is 32 hexadecimal characters (digits and the letters a to f), as the LINE "
    "console shows it under Basic settings."
)
# LINE issues channel secrets as 32 lowercase hexadecimal characters. The secret is the HMAC key of every
# webhook signature, byte for byte, so a copy with another case (or anything else) could verify nothing.
# The forms and the API serializer check it with this same validator, for an early field error.
channel_secret_validator = RegexValidator(r"^[0-9a-f]{32}\Z", CHANNEL_SECRET_INVALID, code="invalid")
channel_id_validator = RegexValidator(
    r"^[0-9]+\Z", "The Channel ID is the number shown in the console's Basic settings.", code="invalid"
)


def messaging_account_name_taken(*, name: str, exclude_pk: UUID | str | None = None) -> bool:
    """Whether another messaging account has this name, compared as the database's unique constraint on
    Lower("name") compares it (lower() of the database on both sides)."""
    accounts = MessagingAccount.objects.alias(name_lower=Lower("name")).filter(name_lower=Lower(Value(name)))
    if exclude_pk is not None:
        accounts = accounts.exclude(pk=exclude_pk)
    return accounts.exists()


def _validate_credentials(
    *, channel_id: str, channel_secret: str | None, channel_access_token: str | None
) -> None:
    errors = {}
    for field, validator, value in (
        ("channel_id", channel_id_validator, channel_id),
        ("channel_secret", channel_secret_validator, channel_secret),
    ):
        try:
            if value is not None:
                validator(value)
        except ValidationError as error:
            errors[field] = error.messages[0]
    if channel_access_token is not None and len(channel_access_token.strip()) < 20:
        errors["channel_access_token"] = (
            "Paste the long-lived channel access token (console: Messaging API tab)."
        )
    if errors:
        raise ValidationError(errors)


def _refuse_taken(*, name: str | None, channel_id: str, exclude_pk: UUID | None = None) -> None:
    """Raise the ValidationError of a name or a LINE channel another account holds."""
    errors = {}
    if name is not None and messaging_account_name_taken(name=name, exclude_pk=exclude_pk):
        errors["name"] = NAME_TAKEN
    channel_holders = LineAccount.objects.filter(channel_id=channel_id)
    if exclude_pk is not None:
        channel_holders = channel_holders.exclude(pk=exclude_pk)
    if channel_holders.exists():
        errors["channel_id"] = CHANNEL_ID_TAKEN
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
    _refuse_taken(name=name, channel_id=channel_id)
    try:
        # A savepoint: a concurrent request that took the name or the channel in the meantime loses on
        # the database's unique constraints; the error is re-read and told like the checks above.
        with transaction.atomic():
            account = MessagingAccount.objects.create(
                name=name, channel_type=ChannelType.LINE, enabled=enabled
            )
            LineAccount.objects.create(
                messaging_account=account,
                channel_id=channel_id,
                channel_secret=channel_secret,
                channel_access_token=channel_access_token.strip(),
            )
    except IntegrityError:
        _refuse_taken(name=name, channel_id=channel_id)
        raise
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
    _refuse_taken(name=name, channel_id=new_channel_id, exclude_pk=account.pk)
    account_fields = []
    if name is not None:
        account.name = name
        account_fields.append("name")
    if enabled is not None:
        account.enabled = enabled
        account_fields.append("enabled")
    line.channel_id = new_channel_id
    line_fields = ["channel_id"]
    if channel_secret:
        line.channel_secret = channel_secret
        line_fields.append("channel_secret")
    if channel_access_token:
        line.channel_access_token = channel_access_token
        line_fields.append("channel_access_token")
    try:
        with transaction.atomic():
            if account_fields:
                account.save(update_fields=[*account_fields, "updated_at"])
            line.save(update_fields=line_fields)
    except IntegrityError:
        _refuse_taken(name=name, channel_id=new_channel_id, exclude_pk=account.pk)
        raise
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


class AccountInUse(Exception):
    """An account a channel instance still uses: the instance is removed first (admin > Routing)."""


@transaction.atomic
def line_account_delete(*, account: MessagingAccount) -> None:
    """Delete an account with its conversations, profiles and events. An account attached to a
    workstream through a channel instance is refused (AccountInUse): the instance goes first."""
    account_id = account.pk
    try:
        account.delete()
    except ProtectedError:
        raise AccountInUse(
            "This account is attached to a workstream by a channel instance: remove the channel "
            "instance first (admin > Routing > Channel instances)."
        ) from None
    webhook_account_cache_clear(account_id=account_id)
    transaction.on_commit(lambda: webhook_account_cache_clear(account_id=account_id))
    logger.info("LINE messaging account deleted account=%s", account.pk)
