"""REST API of conversations and their messages: /api/v1/conversations/ and
/api/v1/conversations/{id}/messages/. Reads come from omnichannel.selectors (a fixed number of queries),
writes from omnichannel.services."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from . import selectors, services
from .files import attachment_view_url
from .models import (
    Attachment,
    AttachmentState,
    Contact,
    Conversation,
    ConversationState,
    Message,
    MessageKind,
    SocialProfile,
    ThreadType,
)


def service_errors(error: DjangoValidationError) -> serializers.ValidationError:
    """A service's ValidationError as DRF's: field errors by field, the rest under non_field_errors."""
    return serializers.ValidationError(serializers.as_serializer_error(error))


class ModelPermissionsWithView(permissions.DjangoModelPermissions):
    """DjangoModelPermissions that also require the view permission to read."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


# --- Conversations --------------------------------------------------------------------------------


class ContactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ["id", "name", "email", "phone"]
        read_only_fields = fields


class CustomerSerializer(serializers.ModelSerializer):
    """The customer of a one-to-one conversation: their social profile, and their contact if linked."""

    contact = ContactSerializer(read_only=True, allow_null=True)

    class Meta:
        model = SocialProfile
        fields = ["id", "external_id", "display_name", "picture_url", "language", "is_reachable", "contact"]
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    messaging_account_name = serializers.CharField(source="messaging_account.name", read_only=True)
    customer = CustomerSerializer(
        source="social_profile", read_only=True, allow_null=True, help_text="Null for group and room threads."
    )
    last_activity_at = serializers.DateTimeField(
        read_only=True, help_text="The last message's time, or the creation time before any message."
    )

    class Meta:
        model = Conversation
        fields = [
            "id",
            "messaging_account",
            "messaging_account_name",
            "thread_type",
            "thread_id",
            "state",
            "customer",
            "created_at",
            "last_message_at",
            "last_activity_at",
            "closed_at",
        ]
        read_only_fields = fields


class ConversationFilterSerializer(serializers.Serializer):
    state = serializers.MultipleChoiceField(
        choices=ConversationState.choices, required=False, help_text="Repeat to allow several states."
    )
    messaging_account = serializers.UUIDField(required=False)
    thread_type = serializers.ChoiceField(choices=ThreadType.choices, required=False)
    social_profile_external_id = serializers.CharField(
        required=False, help_text="The customer's ID on the channel (for LINE, the user ID)."
    )
    updated_since = serializers.DateTimeField(
        required=False, help_text="Only conversations with activity at or after this time (ISO 8601)."
    )


