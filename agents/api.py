"""REST API of agents and their offers: /api/v1/agents/ (supervisors and administrators: every agent's
presence, capacity, skills and queues; PATCH of capacity and skills), /api/v1/agents/me/ (any agent:
their own profile; PATCH of their presence) and /api/v1/offers/ (the caller's pending offers, to accept
or reject).

Profiles are made on demand for users of the Agent group (agents.services). Presence goes through
agents.services.agent_presence_set, offers through omnichannel.lifecycle (offer_accept,
offer_decline). Another agent's offer is 404, like one that does not exist; an offer that expired or
was answered or withdrawn meanwhile is 409 with the reason."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from omnichannel import lifecycle, selectors
from omnichannel.api import (
    ConversationSerializer,
    LifecycleRefusalSerializer,
    LifecycleRefused,
    lifecycle_answers,
)
from routing.models import Offer, OfferState, QueueMembership

from .models import AgentProfile, AgentSkill, Presence
from .services import agent_presence_set, agent_profile_for, agent_profile_update, agent_profiles_ensure

logger = logging.getLogger(__name__)

# The right to manage agents (supervisors, administrators): see every profile, change capacity and
# skills. An agent holds only view_agentprofile, meaning their own (agents/admin.py reads it alike).
AGENTS_MANAGE_PERMISSION = "agents.change_agentprofile"
SKILLS_CHANGE_PERMISSIONS = ["agents.add_agentskill", "agents.change_agentskill", "agents.delete_agentskill"]


# --- Agents ---------------------------------------------------------------------------------------


def agent_profiles_with_details() -> QuerySet[AgentProfile]:
    """Profiles with their user, skills and queue memberships: three queries, whatever the number."""
    return AgentProfile.objects.select_related("user").prefetch_related(
        Prefetch("agent_skills", queryset=AgentSkill.objects.select_related("skill")),
        Prefetch("user__queue_memberships", queryset=QueueMembership.objects.order_by("queue_id")),
    )


class AgentSkillSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="A skill's name (Agents > Skills).")
    level = serializers.IntegerField(min_value=1, max_value=10, help_text="1 (beginner) to 10 (expert).")

    def to_representation(self, item: AgentSkill) -> dict[str, Any]:
        return {"name": item.skill.name, "level": item.level}


class AgentSerializer(serializers.ModelSerializer):
    user = serializers.IntegerField(source="user_id", read_only=True, help_text="The user's ID.")
    username = serializers.CharField(source="user.username", read_only=True)
    name = serializers.SerializerMethodField()
    presence = serializers.ChoiceField(choices=Presence.choices, read_only=True)
    capacity = serializers.IntegerField(min_value=0, required=False, help_text="Units of work held at once.")
    capacity_used = serializers.IntegerField(
        read_only=True, help_text="Units held now by worked conversations and pending offers."
    )
    skills = AgentSkillSerializer(
        many=True, required=False, help_text="PATCH replaces the whole list.", source="agent_skills"
    )
    queues = serializers.SerializerMethodField(help_text="IDs of the queues the agent is a member of.")

    class Meta:
        model = AgentProfile
        fields = ["user", "username", "name", "presence", "capacity", "capacity_used", "skills", "queues"]

    def get_name(self, profile: AgentProfile) -> str:
        return profile.user.get_full_name() or profile.user.get_username()

    def get_queues(self, profile: AgentProfile) -> list[int]:
        return [membership.queue_id for membership in profile.user.queue_memberships.all()]


class AgentPresenceSerializer(AgentSerializer):
    """/agents/me/: the agent's own profile; only `presence` can be changed."""

    presence = serializers.ChoiceField(choices=Presence.choices)
    capacity = serializers.IntegerField(read_only=True, help_text="Units of work held at once.")
    skills = AgentSkillSerializer(many=True, read_only=True, source="agent_skills")


