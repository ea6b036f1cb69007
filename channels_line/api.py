"""REST API of LINE messaging accounts: /api/v1/messaging-accounts/.

The secret and the access token are write-only: required on create, optional on update (omitted or
empty = unchanged), never in a response. Writes go through channels_line.services."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from omnichannel.models import ChannelType, MessagingAccount

from .services.accounts import (
    AccountInUse,
    channel_id_validator,
    channel_secret_validator,
    line_account_check_credentials,
    line_account_create,
    line_account_delete,
    line_account_update,
)

logger = logging.getLogger(__name__)


class AccountInUseConflict(exceptions.APIException):
    status_code = 409
    default_code = "account_in_use"


def service_errors(error: DjangoValidationError) -> serializers.ValidationError:
    """A service's ValidationError as DRF's: field errors by field, the rest under non_field_errors."""
    return serializers.ValidationError(serializers.as_serializer_error(error))


class MessagingAccountPermissions(permissions.DjangoModelPermissions):
    """Model permissions, reading included, on the account and on its LINE details.

    Writing needs both omnichannel.<action>_messagingaccount and channels_line.<action>_lineaccount, which
    only Administrators hold: Supervisors have omnichannel.* but only view LINE details, Agents only view."""

    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s", "channels_line.add_lineaccount"],
        "PUT": ["%(app_label)s.change_%(model_name)s", "channels_line.change_lineaccount"],
        "PATCH": ["%(app_label)s.change_%(model_name)s", "channels_line.change_lineaccount"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s", "channels_line.delete_lineaccount"],
    }


class CredentialsCheckPermissions(MessagingAccountPermissions):
    """Checking credentials records its outcome on the account: a change, though it is a POST."""

    perms_map = {
        **MessagingAccountPermissions.perms_map,
        "POST": MessagingAccountPermissions.perms_map["PUT"],
    }


class MessagingAccountSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(max_length=100)
    channel_type = serializers.ChoiceField(choices=ChannelType.choices, default=ChannelType.LINE)
    enabled = serializers.BooleanField(default=True)
    channel_id = serializers.CharField(
        source="line.channel_id", max_length=20, validators=[channel_id_validator]
    )
    channel_secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        validators=[channel_secret_validator],
        help_text="32 hexadecimal characters (console: Basic settings). Required on create; on update, "
        "omitted or empty keeps it.",
    )
    channel_access_token = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="Long-lived token (console: Messaging API tab). Required on create; on update, omitted "
        "or empty keeps it.",
    )
    callback_url = serializers.CharField(
        source="line.callback_url",
        read_only=True,
        help_text="Paste it in the LINE console as the Webhook URL.",
    )
    credentials_checked_at = serializers.DateTimeField(source="line.last_checked_at", read_only=True)
    credentials_ok = serializers.BooleanField(source="line.last_check_ok", read_only=True, allow_null=True)
    credentials_message = serializers.CharField(source="line.last_check_message", read_only=True)

    def validate_channel_type(self, value: str) -> str:
        if self.instance is not None and value != self.instance.channel_type:
            raise serializers.ValidationError("The channel type of an account cannot be changed.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None:
            missing = {
                field: ["This field is required."]
                for field in ("channel_secret", "channel_access_token")
                if not attrs.get(field)
            }
            if missing:
                raise serializers.ValidationError(missing)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> MessagingAccount:
        try:
            return line_account_create(
                name=validated_data["name"],
                enabled=validated_data.get("enabled", True),
                channel_id=validated_data["line"]["channel_id"],
                channel_secret=validated_data["channel_secret"],
                channel_access_token=validated_data["channel_access_token"],
            )
        except DjangoValidationError as error:
            raise service_errors(error) from error

    def update(self, instance: MessagingAccount, validated_data: dict[str, Any]) -> MessagingAccount:
        try:
            account = line_account_update(
                account=instance,
                name=validated_data.get("name"),
                enabled=validated_data.get("enabled"),
                channel_id=validated_data.get("line", {}).get("channel_id"),
                channel_secret=validated_data.get("channel_secret") or None,
                channel_access_token=validated_data.get("channel_access_token") or None,
            )
        except DjangoValidationError as error:
            raise service_errors(error) from error
        return account


@extend_schema_view(
    list=extend_schema(summary="List messaging accounts"),
    create=extend_schema(summary="Create a LINE messaging account (Administrators)"),
    retrieve=extend_schema(summary="Get a messaging account"),
    update=extend_schema(summary="Replace a messaging account's settings (Administrators)"),
    partial_update=extend_schema(summary="Change some of a messaging account's settings (Administrators)"),
    destroy=extend_schema(summary="Delete a messaging account with its conversations (Administrators)"),
)
class MessagingAccountViewSet(viewsets.ModelViewSet):
    serializer_class = MessagingAccountSerializer
    permission_classes = [MessagingAccountPermissions]
    queryset = MessagingAccount.objects.filter(channel_type=ChannelType.LINE, line__isnull=False)

    def get_queryset(self) -> QuerySet[MessagingAccount]:
        return super().get_queryset().select_related("line").order_by("name", "id")

    def perform_destroy(self, instance: MessagingAccount) -> None:
        try:
            line_account_delete(account=instance)
        except AccountInUse as in_use:
            raise AccountInUseConflict(str(in_use)) from None

    @extend_schema(
        summary="Check the credentials with LINE (Administrators)",
        description="Calls LINE's bot info with the account's access token and records the outcome in "
        "`credentials_ok`, `credentials_message` and `credentials_checked_at`. Answers 200 whether LINE "
        "accepted the credentials or not: read `credentials_ok`.",
        request=None,
        responses=MessagingAccountSerializer,
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="check-credentials",
        permission_classes=[CredentialsCheckPermissions],
    )
    def check_credentials(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        # The service records the outcome on account.line, which the response reads.
        line_account_check_credentials(account=account)
        return Response(self.get_serializer(account).data)
