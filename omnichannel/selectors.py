"""Reads that pages and the API share, each a fixed number of queries."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from routing.models import DistributionMode, Offer, OfferState, QueueMembership

from .models import (
    Attachment,
    AttachmentState,
    Conversation,
    ConversationActivity,
    ConversationConsult,
    ConversationState,
    Message,
    QuickReply,
    WorkerHeartbeat,
)

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
      not theirs any more. And, read-only, a conversation they are consulted on (a running consult,
      omnichannel.consults) unless it is Closed: conversation_worked_by stays false for them.
    - Nothing for anyone else.

    One query wherever it is used (a filter with three EXISTS subqueries, no join that could repeat
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
    consulted = Q(
        Exists(
            ConversationConsult.objects.filter(
                conversation_id=OuterRef("pk"), consultant_id=viewer.pk, ended_at__isnull=True
            )
        ),
        ~Q(state=ConversationState.CLOSED),
    )
    return Conversation.objects.filter(
        Q(assigned_agent_id=viewer.pk) | Exists(offered) | pickable | consulted
    )


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


# --- The conversation page: its timeline, in pages, and the composer's quick replies --------------

TIMELINE_PAGE_SIZE = 50
# At most this many new or changed messages in one live update (a page that missed more reloads).
TIMELINE_UPDATE_MAX = 200
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def timeline_key(at: datetime.datetime, kind: str, pk: int) -> str:
    """A key that sorts timeline items as they happened, as text (the page inserts live items by it):
    the time in microseconds, then the kind ("a" activity, "m" message, "r" routing), then the ID."""
    return f"{(at - _EPOCH) // datetime.timedelta(microseconds=1):017d}-{kind}{pk:012d}"


@dataclass
class TimelinePage:
    """Messages (oldest first) and the activities of the same stretch of time, and whether there are
    earlier messages (the page offers to load them)."""

    messages: list[Message]
    activities: list[ConversationActivity]
    has_earlier: bool = False

    @property
    def items(self) -> list[Message | ConversationActivity]:
        """Messages and activities interleaved by time; each has `timeline_key`."""
        return sorted([*self.messages, *self.activities], key=lambda item: item.timeline_key)

    @property
    def earliest_message(self) -> Message | None:
        return self.messages[0] if self.messages else None


def _timeline_messages() -> QuerySet[Message]:
    return Message.objects.select_related("author", "sender_profile").prefetch_related("attachments", "edits")


def _timeline_activities() -> QuerySet[ConversationActivity]:
    return ConversationActivity.objects.select_related("actor", "agent")


def _keyed(page: TimelinePage) -> TimelinePage:
    for message in page.messages:
        message.timeline_key = timeline_key(message.sent_at, "m", message.pk)
    for activity in page.activities:
        activity.timeline_key = timeline_key(activity.created_at, "a", activity.pk)
    return page


def conversation_timeline(
    *, conversation: Conversation, before: int | None = None, limit: int = TIMELINE_PAGE_SIZE
) -> TimelinePage:
    """One page of a conversation's timeline: its latest `limit` messages, or the `limit` before the
    message `before` ("Load earlier"), with their authors, files and edit history, and the activities
    (state changes, offers, transfers) of the same stretch of time; the first page holds every
    activity before its messages. Four queries whatever the history's length (three without
    messages)."""
    messages = _timeline_messages().filter(conversation_id=conversation.pk)
    activities = _timeline_activities().filter(conversation_id=conversation.pk)
    if before is not None:
        anchor = Subquery(
            Message.objects.filter(pk=before, conversation_id=conversation.pk).values("sent_at")[:1]
        )
        messages = messages.filter(Q(sent_at__lt=anchor) | Q(sent_at=anchor, pk__lt=before))
        activities = activities.filter(created_at__lt=anchor)
    rows = list(messages.order_by("-sent_at", "-id")[: limit + 1])
    has_earlier = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    if has_earlier:
        activities = activities.filter(created_at__gte=rows[0].sent_at)
    return _keyed(
        TimelinePage(
            messages=rows, activities=list(activities.order_by("created_at", "id")), has_earlier=has_earlier
        )
    )


def conversation_timeline_updates(
    *,
    conversation: Conversation,
    after_message: int | None = None,
    after_activity: int | None = None,
    changed: Collection[int] = (),
) -> TimelinePage:
    """What a page showing a conversation has not shown yet: the messages and activities added after
    the last ones it has (by ID; None: none of them), and the messages in `changed` (delivery state,
    edit, unsend, a download finished) to show again. Four queries at most."""
    wanted = Q(pk__in=list(changed))
    if after_message is not None:
        wanted |= Q(pk__gt=after_message)
    messages = _timeline_messages().filter(wanted, conversation_id=conversation.pk)
    activities: list[ConversationActivity] = []
    if after_activity is not None:
        activities = list(
            _timeline_activities()
            .filter(conversation_id=conversation.pk, pk__gt=after_activity)
            .order_by("created_at", "id")[:TIMELINE_UPDATE_MAX]
        )
    return _keyed(
        TimelinePage(
            messages=list(messages.order_by("sent_at", "id")[:TIMELINE_UPDATE_MAX]), activities=activities
        )
    )


def quick_replies_search(*, query: str = "", language: str = "", limit: int = 10) -> QuerySet[QuickReply]:
    """Active quick replies whose title or tags hold every word of `query`, in the customer's
    `language` (or in any language: those without one), by title. One query."""
    replies = QuickReply.objects.filter(is_active=True)
    if language:
        base = language.split("-")[0]
        replies = replies.filter(
            Q(language="")
            | Q(language__iexact=language)
            | Q(language__iexact=base)
            | Q(language__istartswith=f"{base}-")
        )
    for word in query.split():
        replies = replies.filter(Q(title__icontains=word) | Q(tags__icontains=word))
    return replies.order_by("title", "id")[:limit]


def quick_reply_fill(*, text: str, customer_name: str, agent_name: str) -> str:
    """A quick reply's text with its placeholders {CustomerName} and {AgentName} filled in."""
    return text.replace("{CustomerName}", customer_name).replace("{AgentName}", agent_name)