class AgentPermissions(permissions.BasePermission):
    """The list and other agents' profiles: supervisors and administrators (AGENTS_MANAGE_PERMISSION);
    changing skills also takes the skill permissions. `me`: anyone who may see agent profiles."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if view.action == "me":
            return user.has_perm("agents.view_agentprofile")
        if request.method in ("PATCH", "PUT") and "skills" in request.data:
            return user.has_perms([AGENTS_MANAGE_PERMISSION, *SKILLS_CHANGE_PERMISSIONS])
        return user.has_perm(AGENTS_MANAGE_PERMISSION)


@extend_schema_view(
    list=extend_schema(summary="List agents with presence, capacity, skills and queues (supervisors)"),
    retrieve=extend_schema(summary="Get an agent by user ID (supervisors)"),
    partial_update=extend_schema(
        summary="Change an agent's capacity or skills (supervisors)",
        description="`skills` replaces the agent's skills; each name must be an existing skill (400 naming "
        "the unknown ones). A capacity below the units in use is allowed: the agent gets no new work "
        "until they are below it again.",
    ),
)
class AgentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    serializer_class = AgentSerializer
    permission_classes = [AgentPermissions]
    queryset = AgentProfile.objects.none()
    lookup_field = "user"
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[AgentProfile]:
        return agent_profiles_with_details().order_by("user__username")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        agent_profiles_ensure()  # every member of the Agent group has a profile (created on demand)
        return super().list(request, *args, **kwargs)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        profile = self.get_object()
        body = self.get_serializer(profile, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        try:
            agent_profile_update(
                profile=profile,
                actor=request.user,
                capacity=body.validated_data.get("capacity"),
                skills=body.validated_data.get("agent_skills"),
            )
        except DjangoValidationError as error:
            raise serializers.ValidationError(serializers.as_serializer_error(error)) from error
        return Response(self.get_serializer(self.get_queryset().get(pk=profile.pk)).data)

    @extend_schema(
        methods=["GET"], summary="Your own agent profile", responses={200: AgentPresenceSerializer}
    )
    @extend_schema(
        methods=["PATCH"],
        summary="Set your presence",
        description="Only `presence` can be changed here (400 naming any other field); capacity and skills "
        "are a supervisor's.",
        request=AgentPresenceSerializer,
        responses={200: AgentPresenceSerializer},
    )
    @action(detail=False, methods=["get", "patch"], serializer_class=AgentPresenceSerializer)
    def me(self, request: Request) -> Response:
        profile = agent_profile_for(request.user)
        if request.method == "PATCH":
            others = sorted(set(request.data) - {"presence"})
            if others:
                raise serializers.ValidationError(
                    {name: [gettext("Only your presence can be changed here.")] for name in others}
                )
            body = AgentPresenceSerializer(profile, data=request.data, partial=True)
            body.is_valid(raise_exception=True)
            if "presence" in body.validated_data:
                try:
                    agent_presence_set(
                        user=request.user, presence=body.validated_data["presence"], actor=request.user
                    )
                except DjangoValidationError as error:
                    raise serializers.ValidationError(serializers.as_serializer_error(error)) from error
        fresh = self.get_queryset().get(pk=profile.pk)
        return Response(AgentPresenceSerializer(fresh, context=self.get_serializer_context()).data)


# --- Offers ---------------------------------------------------------------------------------------


class OfferCustomerSerializer(serializers.Serializer):
    """Who is waiting: enough to decide, the rest comes with the conversation once accepted."""

    display_name = serializers.CharField()
    picture_url = serializers.CharField()
    language = serializers.CharField()
    contact_name = serializers.CharField(allow_null=True, help_text="The linked contact's name, if any.")


class OfferSerializer(serializers.ModelSerializer):
    conversation = serializers.IntegerField(source="conversation_id", read_only=True)
    queue = serializers.IntegerField(source="queue_id", read_only=True, allow_null=True)
    queue_name = serializers.CharField(source="queue.name", read_only=True, allow_null=True, default=None)
    customer = serializers.SerializerMethodField(help_text="Null for group and room threads.")

    class Meta:
        model = Offer
        fields = ["id", "conversation", "queue", "queue_name", "customer", "created_at", "expires_at"]
        read_only_fields = fields

    @extend_schema_field(OfferCustomerSerializer(allow_null=True))
    def get_customer(self, offer: Offer) -> dict[str, Any] | None:
        profile = offer.conversation.social_profile
        if profile is None:
            return None
        return {
            "display_name": profile.display_name,
            "picture_url": profile.picture_url,
            "language": profile.language,
            "contact_name": profile.contact.name if profile.contact_id else None,
        }


class OfferPermissions(permissions.BasePermission):
    """Offers are made to agents: anyone who may see conversations (their own pending offers only)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm(selectors.CONVERSATION_VIEW_PERMISSION))


@extend_schema_view(list=extend_schema(summary="Your pending offers, soonest to expire first"))
class OfferViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = OfferSerializer
    permission_classes = [OfferPermissions]
    queryset = Offer.objects.none()
    lookup_value_regex = "[0-9]+"

    def get_queryset(self) -> QuerySet[Offer]:
        return selectors.offers_pending(agent=self.request.user)

    def _own_offer(self) -> Offer:
        # Any state: a late answer gets 409 with the reason; another agent's offer is 404.
        offer = Offer.objects.filter(pk=self.kwargs["pk"], agent_id=self.request.user.pk).first()
        if offer is None:
            raise exceptions.NotFound(gettext("There is no such offer for you."))
        return offer

    @extend_schema(
        summary="Accept an offer: the conversation becomes Active with you",
        request=None,
        responses={200: ConversationSerializer, 409: LifecycleRefusalSerializer},
    )
    @action(detail=True, methods=["post"])
    def accept(self, request: Request, pk: str | None = None) -> Response:
        offer = self._own_offer()
        with lifecycle_answers():
            lifecycle.offer_accept(offer_id=offer.pk, agent=request.user)
        conversation = selectors.conversation_get(viewer=request.user, id=offer.conversation_id)
        return Response(ConversationSerializer(conversation, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Reject an offer: it goes to the next agent",
        request=None,
        responses={204: None, 409: LifecycleRefusalSerializer},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        offer = self._own_offer()
        if not lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=request.user):
            offer.refresh_from_db(fields=["state"])
            raise LifecycleRefused(
                lifecycle.LifecycleConflict(
                    gettext("This offer is not pending any more: it was %(state)s.")
                    % {"state": offer.get_state_display().lower()}
                )
            )
        return Response(status=status.HTTP_204_NO_CONTENT)
