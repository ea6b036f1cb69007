"""Work distribution: who gets an Open conversation of a queue, and the agent actions around it.

- **Push** workstreams: `queue_assign` takes the queue's next item (lowest conversation priority, then
  oldest `queued_at`, then ID) that has no pending offer, chooses an agent (`assignment_choose`) and
  offers it to them (`lifecycle.offer_make`: the offer holds the agent's capacity until accepted,
  rejected or expired), or assigns it at once when the workstream auto-accepts; then the next item,
  until no item is left or no agent can take one. It runs in the routing task right after a new
  conversation is routed (up to that item: one task per new conversation); when an item is queued
  again (reopened, transferred, declined: up to that item), an agent's capacity is released or their
  presence changes, and a member is added (routing/apps.py subscribes to those events and queues the
  `routing` task); and every 15 s from the assignment sweep (a lost enqueue).
- **Pick** workstreams: nobody is offered anything; a member of the queue takes an item
  (`conversation_pick`).
- **Transfer** (`conversation_transfer`): back to Open in a queue, assignment runs again; to an agent,
  the conversation is offered to them in the same transaction.

The decision (`agents_eligible`, `assignment_choose`): eligible = a member of the queue whose presence
the workstream allows, with room for the item's capacity units, not skipped for the item (3 declines),
with the skills the workstream's skill matching asks for. Method: highest capacity (most free units;
ties: the member given work of this queue longest ago first, never first of all) or advanced round robin
(the member given work of this queue longest ago first). Affinity ("keep the same agent"): the previous
agent wins when eligible. It is one query whatever the number of agents (the members with their
profiles, and their skills with skill matching), two when someone declined the item already (the
declines); `bench/assignment_decision.py` measures it.

Races: several workers may distribute one queue at once. Nothing here locks or checks more than the
lifecycle does: an offer needs the conversation Open (locked) and no pending offer (a partial unique
constraint), capacity is taken by a conditional UPDATE. A worker that loses a race gets
LifecycleConflict or CapacityExhausted and goes on with the next pair."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from agents.models import AgentProfile
from omnichannel import lifecycle
from omnichannel.lifecycle import CapacityExhausted, LifecycleConflict
from omnichannel.models import Conversation, ConversationState

from .conditions import OpeningPeriod, queue_open_at, skills_normalize
from .models import (
    AssignmentMethod,
    DistributionMode,
    Offer,
    OfferState,
    Queue,
    QueueHoliday,
    QueueMembership,
    QueueOperatingHours,
    SkillMatching,
    WaitAction,
    Workstream,
)

logger = logging.getLogger(__name__)

# How many items one queue_assign run looks at before it stops (the next event or sweep goes on).
QUEUE_ASSIGN_ITEMS_MAX = 1000
OFFER_TIMEOUT_DEFAULT_SECONDS = 120

# Shown to the agent who met them, in their language (str() when raised: the message is a str).
PICK_REFUSED_PUSH = _("This conversation's workstream distributes work itself (push): wait for an offer.")
PICK_LOST = _("Another agent picked this conversation first.")


# --- The decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A member of the queue who could take the item."""

    agent_id: int
    free_units: int
    last_assigned_at: datetime.datetime | None
    skills: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemFacts:
    """What the decision needs to know about one item."""

    conversation_id: int
    units: int
    skills: Mapping[str, int]
    previous_agent_id: int | None
    # Whether any agent declined it (rejected, let expire) yet: only then are the declines counted.
    declined: bool = True


def item_facts(*, conversation: Conversation) -> ItemFacts:
    """The facts of a conversation the decision reads (no query when its workstream is loaded;
    `queue_items_waiting` annotates whether it was declined, else that is read with the decision)."""
    # Classification's own normalisation (a list of names means level 1), as routing recorded it.
    written = skills_normalize((conversation.routing or {}).get("attributes", {}).get("skills") or {})
    return ItemFacts(
        conversation_id=conversation.pk,
        units=lifecycle.conversation_capacity_units(conversation),
        skills={name.casefold(): level for name, level in written.items()},
        previous_agent_id=conversation.previous_agent_id,
        declined=getattr(conversation, "has_declines", True),
    )


