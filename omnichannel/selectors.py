"""Reads that pages and the API share, each a fixed number of queries."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from routing.models import DistributionMode, Offer, OfferState, QueueMembership

from .models import Attachment, AttachmentState, Conversation, ConversationState, Message, WorkerHeartbeat

# The access policy for conversations, their messages and their files: one place, used by the API, the
# attachment view, the admin and the inbox pages. A role without CONVERSATION_VIEW_PERMISSION sees
# nothing; with it, an agent sees their own conversations (conversations_visible says which);
# CONVERSATION_VIEW_ALL_PERMISSION (supervisors, administrators; superusers) sees every conversation.
CONVERSATION_VIEW_PERMISSION = "omnichannel.view_conversation"
CONVERSATION_VIEW_ALL_PERMISSION = "omnichannel.view_all_conversations"


def worker_heartbeat_latest() -> datetime.datetime | None:
    return WorkerHeartbeat.objects.order_by("-created_at").values_list("created_at", flat=True).first()


def user_roles(*, user: AbstractBaseUser | AnonymousUser) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(user.groups.values_list("name", flat=True))


def viewer_sees_all_conversations(*, viewer: AbstractBaseUser | AnonymousUser) -> bool:
    """Supervisors and administrators (and superusers): every conversation, and they may transfer and
    close any of them."""
    return bool(
        viewer.is_authenticated and viewer.is_active and viewer.has_perm(CONVERSATION_VIEW_ALL_PERMISSION)
    )


def conversations_visible(*, viewer: AbstractBaseUser | AnonymousUser) -> QuerySet[Conversation]:
    """The conversations `viewer` may see (with their messages, files and activities).

    - Every conversation for supervisors and administrators (viewer_sees_all_conversations).
    - For any other active user whose role grants CONVERSATION_VIEW_PERMISSION (agents): the
      conversations assigned to them (whatever their state: they keep their closed ones), offered to
      them (a pending offer that has not expired), or Open in a queue of a pick workstream of which
      they are a member. A conversation transferred away from them, or left by them in a queue, is
      not theirs any more.
    - Nothing for anyone else.

    One query wherever it is used (a filter with two EXISTS subqueries, no join that could repeat
    rows)."""
    if not (viewer.is_authenticated and viewer.is_active and viewer.has_perm(CONVERSATION_VIEW_PERMISSION)):
        return Conversation.objects.none()
    if viewer_sees_all_conversations(viewer=viewer):
        return Conversation.objects.all()
    offered = Offer.objects.filter(
        conversation_id=OuterRef("pk"),
        agent_id=viewer.pk,
        state=OfferState.PENDING,
        expires_at__gt=timezone.now(),
    )
    member = QueueMembership.objects.filter(queue_id=OuterRef("queue_id"), user_id=viewer.pk)
    pickable = Q(
        Exists(member),
        state=ConversationState.OPEN,
        workstream__distribution_mode=DistributionMode.PICK,
    )
    return Conversation.objects.filter(Q(assigned_agent_id=viewer.pk) | Exists(offered) | pickable)


def conversation_get(*, viewer: AbstractBaseUser | AnonymousUser, id: int) -> Conversation | None:
    """The conversation `id` if `viewer` may see it, as conversation_list gives it (account, customer,
    contact, `last_activity_at`); None when it does not exist or is not theirs to see (one answer for
    both, so that IDs cannot be probed). One query."""
    return conversation_list(viewer=viewer).filter(pk=id).first()


def conversation_worked_by(*, viewer: AbstractBaseUser | AnonymousUser, conversation: Conversation) -> bool:
    """Whether `viewer` may act towards the customer in a conversation they can see (send, retry,
    read marks, typing): the agent it is assigned to, or a supervisor or administrator."""
    return conversation.assigned_agent_id == viewer.pk or viewer_sees_all_conversations(viewer=viewer)


def conversation_list(
    *,
    viewer: AbstractBaseUser | AnonymousUser,
    states: Collection[str] = (),
    messaging_account_id: uuid.UUID | None = None,
    thread_type: str | None = None,
    social_profile_external_id: str | None = None,
    active_since: datetime.datetime | None = None,
) -> QuerySet[Conversation]:
    """Conversations with their account, customer and contact in one query, latest activity first.

    The last activity is the last message, or the creation for a conversation without any yet; it is
    annotated as `last_activity_at`."""
    conversations = (
        conversations_visible(viewer=viewer)
        .select_related("messaging_account", "social_profile__contact")
        .annotate(last_activity_at=Coalesce("last_message_at", "created_at"))
    )
    if states:
        conversations = conversations.filter(state__in=states)
    if messaging_account_id:
        conversations = conversations.filter(messaging_account_id=messaging_account_id)
    if thread_type:
        conversations = conversations.filter(thread_type=thread_type)
    if social_profile_external_id:
        conversations = conversations.filter(social_profile__external_id=social_profile_external_id)
    if active_since:
        conversations = conversations.filter(last_activity_at__gte=active_since)
    return conversations.order_by("-last_activity_at", "-id")


def conversation_messages(*, conversation: Conversation | int) -> QuerySet[Message]:
    """Every message of a conversation in the order it happened, with author and attachments."""
    conversation_id = conversation.pk if isinstance(conversation, Conversation) else conversation
    return (
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("author")
        .prefetch_related("attachments")
        .order_by("sent_at", "id")
    )


def attachment_stored_for_viewer(
    *, viewer: AbstractBaseUser | AnonymousUser, attachment_id: int
) -> Attachment | None:
    """A downloaded attachment (state ready, with its file) of a conversation `viewer` may see, with
    its message; None when there is no such attachment or the viewer may not see it (one answer for
    both, so that IDs cannot be probed). One query."""
    return (
        Attachment.objects.select_related("message")
        .filter(
            pk=attachment_id,
            state=AttachmentState.READY,
            message__conversation__in=conversations_visible(viewer=viewer),
        )
        .exclude(file="")
        .first()
    )


def offers_pending(*, agent: AbstractBaseUser) -> QuerySet[Offer]:
    """The agent's pending offers that have not expired, soonest to expire first, with their queue and
    their conversation's customer (and contact). One query."""
    return (
        Offer.objects.filter(agent_id=agent.pk, state=OfferState.PENDING, expires_at__gt=timezone.now())
        .select_related("queue", "conversation__social_profile__contact")
        .order_by("expires_at", "id")
    )
