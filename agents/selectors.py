"""Reads of the agent's own pages (the inbox home, the offer notification): each a fixed number of
queries whatever the number of conversations, messages or offers. What an agent may see is decided
by omnichannel.selectors (the access policy); these reads only ever narrow it to the agent's own."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from omnichannel.models import (
    Conversation,
    ConversationConsult,
    ConversationState,
    Direction,
    Message,
    MessageKind,
)
from omnichannel.selectors import conversations_visible, offers_pending
from routing.models import DistributionMode, Offer, OfferState

from .models import AGENT_CAPACITY_DEFAULT, AgentProfile, Presence

# "My conversations": the states in which a conversation is the agent's work.
MY_STATES = (ConversationState.ACTIVE, ConversationState.WAITING, ConversationState.WRAP_UP)
# The longest lists the home page shows (the newest activity first; items of a pick queue by priority
# and wait): enough for a day's work, and a bound on the page's time whatever the data size.
MY_CONVERSATIONS_LIMIT = 200
PICK_ITEMS_LIMIT = 50
# Before any read mark every inbound message is unread.
_NEVER = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class AgentLoad:
    """The agent's presence and how much of their capacity is held (conversations and offers)."""

    presence: str
    capacity: int
    capacity_used: int

    @property
    def presence_label(self) -> str:
        return Presence(self.presence).label

    @property
    def percent(self) -> int:
        if self.capacity <= 0:
            return 100
        return min(100, round(100 * self.capacity_used / self.capacity))


def agent_load(*, agent: AbstractBaseUser) -> AgentLoad:
    """Presence, capacity and units in use; an agent without a profile yet is Offline with the default
    capacity (the profile is made on first use by agents.services). One query."""
    row = (
        AgentProfile.objects.filter(user_id=agent.pk).values("presence", "capacity", "capacity_used").first()
    )
    if row is None:
        return AgentLoad(presence=Presence.OFFLINE, capacity=AGENT_CAPACITY_DEFAULT, capacity_used=0)
    return AgentLoad(**row)


def _last_message(field: str) -> Subquery:
    newest = Message.objects.filter(conversation_id=OuterRef("pk")).order_by("-sent_at", "-id")
    return Subquery(newest.values(field)[:1])


def _first_inbound(field: str, conversation: str = "pk") -> Subquery:
    """A field of the conversation's first customer message (the offer and the queue show it): what
    they wrote or sent, not an event marker (following the account, joining a group)."""
    first = (
        Message.objects.filter(conversation_id=OuterRef(conversation), direction=Direction.INBOUND)
        .exclude(kind=MessageKind.EVENT)
        .order_by("sent_at", "id")
    )
    return Subquery(first.values(field)[:1])


def _unread_count() -> Subquery:
    """Inbound messages stored after the agent's read mark (all of them before the first)."""
    unread = (
        Message.objects.filter(
            conversation_id=OuterRef("pk"),
            direction=Direction.INBOUND,
            created_at__gt=Coalesce(OuterRef("agent_read_at"), Value(_NEVER)),
        )
        .order_by()
        .values("conversation_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Coalesce(Subquery(unread, output_field=IntegerField()), 0)


def my_conversations(*, agent: AbstractBaseUser) -> QuerySet[Conversation]:
    """The agent's work: conversations assigned to them that are Active, Waiting or in Wrap-up, latest
    activity first, each with its customer (profile, contact), `unread` (inbound messages after the
    agent's read mark), the last message (`last_kind`, `last_text`, `last_direction`, `last_sent_at`,
    `last_unsent_at`). One query."""
    return (
        conversations_visible(viewer=agent)
        .filter(assigned_agent_id=agent.pk, state__in=MY_STATES)
        .select_related("social_profile__contact", "queue")
        .annotate(
            last_activity_at=Coalesce("last_message_at", "created_at"),
            unread=_unread_count(),
            last_kind=_last_message("kind"),
            last_text=_last_message("text"),
            last_direction=_last_message("direction"),
            last_unsent_at=_last_message("unsent_at"),
        )
        .order_by("-last_activity_at", "-id")[:MY_CONVERSATIONS_LIMIT]
    )


def my_consults(*, agent: AbstractBaseUser) -> QuerySet[ConversationConsult]:
    """The running consults in which the agent was asked to help (read-only for them), newest first,
    with the conversation's customer and the colleague who asked. One query."""
    return (
        ConversationConsult.objects.filter(consultant_id=agent.pk, ended_at__isnull=True)
        .exclude(conversation__state=ConversationState.CLOSED)
        .select_related("conversation__social_profile__contact", "requested_by")
        .order_by("-created_at", "-id")
    )


def pick_items(*, agent: AbstractBaseUser) -> list[Conversation]:
    """The Open items of the pick queues the agent is a member of, in the order assignment would take
    them (priority, then the longest waiting), with customer, queue and first message
    (`first_text`), at most PICK_ITEMS_LIMIT + 1 (the page says when there are more). One query."""
    return list(
        conversations_visible(viewer=agent)
        .filter(
            state=ConversationState.OPEN,
            queue__isnull=False,
            workstream__distribution_mode=DistributionMode.PICK,
            queue__memberships__user_id=agent.pk,
        )
        .select_related("social_profile__contact", "queue")
        .annotate(first_text=_first_inbound("text"), first_kind=_first_inbound("kind"))
        .order_by("priority", F("queued_at").asc(nulls_last=True), "id")[: PICK_ITEMS_LIMIT + 1]
    )


def pick_candidate(*, agent: AbstractBaseUser, id: int) -> Conversation | None:
    """The conversation `id` if it is (or was) an item of one of the agent's queues, whatever its
    state: a member who clicks Pick on an item another agent took meanwhile is told so (409), while an
    ID of another queue is None, like one that does not exist. One query."""
    return Conversation.objects.filter(pk=id, queue__memberships__user_id=agent.pk).first()


def offers_for_notification(*, agent: AbstractBaseUser) -> list[Offer]:
    """The agent's pending unexpired offers (soonest to expire first) with queue, customer, contact
    and the conversation's first customer message (`first_text`, `first_kind`). One query."""
    return list(
        offers_pending(agent=agent).annotate(
            first_text=_first_inbound("text", "conversation_id"),
            first_kind=_first_inbound("kind", "conversation_id"),
        )
    )


def away_after_missed_offer(*, agent: AbstractBaseUser) -> bool:
    """Whether the agent is Away because an offer to them expired (lifecycle sets it when the workstream
    says so) and has not changed their presence since. One query."""
    missed = Offer.objects.filter(
        agent_id=agent.pk, state=OfferState.EXPIRED, answered_at__gte=OuterRef("presence_changed_at")
    )
    return (
        AgentProfile.objects.filter(user_id=agent.pk, presence=Presence.AWAY).filter(Exists(missed)).exists()
    )


def pending_offer_of(*, agent: AbstractBaseUser, id: int) -> Offer | None:
    """The agent's own offer `id`, in any state (a late answer is told why); another agent's is None."""
    return Offer.objects.filter(pk=id, agent_id=agent.pk).first()


def unread_total(conversations: list[Conversation]) -> int:
    return sum(getattr(conversation, "unread", 0) or 0 for conversation in conversations)
