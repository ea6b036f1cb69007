"""REST API of conversations and their messages: /api/v1/conversations/ (with the lifecycle actions
pick, transfer, wait, resume, end, close) and /api/v1/conversations/{id}/messages/. Reads come from
omnichannel.selectors (a fixed number of queries), writes from omnichannel.services,
omnichannel.lifecycle and routing.distribution.

Access (omnichannel.selectors is the one policy): a conversation the caller may not see is 404,
whatever the endpoint; one they see but may not act on is 403 with the reason. An agent sees the
conversations assigned or offered to them and the Open items of their pick queues, and acts (sends,
marks read, types, waits, resumes, ends, transfers, closes) only in those assigned to them; a
supervisor or administrator sees every conversation, sends in any, and may transfer and close any.
A lifecycle conflict (the conversation changed meanwhile, another agent picked it first, the action
does not apply to its state) or a lack of capacity is 409 `{"detail", "code"}`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from agents.roles import AGENT
from routing import distribution
from routing.models import Queue

from . import lifecycle, selectors, services
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


class LifecycleRefused(exceptions.APIException):
    """409 `{"detail": <the lifecycle's message>, "code": "conflict" | "capacity"}`."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The conversation changed meanwhile."
    default_code = "conflict"

    def __init__(self, error: lifecycle.LifecycleError) -> None:
        super().__init__(detail={"detail": error.message, "code": error.code})


class LifecycleRefusalSerializer(serializers.Serializer):
    """The body of a 409 (for the schema)."""

    detail = serializers.CharField(help_text="What happened, in words a user can read.")
    code = serializers.ChoiceField(
        choices=["conflict", "capacity"],
        help_text="conflict: the conversation or offer changed meanwhile (another agent was first) or the "
        "action does not apply to its state; capacity: the agent has no capacity left.",
    )