def agents_eligible(
    *,
    queue_id: int,
    workstream: Workstream,
    units: int,
    skills: Mapping[str, int],
    skipped: Iterable[int] = (),
) -> list[Candidate]:
    """The members of the queue who may get an item needing `units` and `skills` ({name: minimum
    level}, names in lower case): presence allowed by the workstream, `units` free, not `skipped`, and
    with skill matching "exact" every skill at its level at least. One query: with skill matching, the
    members come with their skills (a row per member and skill)."""
    wanted = dict(skills) if workstream.skill_matching != SkillMatching.NONE else {}
    fields = [
        "user_id",
        "user__agent_profile__capacity",
        "user__agent_profile__capacity_used",
        "last_assigned_at",
    ]
    if wanted:
        fields += [
            "user__agent_profile__agent_skills__skill__name",
            "user__agent_profile__agent_skills__level",
        ]
    rows = (
        QueueMembership.objects.filter(
            queue_id=queue_id,
            user__agent_profile__presence__in=list(workstream.allowed_presences or ()),
            user__agent_profile__capacity__gte=F("user__agent_profile__capacity_used") + units,
        )
        .exclude(user_id__in=list(skipped))
        .order_by()
        .values_list(*fields)
    )
    members: dict[int, tuple[int, datetime.datetime | None]] = {}
    held: dict[int, dict[str, int]] = {}
    for user_id, capacity, used, last_assigned_at, *skill in rows:
        members[user_id] = (capacity - used, last_assigned_at)
        held.setdefault(user_id, {})
        if skill and skill[0] is not None and (name := skill[0].casefold()) in wanted:
            held[user_id][name] = skill[1]
    candidates = [
        Candidate(agent_id=user_id, free_units=free, last_assigned_at=last, skills=held[user_id])
        for user_id, (free, last) in members.items()
    ]
    if wanted and workstream.skill_matching == SkillMatching.EXACT:
        candidates = [
            c for c in candidates if all(c.skills.get(name, 0) >= level for name, level in wanted.items())
        ]
    return candidates


def _round_robin_key(candidate: Candidate) -> tuple:
    # Never given work of this queue first, then the longest ago; the agent's ID settles the rest.
    last = candidate.last_assigned_at
    return (last is not None, last or datetime.datetime.min.replace(tzinfo=datetime.UTC), candidate.agent_id)


def _skills_key(candidate: Candidate, wanted: Mapping[str, int]) -> tuple[int, int]:
    # Closest match: more required skills met at their level, then more of the required levels held.
    met = sum(1 for name, level in wanted.items() if candidate.skills.get(name, 0) >= level)
    closeness = sum(min(candidate.skills.get(name, 0), level) for name, level in wanted.items())
    return (-met, -closeness)


def candidates_rank(
    *, candidates: list[Candidate], workstream: Workstream, skills: Mapping[str, int]
) -> list[Candidate]:
    """The candidates best first, by the workstream's skill matching ("closest": the best match first)
    and assignment method. Pure: no query."""

    def key(candidate: Candidate) -> tuple:
        parts: tuple = ()
        if workstream.skill_matching == SkillMatching.CLOSEST and skills:
            parts += _skills_key(candidate, skills)
        if workstream.assignment_method == AssignmentMethod.HIGHEST_CAPACITY:
            parts += (-candidate.free_units,)
        return parts + _round_robin_key(candidate)

    return sorted(candidates, key=key)


def assignment_choose(
    *,
    facts: ItemFacts,
    queue_id: int,
    workstream: Workstream,
    skipped: Iterable[int] | None = None,
) -> Candidate | None:
    """The agent to give the item to, or None when nobody is eligible. The previous agent wins when
    the workstream keeps the same agent and they are eligible. `skipped`: the agents who declined the
    item OFFER_DECLINES_MAX times (read when not given and the item was declined: one query)."""
    if skipped is None:
        skipped = (
            lifecycle.offer_skipped_agents(conversation_id=facts.conversation_id) if facts.declined else ()
        )
    candidates = agents_eligible(
        queue_id=queue_id, workstream=workstream, units=facts.units, skills=facts.skills, skipped=skipped
    )
    if not candidates:
        return None
    if workstream.keep_same_agent and facts.previous_agent_id is not None:
        for candidate in candidates:
            if candidate.agent_id == facts.previous_agent_id:
                return candidate
    return candidates_rank(candidates=candidates, workstream=workstream, skills=facts.skills)[0]