class CanReply(permissions.BasePermission):
    """Acting towards the customer (read marks, typing) takes the right to send them messages."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("omnichannel.add_message"))


class TypingSerializer(serializers.Serializer):
    seconds = serializers.IntegerField(min_value=5, max_value=60, default=20)


@extend_schema_view(
    list=extend_schema(
        summary="List conversations, latest activity first", parameters=[ConversationFilterSerializer]
    ),
    retrieve=extend_schema(summary="Get a conversation with its customer"),
)
class ConversationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ConversationSerializer
    permission_classes = [ModelPermissionsWithView]
    queryset = Conversation.objects.none()

    def get_queryset(self) -> QuerySet[Conversation]:
        if self.action != "list":
            return selectors.conversation_list(viewer=self.request.user)
        filters = ConversationFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return selectors.conversation_list(
            viewer=self.request.user,
            states=data.get("state", ()),
            messaging_account_id=data.get("messaging_account"),
            thread_type=data.get("thread_type"),
            social_profile_external_id=data.get("social_profile_external_id"),
            active_since=data.get("updated_since"),
        )

    @extend_schema(
        summary="Show the customer that their messages were read", request=None, responses={202: None}
    )
    @action(detail=True, methods=["post"], permission_classes=[CanReply])
    def read(self, request: Request, pk: str | None = None) -> Response:
        services.conversation_mark_read(conversation=self.get_object())
        return Response(status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Show the customer that an agent is typing", request=TypingSerializer, responses={202: None}
    )
    @action(detail=True, methods=["post"], permission_classes=[CanReply])
    def typing(self, request: Request, pk: str | None = None) -> Response:
        body = TypingSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.conversation_typing(conversation=self.get_object(), seconds=body.validated_data["seconds"])
        return Response(status=status.HTTP_202_ACCEPTED)


# --- Messages -------------------------------------------------------------------------------------


class AuthorSerializer(serializers.ModelSerializer):
    name = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "name"]
        read_only_fields = fields

    def get_name(self, user: Any) -> str:
        return user.get_full_name() or user.get_username()


class AttachmentSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(
        help_text="Once downloaded (state ready): the file, served to signed-in users who may see the "
        "conversation (images, audio, video and PDF inline, anything else as a download). Else where the "
        "channel hosts it; may be empty."
    )

    class Meta:
        model = Attachment
        fields = ["id", "file_name", "content_type", "size", "url", "preview_url", "duration_ms", "state"]
        read_only_fields = fields

    def get_url(self, attachment: Attachment) -> str:
        if attachment.state == AttachmentState.READY and attachment.file:
            request = self.context.get("request")
            url = attachment_view_url(attachment=attachment)
            return request.build_absolute_uri(url) if request else url
        return attachment.external_url


class MessageSerializer(serializers.ModelSerializer):
    attachments = AttachmentSerializer(many=True, read_only=True)
    author = AuthorSerializer(
        read_only=True, allow_null=True, help_text="The agent who sent it; null otherwise."
    )
    unsent = serializers.SerializerMethodField(help_text="The customer unsent it: its content is gone.")
    edited = serializers.SerializerMethodField(help_text="The customer edited it: `text` is the latest.")

    class Meta:
        model = Message
        fields = [
            "uuid",
            "direction",
            "kind",
            "text",
            "payload",
            "attachments",
            "unsent",
            "unsent_at",
            "edited",
            "edited_at",
            "is_flagged",
            "delivery_state",
            "delivery_method",
            "delivery_error",
            "delivered_at",
            "sent_at",
            "author",
        ]
        read_only_fields = fields

    def get_unsent(self, message: Message) -> bool:
        return message.unsent_at is not None

    def get_edited(self, message: Message) -> bool:
        return message.edited_at is not None


SENDABLE_KINDS = [(kind.value, kind.label) for kind in MessageKind if kind in services.OUTBOUND_KINDS]


class MessageCreateSerializer(serializers.Serializer):
    """What an agent sends. JSON for text, sticker and location; multipart with `file` for image, video,
    audio and document (then `payload`, if any, is a JSON string)."""

    kind = serializers.ChoiceField(choices=SENDABLE_KINDS, default=MessageKind.TEXT)
    text = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    payload = serializers.JSONField(
        required=False,
        default=dict,
        help_text="Sticker: `package_id`, `sticker_id`. "
        "Location: `title`, `address`, `latitude`, `longitude`. "
        "Any kind: `quick_replies`, up to 13 objects with a `label` (and the `text` they send).",
    )
    file = serializers.FileField(
        required=False,
        allow_empty_file=False,
        help_text="Image (JPEG, PNG), video (MP4), audio (M4A, MP3), document (PDF, text, office files); "
        "at most ATTACHMENT_UPLOAD_MAX_BYTES (10 MB unless configured). Anything else is refused with 400.",
    )

    def validate_payload(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        quick_replies = value.get("quick_replies", [])
        if not isinstance(quick_replies, list) or not all(isinstance(item, dict) for item in quick_replies):
            raise serializers.ValidationError("quick_replies is a list of objects.")
        return value


class MessagePermissions(ModelPermissionsWithView):
    """Reading needs view_message; sending, and retrying (sending again), need add_message."""


CONVERSATION_PATH_PARAMETER = OpenApiParameter(
    "conversation_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The conversation's ID."
)


@extend_schema(parameters=[CONVERSATION_PATH_PARAMETER])
@extend_schema_view(
    list=extend_schema(summary="List a conversation's messages, oldest first"),
    retrieve=extend_schema(summary="Get one message of a conversation"),
    create=extend_schema(
        summary="Send a message as the authenticated user",
        description="Stores an outbound message (delivery state `pending`) and queues its delivery: 202, "
        "the message is accepted and will be delivered (even while the task broker is down: a periodic "
        "sweep queues it when the broker is back); follow `delivery_state`. "
        "JSON for text, sticker and location; multipart/form-data with `file` for image, video, audio and "
        "document.",
        request={"application/json": MessageCreateSerializer, "multipart/form-data": MessageCreateSerializer},
        responses={202: MessageSerializer},
    ),
)
class ConversationMessageViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = MessageSerializer
    permission_classes = [MessagePermissions]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    queryset = Message.objects.none()
    lookup_field = "uuid"

    def get_conversation(self) -> Conversation:
        if not hasattr(self, "_conversation"):
            self._conversation = get_object_or_404(
                selectors.conversations_visible(viewer=self.request.user).select_related(
                    "messaging_account", "social_profile"
                ),
                pk=self.kwargs["conversation_pk"],
            )
        return self._conversation

    def get_queryset(self) -> QuerySet[Message]:
        # No lookup of the conversation here: the permission check calls this first, and a user
        # without the role must get 403, not 404. The access rule filters the messages instead.
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        return selectors.conversation_messages(conversation=int(self.kwargs["conversation_pk"])).filter(
            conversation__in=selectors.conversations_visible(viewer=self.request.user)
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.get_conversation()  # 404 for a conversation that does not exist or cannot be seen
        return super().list(request, *args, **kwargs)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        conversation = self.get_conversation()
        incoming = MessageCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            message = services.message_send(
                conversation=conversation, author=request.user, **incoming.validated_data
            )
        except DjangoValidationError as error:
            raise service_errors(error) from error
        return Response(self._represent(message), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Send an outbound message again",
        description="For a failed message, or one stuck `pending` or `sending` (its worker or its queueing "
        "was lost). Same UUID, so LINE never delivers a push twice; a reply whose outcome is unknown is "
        "sent again as a push. 202: queued. 400 when the message is delivered or its delivery is under way.",
        request=None,
        responses={202: MessageSerializer},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        message = self.get_object()
        message.conversation = self.get_conversation()
        try:
            message = services.message_retry(message=message)
        except DjangoValidationError as error:
            raise service_errors(error) from error
        return Response(self._represent(message), status=status.HTTP_202_ACCEPTED)

    def _represent(self, message: Message) -> dict:
        fresh = self.get_queryset().get(pk=message.pk)
        return self.get_serializer(fresh).data