@contextmanager
def lifecycle_answers() -> Iterator[None]:
    """Turn the refusals of lifecycle services into HTTP answers: 409 for a conflict or no capacity,
    403 with the service's reason, 400 for invalid input."""
    try:
        yield
    except lifecycle.LifecycleError as error:
        raise LifecycleRefused(error) from error
    except DjangoPermissionDenied as error:
        raise exceptions.PermissionDenied(str(error) or None) from error
    except DjangoValidationError as error:
        raise service_errors(error) from error


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
    workstream = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The workstream's ID (null until routed)."
    )
    queue = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The queue's ID (null until routed)."
    )
    assigned_agent = serializers.PrimaryKeyRelatedField(
        read_only=True,
        allow_null=True,
        help_text="The user ID of the agent working it (Active, Wrap-up) or who set it aside (Waiting); "
        "kept once Closed; null while Open.",
    )
    priority = serializers.IntegerField(read_only=True, help_text="Lower goes first.")
    routing = serializers.JSONField(
        read_only=True,
        help_text="The recorded routing decision: rules matched, attributes written, queue, reason, when.",
    )
    capacity_held = serializers.IntegerField(
        read_only=True, help_text="Units of the assigned agent's capacity this conversation holds now."
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
            "workstream",
            "queue",
            "assigned_agent",
            "priority",
            "routing",
            "capacity_held",
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


class CanWork(permissions.BasePermission):
    """The lifecycle actions take the right to change conversations (agents, supervisors,
    administrators); which conversations is the access policy's answer (ConversationViewSet)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("omnichannel.change_conversation"))


# What the lifecycle actions change, read again to answer with the conversation as it is now.
LIFECYCLE_FIELDS = [
    "state",
    "state_changed_at",
    "closed_at",
    "workstream",
    "queue",
    "queued_at",
    "priority",
    "assigned_agent",
    "previous_agent",
    "capacity_held",
    "wrap_up_notes",
]

NOT_YOURS = "This conversation is not assigned to you: only its agent can {what}."


def conversation_work_check(*, viewer: Any, conversation: Conversation, what: str) -> None:
    """403 unless `viewer` works `conversation` (its agent, or a supervisor or administrator)."""
    if not selectors.conversation_worked_by(viewer=viewer, conversation=conversation):
        raise exceptions.PermissionDenied(NOT_YOURS.format(what=what))


class TypingSerializer(serializers.Serializer):
    seconds = serializers.IntegerField(min_value=5, max_value=60, default=20)


class TransferSerializer(serializers.Serializer):
    queue = serializers.PrimaryKeyRelatedField(
        queryset=Queue.objects.all(), required=False, allow_null=True, help_text="The queue's ID."
    )
    agent = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.filter(is_active=True, groups__name=AGENT),
        required=False,
        allow_null=True,
        help_text="The user ID of an active agent: the conversation is offered to them (in `queue`, or "
        "its own queue).",
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("queue") is None and attrs.get("agent") is None:
            raise serializers.ValidationError(
                gettext("Give the queue or the agent to transfer to (or both).")
            )
        return attrs


class EndSerializer(serializers.Serializer):
    notes = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=10000, help_text="The wrap-up notes."
    )


def action_schema(summary: str, description: str, request: Any = None) -> Any:
    return extend_schema(
        summary=summary,
        description=description,
        request=request,
        responses={200: ConversationSerializer, 409: LifecycleRefusalSerializer},
    )


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
    lookup_value_regex = "[0-9]+"

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
        conversation = self.get_object()
        conversation_work_check(viewer=request.user, conversation=conversation, what="mark its messages read")
        services.conversation_mark_read(conversation=conversation)
        return Response(status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Show the customer that an agent is typing", request=TypingSerializer, responses={202: None}
    )
    @action(detail=True, methods=["post"], permission_classes=[CanReply])
    def typing(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        conversation_work_check(viewer=request.user, conversation=conversation, what="type in it")
        body = TypingSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.conversation_typing(conversation=conversation, seconds=body.validated_data["seconds"])
        return Response(status=status.HTTP_202_ACCEPTED)

    # --- Lifecycle actions (omnichannel.lifecycle, routing.distribution) ---

    @action_schema(
        "Pick an Open conversation of one of your queues (pick workstreams)",
        "It becomes Active with you, holding your capacity. 403 when you are not a member of its queue; "
        "409 when another agent picked it first, its workstream pushes work (wait for an offer), or you "
        "have no capacity left.",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def pick(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        with lifecycle_answers():
            distribution.conversation_pick(conversation=conversation, agent=request.user)
        return self._represent(conversation)

    @action_schema(
        "Transfer a conversation to a queue or an agent",
        "Its agent, or a supervisor: back to Open in `queue` (or its own queue) with its capacity "
        "released, and assignment runs again; with `agent`, it is offered to them. 409 when it is in "
        "wrap-up or closed, or the agent has no capacity left (then nothing is transferred).",
        request=TransferSerializer,
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def transfer(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        conversation_work_check(viewer=request.user, conversation=conversation, what="transfer it")
        body = TransferSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with lifecycle_answers():
            distribution.conversation_transfer(
                conversation=conversation,
                actor=request.user,
                queue=body.validated_data.get("queue"),
                agent=body.validated_data.get("agent"),
                note=body.validated_data["note"],
            )
        return self._represent(conversation)

    @action_schema(
        "Set an Active conversation aside until the customer writes again (Waiting)",
        "Its agent only. Its capacity is released; the customer's next message puts it back in its queue.",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def wait(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(lifecycle.WAIT, what="set it aside")

    @action_schema(
        "Take a Waiting conversation up again",
        "Its agent only. It becomes Active, holding their capacity (409 when they have none left).",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(lifecycle.RESUME, what="resume it")

    @action_schema(
        "End an Active conversation and write the wrap-up notes",
        "Its agent only. It goes to Wrap-up; its capacity is released unless the workstream blocks "
        "capacity for wrap-up.",
        request=EndSerializer,
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def end(self, request: Request, pk: str | None = None) -> Response:
        body = EndSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._transition(lifecycle.END, what="end it", note=body.validated_data["notes"])

    @action_schema(
        "Close a conversation",
        "Its agent, or a supervisor. Capacity and a pending offer are released; the customer's next "
        "message opens a new conversation. 409 when it is closed already.",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanWork])
    def close(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(lifecycle.CLOSE, what="close it", supervisors_too=True)

    def _transition(
        self, action_name: str, *, what: str, note: str = "", supervisors_too: bool = False
    ) -> Response:
        conversation = self.get_object()
        viewer = self.request.user
        allowed = conversation.assigned_agent_id == viewer.pk or (
            supervisors_too and selectors.viewer_sees_all_conversations(viewer=viewer)
        )
        if not allowed:
            raise exceptions.PermissionDenied(NOT_YOURS.format(what=what))
        with lifecycle_answers():
            lifecycle.conversation_transition(
                conversation=conversation, action=action_name, actor=viewer, note=note
            )
        return self._represent(conversation)

    def _represent(self, conversation: Conversation) -> Response:
        # The conversation as it is now: one query for what the lifecycle writes; its account and
        # customer (loaded with it) are unchanged.
        conversation.refresh_from_db(fields=LIFECYCLE_FIELDS)
        return Response(self.get_serializer(conversation).data)


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
        conversation_work_check(viewer=request.user, conversation=conversation, what="send messages in it")
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
        conversation_work_check(
            viewer=request.user, conversation=message.conversation, what="send messages in it"
        )
        try:
            message = services.message_retry(message=message)
        except DjangoValidationError as error:
            raise service_errors(error) from error
        return Response(self._represent(message), status=status.HTTP_202_ACCEPTED)

    def _represent(self, message: Message) -> dict:
        fresh = self.get_queryset().get(pk=message.pk)
        return self.get_serializer(fresh).data