# --- Push: offering a queue's items --------------------------------------------------------------


def queue_items_waiting(*, queue_id: int):
    """The queue's Open items of push workstreams without a pending offer, in the order they are
    given out: conversation priority (lower first), then the oldest queued, then the ID. Each is
    annotated `has_declines` (an agent rejected it or let an offer expire)."""
    pending = Offer.objects.filter(conversation_id=OuterRef("pk"), state=OfferState.PENDING)
    declined = Offer.objects.filter(
        conversation_id=OuterRef("pk"), state__in=(OfferState.REJECTED, OfferState.EXPIRED)
    )
    return (
        Conversation.objects.filter(
            queue_id=queue_id,
            state=ConversationState.OPEN,
            workstream__distribution_mode=DistributionMode.PUSH,
        )
        .exclude(Exists(pending))
        .annotate(has_declines=Exists(declined))
        .order_by("priority", F("queued_at").asc(nulls_first=True), "pk")
    )


def queue_is_open(*, queue: Queue, at: datetime.datetime) -> bool:
    """Whether the queue is within its operating hours at `at`. Its hours and holidays are read only
    when it has some (`has_hours`, `has_holidays`: annotated by `queue_assign`): most queues are open
    all the time, and this runs for every new conversation."""
    if not (queue.has_hours or queue.has_holidays):  # type: ignore[attr-defined]
        return True
    return queue_open_at(
        at=at,
        timezone_name=queue.timezone,
        periods=[OpeningPeriod(p.weekday, p.start, p.end) for p in queue.operating_hours.all()],
        holidays=[h.date for h in queue.holidays.all()],
    )


def queue_assign(*, queue_id: int, until: int | None = None) -> int:
    """Offer (or with auto-accept, assign) the queue's waiting items to its eligible members, best
    item first, until no item is left or nobody can take one. Returns how many items were given out.

    `until`: the conversation whose arrival asked for this run (routed, reopened, transferred, declined).
    The run stops once that item was given out or nobody could take it: the items ahead of it went
    first, and those behind it wait for their own runs (each queued item asks for one) or the
    assignment sweep. When that item is not waiting any more (given out meanwhile) it is a full run.

    Safe to run in several workers at once on one queue: a lost race (the item offered or taken
    meanwhile, the agent's room taken) skips that pair and goes on. While the queue is out of its
    operating hours its items wait (its overflow rules were applied when they were queued), except
    those routing assigned anyway; the assignment sweep gives them out once it opens."""
    queue = (
        Queue.objects.filter(pk=queue_id)
        .annotate(
            has_hours=Exists(QueueOperatingHours.objects.filter(queue_id=OuterRef("pk"))),
            has_holidays=Exists(QueueHoliday.objects.filter(queue_id=OuterRef("pk"))),
        )
        .only("timezone")
        .first()
    )
    if queue is None:
        return 0
    waiting = queue_items_waiting(queue_id=queue_id).select_related("workstream")
    if not queue_is_open(queue=queue, at=timezone.now()):
        waiting = waiting.filter(routing__assign_anyway=True)
    given = 0
    passed: set[int] = set()
    User = get_user_model()
    while len(passed) < QUEUE_ASSIGN_ITEMS_MAX:
        item = waiting.exclude(pk__in=passed).first()
        if item is None:
            break
        last = item.pk == until
        workstream = item.workstream
        facts = item_facts(conversation=item)
        candidate = assignment_choose(facts=facts, queue_id=queue_id, workstream=workstream)
        if candidate is None:
            passed.add(item.pk)
            if last or not agents_eligible(queue_id=queue_id, workstream=workstream, units=1, skills={}):
                break  # nobody of this queue can take anything now: the next event runs again
            continue
        agent = User(pk=candidate.agent_id)
        try:
            _give(item=item, workstream=workstream, agent=agent, queue_id=queue_id, units=facts.units)
        except (LifecycleConflict, CapacityExhausted) as error:
            logger.info(
                "Assignment lost a race queue=%s conversation=%s agent=%s: %s",
                queue_id,
                item.pk,
                candidate.agent_id,
                error.message,
            )
            # The item may still be waiting (the agent's room went meanwhile): not again in this run,
            # so that a stuck pair cannot spin; the next event or the sweep takes it up.
            passed.add(item.pk)
        else:
            given += 1
        if last:
            break
    return given


