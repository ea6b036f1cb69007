"""What the supervisors' dashboard shows: queues, agents and the conversations in progress.

Reads only, each a fixed number of queries whatever the number of rows (the dashboard re-renders
its parts on every live change, for every supervisor looking).

Waiting times. An item waits in a queue from the moment it lands Open there until an agent takes it
(the lifecycle's ASSIGN: Open > Active, an activity row). It lands there when routed
(`Conversation.queued_at`, set by routing), and again when transferred or reopened (those set
`queued_at` anew and write an activity with `to_state` Open). So the wait of an assignment is its
time minus the latest of those entries before it: the latest activity into Open when there is one,
else `queued_at` as routing set it, unless a later transfer moved it past the assignment, where the
conversation's creation (routing follows it within a second) stands in."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import (
    Avg,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy

from agents.models import AgentProfile, Presence
from omnichannel.models import ActivityKind, ConversationActivity, ConversationState
from omnichannel.selectors import conversations_visible
from routing.models import Queue
from routing.selectors import queues_with_load

CONVERSATIONS_PER_PAGE = 50
# The order agents are listed in: who can take work first.
PRESENCE_ORDER = [
    Presence.AVAILABLE,
    Presence.BUSY,
    Presence.BUSY_DND,
    Presence.AWAY,
    Presence.OFFLINE,
]
# The models' choice labels are not translated: the dashboard's own, for the catalogue.
PRESENCE_LABELS = {
    Presence.AVAILABLE: pgettext_lazy("presence", "Available"),
    Presence.BUSY: pgettext_lazy("presence", "Busy"),
    Presence.BUSY_DND: pgettext_lazy("presence", "Busy - do not disturb"),
    Presence.AWAY: pgettext_lazy("presence", "Away"),
    Presence.OFFLINE: pgettext_lazy("presence", "Offline"),
}
STATE_LABELS = {
    ConversationState.OPEN: pgettext_lazy("conversation state", "Open"),
    ConversationState.ACTIVE: pgettext_lazy("conversation state", "Active"),
    ConversationState.WAITING: pgettext_lazy("conversation state", "Waiting"),
    ConversationState.WRAP_UP: pgettext_lazy("conversation state", "Wrap-up"),
    ConversationState.CLOSED: pgettext_lazy("conversation state", "Closed"),
}


def day_start(*, now: datetime.datetime | None = None) -> datetime.datetime:
    """Midnight of today in the active time zone (the viewer's)."""
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def duration_display(value: datetime.timedelta | None) -> str:
    """A waiting time the way a person reads it at a glance: "45 s", "12 min", "2 h 05 min"."""
    if value is None:
        return "\u2013"  # an en dash: no time to show
    seconds = max(int(value.total_seconds()), 0)
    if seconds < 60:
        return gettext("%(seconds)d s") % {"seconds": seconds}
    minutes = seconds // 60
    if minutes < 60:
        return gettext("%(minutes)d min") % {"minutes": minutes}
    if minutes < 48 * 60:
        return gettext("%(hours)d h %(minutes)02d min") % {"hours": minutes // 60, "minutes": minutes % 60}
    return gettext("%(days)d d %(hours)d h") % {"days": minutes // (24 * 60), "hours": minutes // 60 % 24}


@dataclass(frozen=True)
class QueueSummary:
    queue: Queue
    open_items: int
    oldest_queued_at: datetime.datetime | None
    oldest_wait: datetime.timedelta | None
    assigned_today: int
    average_wait_today: datetime.timedelta | None

    @property
    def oldest_wait_display(self) -> str:
        return duration_display(self.oldest_wait)

    @property
    def average_wait_today_display(self) -> str:
        return duration_display(self.average_wait_today)

    @property
    def over_wait_limit(self) -> bool:
        """The oldest item waits longer than the queue's limit (its overflow is due)."""
        limit = self.queue.wait_limit_seconds
        return bool(limit and self.oldest_wait and self.oldest_wait.total_seconds() > limit)


def assignment_waits_today(
    *, now: datetime.datetime | None = None
) -> dict[int, tuple[int, datetime.timedelta]]:
    """For each queue (by ID): how many items agents took from it since midnight (the viewer's
    time zone) and their average wait (see the module's docstring). One query."""
    now = now or timezone.now()
    entered_queue = (
        ConversationActivity.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            to_state=ConversationState.OPEN,
            created_at__lte=OuterRef("created_at"),
        )
        .order_by("-created_at", "-id")
        .values("created_at")[:1]
    )
    routed = Case(
        When(conversation__queued_at__lte=F("created_at"), then=F("conversation__queued_at")),
        default=F("conversation__created_at"),
    )
    rows = (
        ConversationActivity.objects.filter(
            kind=ActivityKind.STATE_CHANGED,
            from_state=ConversationState.OPEN,
            to_state=ConversationState.ACTIVE,
            created_at__gte=day_start(now=now),
        )
        .annotate(
            queue_key=KT("data__queue"),
            wait=ExpressionWrapper(
                F("created_at") - Coalesce(Subquery(entered_queue), routed), output_field=DurationField()
            ),
        )
        .values("queue_key")
        .annotate(assigned=Count("id"), average_wait=Avg("wait"))
        .order_by()
    )
    waits: dict[int, tuple[int, datetime.timedelta]] = {}
    for row in rows:
        if row["queue_key"] in (None, ""):
            continue
        average = row["average_wait"]
        if not isinstance(average, datetime.timedelta):
            # SQLite answers the average of microseconds as a number.
            average = datetime.timedelta(microseconds=float(average or 0))
        waits[int(row["queue_key"])] = (row["assigned"], average)
    return waits


def queues_summary(*, now: datetime.datetime | None = None) -> list[QueueSummary]:
    """Every queue (by priority, then name) with its open items, oldest wait, and today's
    assignments and average wait. Two queries."""
    now = now or timezone.now()
    waits = assignment_waits_today(now=now)
    summaries = []
    for queue in queues_with_load().order_by("priority", "name"):
        oldest = queue.oldest_queued_at  # type: ignore[attr-defined]
        assigned, average = waits.get(queue.pk, (0, None))
        summaries.append(
            QueueSummary(
                queue=queue,
                open_items=queue.open_items,  # type: ignore[attr-defined]
                oldest_queued_at=oldest,
                oldest_wait=(now - oldest) if oldest else None,
                assigned_today=assigned,
                average_wait_today=average,
            )
        )
    return summaries


def agents_with_load() -> QuerySet[AgentProfile]:
    """Agent profiles of active users, who can take work first (by presence), with `active`,
    `waiting` and `wrap_up`: how many conversations they hold in each state. One query."""
    mine = "user__assigned_conversations__state"
    return (
        AgentProfile.objects.filter(user__is_active=True)
        .select_related("user")
        .annotate(
            active=Count("user__assigned_conversations", filter=Q(**{mine: ConversationState.ACTIVE})),
            waiting=Count("user__assigned_conversations", filter=Q(**{mine: ConversationState.WAITING})),
            wrap_up=Count("user__assigned_conversations", filter=Q(**{mine: ConversationState.WRAP_UP})),
            presence_rank=Case(
                *(When(presence=presence, then=Value(rank)) for rank, presence in enumerate(PRESENCE_ORDER)),
                default=Value(len(PRESENCE_ORDER)),
                output_field=IntegerField(),
            ),
        )
        .order_by("presence_rank", "user__username")
    )


@dataclass(frozen=True)
class PresenceShare:
    """How many agents are in one presence, and their segment of the team's presence bar (x and
    width in percent, written out for SVG: never localised)."""

    presence: str
    label: str
    count: int
    x: str
    width: str


def agents_summary() -> list[AgentProfile]:
    """agents_with_load() as a list, each with `presence_label` (translated). One query."""
    agents = list(agents_with_load())
    for agent in agents:
        agent.presence_label = PRESENCE_LABELS.get(agent.presence, agent.presence)  # type: ignore[attr-defined]
    return agents


def presence_shares(agents: list[AgentProfile]) -> list[PresenceShare]:
    """One PresenceShare per presence, in PRESENCE_ORDER (no query)."""
    counts = {presence: 0 for presence in PRESENCE_ORDER}
    for agent in agents:
        counts[agent.presence] = counts.get(agent.presence, 0) + 1
    total = sum(counts.values()) or 1
    shares, x = [], 0.0
    for presence in PRESENCE_ORDER:
        width = 100 * counts[presence] / total
        shares.append(
            PresenceShare(
                presence=presence,
                label=str(PRESENCE_LABELS[presence]),
                count=counts[presence],
                x=f"{x:.3f}",
                width=f"{width:.3f}",
            )
        )
        x += width
    return shares


def conversations_in_progress(*, viewer, page_number: object = 1) -> Page:
    """The Open and Active conversations (as the viewer may see them: all of them for a supervisor):
    Open first, longest waiting first, then Active, longest worked first; a page of
    CONVERSATIONS_PER_PAGE. Two queries (the count and the page)."""
    conversations = (
        conversations_visible(viewer=viewer)
        .filter(state__in=(ConversationState.OPEN, ConversationState.ACTIVE))
        .select_related("social_profile", "messaging_account", "queue", "assigned_agent")
        .annotate(
            open_first=Case(
                When(state=ConversationState.OPEN, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
            since=Case(
                When(state=ConversationState.OPEN, then=Coalesce("queued_at", "created_at")),
                default=Coalesce("state_changed_at", "created_at"),
            ),
        )
        .order_by("open_first", "since", "pk")
    )
    page = Paginator(conversations, CONVERSATIONS_PER_PAGE).get_page(page_number)
    now = timezone.now()
    for conversation in page.object_list:
        conversation.state_label = STATE_LABELS.get(conversation.state, conversation.state)
        conversation.for_display = duration_display(now - conversation.since)
    return page