def _give(
    *, item: Conversation, workstream: Workstream, agent: AbstractBaseUser, queue_id: int, units: int
) -> None:
    """Offer the item to the agent, and accept it at once for them when the workstream auto-accepts
    (through the offer, so that the item's one-pending-offer constraint decides every race alike)."""
    now = timezone.now()
    with transaction.atomic():
        offer = lifecycle.offer_make(
            conversation=item,
            agent=agent,
            queue=Queue(pk=queue_id),
            timeout_seconds=workstream.offer_timeout_seconds,
            units=units,
        )
        if workstream.auto_accept:
            lifecycle.offer_accept(offer_id=offer.pk, agent=agent)
        QueueMembership.objects.filter(queue_id=queue_id, user_id=agent.pk).update(last_assigned_at=now)


def agent_queues_assign(*, agent_id: int) -> int:
    """Run assignment for every queue the agent is a member of, the highest priority (lowest number)
    first (the agent has room or an allowed presence again). Nothing when the agent has no room or a
    presence no push workstream allows (gone Away or Offline). Returns how many items were given out."""
    profile = (
        AgentProfile.objects.filter(user_id=agent_id).values("presence", "capacity", "capacity_used").first()
    )
    if profile is None or profile["capacity_used"] >= profile["capacity"]:
        return 0
    allowed = Workstream.objects.filter(distribution_mode=DistributionMode.PUSH).values_list(
        "allowed_presences", flat=True
    )
    if not any(profile["presence"] in (presences or ()) for presences in allowed):
        return 0
    queue_ids = list(
        QueueMembership.objects.filter(user_id=agent_id)
        .order_by("queue__priority", "queue__name")
        .values_list("queue_id", flat=True)
    )
    return sum(queue_assign(queue_id=queue_id) for queue_id in queue_ids)


# --- Pick and transfer ---------------------------------------------------------------------------


def conversation_pick(*, conversation: Conversation, agent: AbstractBaseUser) -> Conversation:
    """A member of the conversation's queue takes it (pick workstreams): it becomes Active with them,
    holding their capacity (CapacityExhausted when they have no room).

    Raises LifecycleConflict when the workstream pushes work (agents wait for offers) or when another
    agent picked it first (of two agents picking at once, one wins), PermissionDenied when the agent is
    not a member of its queue."""
    current = Conversation.objects.select_related("workstream").filter(pk=conversation.pk).first()
    if current is None:
        raise LifecycleConflict(gettext("The conversation no longer exists."))
    if current.workstream is not None and current.workstream.distribution_mode == DistributionMode.PUSH:
        raise LifecycleConflict(str(PICK_REFUSED_PUSH))
    if (
        current.queue_id is None
        or not QueueMembership.objects.filter(queue_id=current.queue_id, user_id=agent.pk).exists()
    ):
        raise PermissionDenied(gettext("You can pick only conversations of your queues."))
    if current.state != ConversationState.OPEN and current.assigned_agent_id not in (None, agent.pk):
        raise LifecycleConflict(str(PICK_LOST))
    try:
        return lifecycle.conversation_transition(
            conversation=current, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )
    except LifecycleConflict:
        taken_by = (
            Conversation.objects.filter(pk=conversation.pk)
            .values_list("assigned_agent_id", flat=True)
            .first()
        )
        if taken_by is not None and taken_by != agent.pk:
            raise LifecycleConflict(str(PICK_LOST)) from None
        raise


def conversation_transfer(
    *,
    conversation: Conversation,
    actor: AbstractBaseUser | None,
    queue: Queue | None = None,
    agent: AbstractBaseUser | None = None,
    note: str = "",
) -> Conversation:
    """Transfer a conversation (Open, Active or Waiting) to `queue`, to `agent`, or to both (`agent`
    in `queue`): it goes back to Open in `queue` (or its own queue; its workstream's fallback queue
    when it has none), its capacity released, and assignment runs again. With `agent`, it is offered
    to them in the same transaction (whether or not they are a member of the queue): when they have
    no room (CapacityExhausted) nothing is transferred.

    Raises ValidationError when neither a queue nor an agent is given or no queue can hold it,
    LifecycleConflict when its state does not allow a transfer (Wrap-up, Closed) or it changed
    meanwhile."""
    if queue is None and agent is None:
        raise ValidationError(gettext("Give the queue or the agent to transfer to (or both)."))
    with transaction.atomic():
        current = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("workstream")
            .filter(pk=conversation.pk)
            .first()
        )
        if current is None:
            raise LifecycleConflict(gettext("The conversation no longer exists."))
        if agent is not None:
            # Two agents' capacity changes here (released, then held by the offer): their profiles are
            # locked first, by user ID, so that two transfers the other way round cannot deadlock.
            agent_ids = {current.assigned_agent_id, agent.pk} - {None}
            list(
                AgentProfile.objects.select_for_update()
                .filter(user_id__in=agent_ids)
                .order_by("user_id")
                .values_list("pk", flat=True)
            )
        target = queue
        if target is None and current.queue_id is None and current.workstream is not None:
            target = current.workstream.fallback_queue
        if target is None and current.queue_id is None:
            raise ValidationError(
                gettext("This conversation is in no queue: give the queue to transfer it to.")
            )
        moved = lifecycle.conversation_transition(
            conversation=current, action=lifecycle.TRANSFER, actor=actor, queue=target, note=note
        )
        if agent is not None:
            timeout = (
                current.workstream.offer_timeout_seconds
                if current.workstream is not None
                else OFFER_TIMEOUT_DEFAULT_SECONDS
            )
            try:
                lifecycle.offer_make(
                    conversation=moved,
                    agent=agent,
                    queue=Queue(pk=moved.queue_id),
                    timeout_seconds=timeout,
                )
            except CapacityExhausted as error:
                raise CapacityExhausted(
                    gettext("Not transferred: %(reason)s") % {"reason": error.message}
                ) from None
    for name in ("state", "queue_id", "assigned_agent_id", "previous_agent_id", "capacity_held"):
        setattr(conversation, name, getattr(moved, name))
    return moved


# --- Sweeps (periodic, maintenance queue) --------------------------------------------------------


def queues_with_waiting_items() -> list[int]:
    """The queues that hold Open items of push workstreams without a pending offer (what the
    assignment sweep runs assignment for: the recovery for a lost enqueue), highest priority first."""
    pending = Offer.objects.filter(conversation_id=OuterRef("pk"), state=OfferState.PENDING)
    waiting = Conversation.objects.filter(
        queue_id=OuterRef("pk"),
        state=ConversationState.OPEN,
        workstream__distribution_mode=DistributionMode.PUSH,
    ).exclude(Exists(pending))
    return list(
        Queue.objects.filter(Exists(waiting)).order_by("priority", "name").values_list("pk", flat=True)
    )


def queues_wait_overflow(*, now: datetime.datetime | None = None) -> int:
    """Apply each queue's overflow after queueing to its Open items that have waited longer than
    `wait_limit_seconds`: end with the queue's `wait_message` (sent through the outbound path, then
    closed, as routing's "end with a message") or transfer to `wait_transfer_queue`. Applied once per
    conversation (recorded as `routing["wait_overflow"]`, so a queue that transfers to another with a
    limit cannot bounce it on). Returns how many items overflowed."""
    now = now or timezone.now()
    applied = 0
    for queue in (
        Queue.objects.filter(wait_limit_seconds__isnull=False)
        .exclude(wait_action="")
        .select_related("wait_transfer_queue")
    ):
        cutoff = now - datetime.timedelta(seconds=queue.wait_limit_seconds)
        due = (
            Conversation.objects.filter(queue=queue, state=ConversationState.OPEN, queued_at__lte=cutoff)
            .exclude(routing__has_key="wait_overflow")
            .order_by("queued_at", "pk")
            .values_list("pk", flat=True)
        )
        for conversation_id in list(due):
            try:
                applied += _wait_overflow_apply(
                    conversation_id=conversation_id, queue=queue, cutoff=cutoff, now=now
                )
            except LifecycleConflict as error:
                logger.info("Wait overflow skipped conversation=%s: %s", conversation_id, error.message)
    return applied


def _wait_overflow_apply(
    *, conversation_id: int, queue: Queue, cutoff: datetime.datetime, now: datetime.datetime
) -> bool:
    from .services import Outcome, Overflow, RoutingDecision, _overflow_end

    with transaction.atomic():
        # 1. The conversation, locked, still waiting in this queue past the limit and not overflowed.
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("workstream")
            .filter(pk=conversation_id, queue=queue, state=ConversationState.OPEN, queued_at__lte=cutoff)
            .exclude(routing__has_key="wait_overflow")
            .first()
        )
        if conversation is None:
            return False
        record = {
            "at": now.isoformat(),
            "queue": {"id": queue.pk, "name": queue.name},
            "waited_seconds": int((now - conversation.queued_at).total_seconds()),
            "action": queue.wait_action,
            "transfer_to": (
                {"id": queue.wait_transfer_queue.pk, "name": queue.wait_transfer_queue.name}
                if queue.wait_transfer_queue
                else None
            ),
        }
        conversation.routing = {**(conversation.routing or {}), "wait_overflow": record}
        Conversation.objects.filter(pk=conversation_id).update(routing=conversation.routing)
        reason = f"Waited longer than {queue.wait_limit_seconds} s in {queue.name}."
        if queue.wait_action == WaitAction.TRANSFER:
            lifecycle.conversation_transition(
                conversation=conversation,
                action=lifecycle.TRANSFER,
                queue=queue.wait_transfer_queue,
                note=f"{reason} Transferred to {queue.wait_transfer_queue.name}.",
            )
        else:
            overflow = Overflow(
                queue=queue, condition="wait", action=queue.wait_action, message=queue.wait_message
            )
            _overflow_end(
                conversation=conversation,
                decision=RoutingDecision(
                    workstream=conversation.workstream,
                    queue=queue,
                    outcome=Outcome.ENDED,
                    reason=reason,
                    overflow=overflow,
                ),
            )
    logger.info(
        "Wait overflow conversation=%s queue=%s action=%s", conversation_id, queue.pk, queue.wait_action
    )
    return True


def conversations_auto_close(*, now: datetime.datetime | None = None) -> int:
    """Close Waiting conversations inactive (no message, no state change) for their workstream's
    `auto_close_after_minutes`. Returns how many were closed."""
    from omnichannel.services import conversation_close

    now = now or timezone.now()
    closed = 0
    for workstream_id, minutes in Workstream.objects.filter(
        auto_close_after_minutes__isnull=False
    ).values_list("pk", "auto_close_after_minutes"):
        cutoff = now - datetime.timedelta(minutes=minutes)
        inactive = Q(
            state=ConversationState.WAITING, workstream_id=workstream_id, state_changed_at__lte=cutoff
        ) & (Q(last_message_at__isnull=True) | Q(last_message_at__lte=cutoff))
        for conversation_id in list(Conversation.objects.filter(inactive).values_list("pk", flat=True)):
            with transaction.atomic():
                # Locked as the message path locks it: a customer writing now either reopens it first
                # (it is no longer inactive here) or finds it closed and starts a new conversation.
                conversation = (
                    Conversation.objects.select_for_update(of=("self",))
                    .select_related("workstream")
                    .filter(inactive, pk=conversation_id)
                    .first()
                )
                if conversation is None:
                    continue
                conversation_close(conversation=conversation)
                closed += 1
    return closed
