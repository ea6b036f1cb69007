"""The conversation lifecycle: every state change, every offer, and the agent capacity they hold.

Nothing else writes `Conversation.state`, `assigned_agent`, `capacity_held`, `Offer.state` or
`AgentProfile.capacity_used`: the admin, the API, routing, the sweeps and the pages all call the
functions here.

States (PRODUCT.md): Open (in a queue, nobody assigned) > Active (an agent works it) > Wrap-up (the agent
ended it and writes notes) > Closed; Active > Waiting (the agent set it aside; capacity released) >
Open (the customer wrote again) or Active (the agent resumed) or Closed (auto-close). The actions and
the states they start from are the table `TRANSITIONS`; nothing else moves a conversation.

Races: every change is a conditional UPDATE on the state (and the agent and capacity) the change was
decided on; of two actions racing on one conversation, one wins and the other gets a
`LifecycleConflict` saying what the conversation is now. An agent's capacity is raised only by a
conditional UPDATE that keeps it within their capacity (`capacity_hold`); a pending offer holds the
units it promises, so two offers cannot promise the same room. At most one pending offer per
conversation: a partial unique constraint.

Lock order (every transaction here takes its rows in this order, so that two transactions never wait
on each other): 1. the conversation row, 2. its offers, 3. agent profiles, by user ID.

Each change writes a ConversationActivity row in its transaction and announces domain events
(omnichannel.events) once it commits: CONVERSATION_STATE_CHANGED, CONVERSATION_QUEUED when it lands
Open in a queue, CONVERSATION_ASSIGNED, CONVERSATION_OFFERED, OFFER_ANSWERED, AGENT_CAPACITY_RELEASED."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy

from agents.models import AgentProfile, Presence
from routing.models import OFFER_DECLINES_MAX, Offer, OfferState, Queue, WrapUpCapacity

from . import events
from .models import ActivityKind, Conversation, ConversationActivity, ConversationState

logger = logging.getLogger(__name__)

OPEN = ConversationState.OPEN
ACTIVE = ConversationState.ACTIVE
WAITING = ConversationState.WAITING
WRAP_UP = ConversationState.WRAP_UP
CLOSED = ConversationState.CLOSED


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str
    # What the refusals say the action is ("... cannot be ended.", "... it was not ended.").
    label: str


ASSIGN = "assign"
END = "end"
WAIT = "wait"
RESUME = "resume"
REOPEN = "reopen"
TRANSFER = "transfer"
CLOSE = "close"

# Every action, the states it may start from and the state it leads to: the only ways a conversation
# changes state.
TRANSITIONS: dict[str, Transition] = {
    # An agent takes it: an offer accepted, auto-accept, a pick, a resumed transfer.
    ASSIGN: Transition(frozenset({OPEN}), ACTIVE, pgettext_lazy("conversation action", "assigned")),
    # The agent ends it and writes wrap-up notes.
    END: Transition(frozenset({ACTIVE}), WRAP_UP, pgettext_lazy("conversation action", "ended")),
    # The agent sets it aside until the customer writes again (capacity released).
    WAIT: Transition(frozenset({ACTIVE}), WAITING, pgettext_lazy("conversation action", "moved to waiting")),
    # The agent takes a waiting conversation up again.
    RESUME: Transition(frozenset({WAITING}), ACTIVE, pgettext_lazy("conversation action", "resumed")),
    # The customer wrote to a waiting conversation: back into its queue (affinity may bring it back to
    # the same agent).
    REOPEN: Transition(frozenset({WAITING}), OPEN, pgettext_lazy("conversation action", "reopened")),
    # To another queue or agent: back to Open, assignment runs again.
    TRANSFER: Transition(
        frozenset({OPEN, ACTIVE, WAITING}), OPEN, pgettext_lazy("conversation action", "transferred")
    ),
    CLOSE: Transition(
        frozenset({OPEN, ACTIVE, WAITING, WRAP_UP}), CLOSED, pgettext_lazy("conversation action", "closed")
    ),
}


class LifecycleError(Exception):
    """A lifecycle change that cannot happen; `message` says why in words a user can read. `code`:
    "conflict" (the conversation or offer changed meanwhile, or the action does not apply to its state:
    HTTP 409) or "capacity" (the agent has no room left: HTTP 409 too)."""

    code = "conflict"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LifecycleConflict(LifecycleError):
    code = "conflict"


class CapacityExhausted(LifecycleError):
    code = "capacity"


# --- Capacity ------------------------------------------------------------------------------------


def conversation_capacity_units(conversation: Conversation) -> int:
    """The units a conversation holds of its agent: what classification wrote (`capacity`), else its
    workstream's units, else 1."""
    written = (conversation.routing or {}).get("attributes", {}).get("capacity")
    if isinstance(written, int) and written > 0:
        return written
    if conversation.workstream_id is not None:
        return conversation.workstream.capacity_units
    return 1


def capacity_hold(*, agent_id: int, units: int) -> None:
    """Take `units` of the agent's capacity, or raise CapacityExhausted: one conditional UPDATE, so
    concurrent holds never take the agent above their capacity. The profile is created on first use."""
    if units <= 0:
        return
    for _ in range(2):
        held = AgentProfile.objects.filter(user_id=agent_id, capacity_used__lte=F("capacity") - units).update(
            capacity_used=F("capacity_used") + units
        )
        if held:
            return
        profile = AgentProfile.objects.select_related("user").filter(user_id=agent_id).first()
        if profile is not None:
            raise CapacityExhausted(
                gettext(
                    "%(agent)s has no capacity left for this conversation (%(used)s of %(capacity)s "
                    "units in use; it needs %(units)s)."
                )
                % {
                    "agent": profile.user,
                    "used": profile.capacity_used,
                    "capacity": profile.capacity,
                    "units": units,
                }
            )
        AgentProfile.objects.get_or_create(user_id=agent_id)
    raise CapacityExhausted(gettext("The agent has no capacity left for this conversation."))


def capacity_release(*, agent_id: int | None, units: int) -> None:
    """Give back `units` of the agent's capacity (announced after the commit: assignment runs again)."""
    if agent_id is None or units <= 0:
        return
    AgentProfile.objects.filter(user_id=agent_id).update(capacity_used=F("capacity_used") - units)
    events.emit(events.AGENT_CAPACITY_RELEASED, agent_id=agent_id, units=units)


# --- State changes -------------------------------------------------------------------------------


def conversation_transition(
    *,
    conversation: Conversation,
    action: str,
    actor: AbstractBaseUser | None = None,
    agent: AbstractBaseUser | None = None,
    queue: Queue | None = None,
    note: str = "",
    offer: Offer | None = None,
) -> Conversation:
    """Apply `action` (a key of TRANSITIONS) to a conversation and return it as it is now.

    - `actor`: who did it (None: the system or the customer), recorded with the change.
    - ASSIGN: `agent` takes it; it holds its capacity units of that agent (CapacityExhausted when
      there is no room), or the units `offer` held already when `offer` (accepted) is given.
    - END: `note` is the wrap-up notes; the capacity stays held when the workstream blocks capacity
      for wrap-up (always, or for N minutes: `wrap_up_capacity_release_due` releases it then).
    - WAIT, CLOSE, TRANSFER release the capacity held; TRANSFER moves it to `queue` (or keeps its
      queue), clears the agent (kept as `previous_agent`) and leaves the target agent, if any, to the
      caller (routing offers it to them in the same transaction).
    - RESUME: the assigned agent (or `agent`) takes it up again, holding capacity.
    - Every change withdraws a pending offer of the conversation (its units released), except ASSIGN
      from that very offer.

    Raises LifecycleConflict when the action does not apply to the conversation's state, or when the
    conversation changed since it was read (the conditional UPDATE matched nothing)."""
    transition = TRANSITIONS[action]
    with transaction.atomic():
        current = (
            Conversation.objects.select_related("workstream")
            .filter(pk=conversation.pk)
            .values(
                "state",
                "assigned_agent_id",
                "capacity_held",
                "queue_id",
                "workstream__wrap_up_capacity",
            )
            .first()
        )
        if current is None:
            raise LifecycleConflict(gettext("The conversation no longer exists."))
        source = current["state"]
        if source not in transition.sources:
            raise LifecycleConflict(
                gettext("A conversation that is %(state)s cannot be %(action)s.")
                % {"state": ConversationState(source).label, "action": transition.label}
            )
        now = timezone.now()
        values: dict[str, Any] = {"state": transition.target, "state_changed_at": now}
        release_units = 0
        hold: tuple[int, int] | None = None
        working_agent_id: int | None = current["assigned_agent_id"]

        if action == ASSIGN:
            if agent is None:
                raise ValueError("ASSIGN needs the agent.")
            units = offer.capacity_units if offer is not None else conversation_capacity_units(conversation)
            working_agent_id = agent.pk
            values.update(assigned_agent_id=agent.pk, capacity_held=units)
            if offer is None:
                hold = (agent.pk, units)
        elif action == RESUME:
            working_agent_id = agent.pk if agent is not None else current["assigned_agent_id"]
            if working_agent_id is None:
                raise LifecycleConflict(
                    gettext("Nobody is assigned to this conversation: it cannot be resumed.")
                )
            units = conversation_capacity_units(conversation)
            values.update(assigned_agent_id=working_agent_id, capacity_held=units)
            hold = (working_agent_id, units)
        elif action == END:
            values["wrap_up_notes"] = note
            if current["workstream__wrap_up_capacity"] not in (WrapUpCapacity.ALWAYS, WrapUpCapacity.MINUTES):
                release_units = current["capacity_held"]
                values["capacity_held"] = 0
        elif action in (WAIT, CLOSE):
            release_units = current["capacity_held"]
            values["capacity_held"] = 0
            if action == CLOSE:
                values["closed_at"] = now
        elif action in (REOPEN, TRANSFER):
            release_units = current["capacity_held"]
            values.update(assigned_agent_id=None, capacity_held=0, queued_at=now)
            if current["assigned_agent_id"] is not None:
                values["previous_agent_id"] = current["assigned_agent_id"]
            if queue is not None:
                values["queue_id"] = queue.pk
            working_agent_id = None

        # 1. The conversation: only if it is still as read.
        changed = Conversation.objects.filter(
            pk=conversation.pk,
            state=source,
            assigned_agent_id=current["assigned_agent_id"],
            capacity_held=current["capacity_held"],
        ).update(**values)
        if not changed:
            now_state = (
                Conversation.objects.filter(pk=conversation.pk).values_list("state", flat=True).first()
            )
            label = ConversationState(now_state).label if now_state else gettext("deleted")
            raise LifecycleConflict(
                gettext("The conversation changed meanwhile (it is %(state)s now): it was not %(action)s.")
                % {"state": label, "action": transition.label}
            )
        # 2. Its pending offer, unless this change is that offer's acceptance.
        releases = _offers_withdraw(conversation_id=conversation.pk, keep=offer, now=now)
        # 3. Capacity: the profiles in user ID order, so that two changes touching the same two agents
        # (a pick withdrawing another agent's offer) cannot wait on each other.
        if release_units:
            releases.append((current["assigned_agent_id"], release_units))
        changes = [(agent_id, -units) for agent_id, units in releases]
        if hold is not None:
            changes.append(hold)
        for agent_id, units in sorted(changes, key=lambda change: (change[0] or 0, change[1])):
            if units < 0:
                capacity_release(agent_id=agent_id, units=-units)
            else:
                capacity_hold(agent_id=agent_id, units=units)

        ConversationActivity.objects.create(
            conversation_id=conversation.pk,
            kind=ActivityKind.TRANSFERRED if action == TRANSFER else ActivityKind.STATE_CHANGED,
            from_state=source,
            to_state=transition.target,
            actor=actor if actor is not None and actor.is_authenticated else None,
            agent_id=working_agent_id,
            note=note,
            data={"action": action, "queue": values.get("queue_id", current["queue_id"])},
            created_at=now,
        )
        # 4. Its running consults, once nobody works it any more (Open in a queue, or Closed).
        if transition.target in (OPEN, CLOSED):
            from .consults import consults_end_all  # consults raises this module's LifecycleConflict

            consults_end_all(conversation=conversation, actor=actor)
        for name, value in values.items():
            setattr(conversation, name, value)
        queue_id = values.get("queue_id", current["queue_id"])
        events.emit(
            events.CONVERSATION_STATE_CHANGED,
            conversation_id=conversation.pk,
            action=action,
            from_state=source,
            to_state=transition.target,
            agent_id=working_agent_id,
            queue_id=queue_id,
        )
        if action == ASSIGN:
            events.emit(events.CONVERSATION_ASSIGNED, conversation_id=conversation.pk, agent_id=agent.pk)
        if transition.target == OPEN and queue_id is not None:
            events.emit(events.CONVERSATION_QUEUED, conversation_id=conversation.pk, queue_id=queue_id)
    logger.info(
        "Conversation %s conversation=%s from=%s agent=%s actor=%s",
        action,
        conversation.pk,
        source,
        working_agent_id,
        getattr(actor, "pk", None),
    )
    return conversation


def wrap_up_capacity_release_due(*, now: datetime.datetime | None = None) -> int:
    """Release the capacity that conversations in wrap-up hold past their workstream's "for N
    minutes" (periodic). Returns how many were released."""
    now = now or timezone.now()
    released = 0
    candidates = Conversation.objects.filter(
        state=WRAP_UP, capacity_held__gt=0, workstream__wrap_up_capacity=WrapUpCapacity.MINUTES
    ).values_list(
        "pk", "assigned_agent_id", "capacity_held", "state_changed_at", "workstream__wrap_up_capacity_minutes"
    )
    for pk, agent_id, units, since, minutes in candidates:
        if since is None or since + datetime.timedelta(minutes=minutes or 0) > now:
            continue
        with transaction.atomic():
            if Conversation.objects.filter(pk=pk, state=WRAP_UP, capacity_held=units).update(capacity_held=0):
                capacity_release(agent_id=agent_id, units=units)
                released += 1
    return released


# --- Offers --------------------------------------------------------------------------------------


def offer_make(
    *,
    conversation: Conversation,
    agent: AbstractBaseUser,
    queue: Queue | None,
    timeout_seconds: int,
    units: int | None = None,
) -> Offer:
    """Offer an Open conversation to an agent until `timeout_seconds` from now; the offer holds its
    capacity units of the agent. Raises LifecycleConflict when the conversation is no longer Open or
    is offered already (the partial unique constraint decides a race), CapacityExhausted when the agent
    has no room."""
    units = conversation_capacity_units(conversation) if units is None else units
    now = timezone.now()
    with transaction.atomic():
        # 1. The conversation: Open, locked until the offer is in.
        still_open = (
            Conversation.objects.select_for_update()
            .filter(pk=conversation.pk, state=OPEN)
            .values_list("pk", flat=True)
            .first()
        )
        if still_open is None:
            raise LifecycleConflict(gettext("The conversation is no longer open: it cannot be offered."))
        # 2. The offer.
        try:
            with transaction.atomic():
                offer = Offer.objects.create(
                    conversation_id=conversation.pk,
                    agent_id=agent.pk,
                    queue=queue,
                    capacity_units=units,
                    expires_at=now + datetime.timedelta(seconds=timeout_seconds),
                )
        except IntegrityError:
            raise LifecycleConflict(gettext("The conversation is offered to an agent already.")) from None
        # 3. The agent's capacity.
        capacity_hold(agent_id=agent.pk, units=units)
        ConversationActivity.objects.create(
            conversation_id=conversation.pk,
            kind=ActivityKind.OFFERED,
            agent_id=agent.pk,
            data={
                "offer": offer.pk,
                "queue": queue.pk if queue else None,
                "expires_at": offer.expires_at.isoformat(),
            },
            created_at=now,
        )
        events.emit(
            events.CONVERSATION_OFFERED,
            conversation_id=conversation.pk,
            offer_id=offer.pk,
            agent_id=agent.pk,
            expires_at=offer.expires_at.isoformat(),
        )
    return offer


def offer_accept(*, offer_id: int, agent: AbstractBaseUser) -> Conversation:
    """The agent accepts their pending offer: the conversation becomes Active with them, holding the
    units the offer held. Raises LifecycleConflict when the offer is not theirs, not pending any more
    (answered, withdrawn) or expired."""
    now = timezone.now()
    with transaction.atomic():
        offer = (
            Offer.objects.select_related("conversation__workstream")
            .filter(pk=offer_id, agent_id=agent.pk)
            .first()
        )
        if offer is None:
            raise LifecycleConflict(gettext("There is no such offer for you."))
        # 1. The conversation, locked first (the lock order); 2. the offer, claimed by a conditional
        # UPDATE so that a late or second accept changes nothing; then the state change.
        Conversation.objects.select_for_update().filter(pk=offer.conversation_id).values_list("pk").first()
        taken = Offer.objects.filter(pk=offer.pk, state=OfferState.PENDING, expires_at__gt=now).update(
            state=OfferState.ACCEPTED, answered_at=now
        )
        if not taken:
            raise LifecycleConflict(_offer_gone_reason(offer_id=offer.pk, now=now))
        conversation = conversation_transition(
            conversation=offer.conversation, action=ASSIGN, actor=agent, agent=agent, offer=offer
        )
        _offer_answered(offer=offer, state=OfferState.ACCEPTED, now=now)
    return conversation


def offer_decline(*, offer_id: int, state: str, agent: AbstractBaseUser | None = None) -> bool:
    """Close a pending offer as REJECTED (by its agent: pass `agent`) or EXPIRED (the sweep); its units
    are released and the conversation is queued again (announced: assignment offers it to the next
    agent). An expiry also sets the agent Away when the workstream says so (`away_after_missed_offer`):
    whoever lets an offer run out is likely not at their desk, and would otherwise keep receiving, and
    missing, every item of the queue. False when the offer was not pending any more (answered
    meanwhile: nothing to do)."""
    assert state in (OfferState.REJECTED, OfferState.EXPIRED)
    now = timezone.now()
    with transaction.atomic():
        offers = Offer.objects.filter(pk=offer_id, state=OfferState.PENDING)
        if agent is not None:
            offers = offers.filter(agent_id=agent.pk)
        offer = offers.select_related("conversation__workstream").first()
        if offer is None:
            return False
        # 1. The conversation first (the lock order): the activity row written below locks it too (its
        # foreign key), so taking the offer first deadlocks with an accept of the same offer.
        Conversation.objects.select_for_update().filter(pk=offer.conversation_id).values_list("pk").first()
        if not offers.update(state=state, answered_at=now):
            return False
        capacity_release(agent_id=offer.agent_id, units=offer.capacity_units)
        workstream = offer.conversation.workstream
        if state == OfferState.EXPIRED and workstream is not None and workstream.away_after_missed_offer:
            _agent_away_after_missed_offer(agent_id=offer.agent_id, workstream=workstream, now=now)
        _offer_answered(offer=offer, state=state, now=now)
        if offer.conversation.state == OPEN and offer.conversation.queue_id is not None:
            events.emit(
                events.CONVERSATION_QUEUED,
                conversation_id=offer.conversation_id,
                queue_id=offer.conversation.queue_id,
            )
    return True


def _agent_away_after_missed_offer(*, agent_id: int, workstream: Any, now: datetime.datetime) -> None:
    """Set the agent Away if their presence is one that receives the workstream's pushed work (a
    conditional UPDATE: an agent who chose Busy - do not disturb or Offline meanwhile keeps it)."""
    if (
        AgentProfile.objects.filter(user_id=agent_id, presence__in=list(workstream.allowed_presences))
        .exclude(presence=Presence.AWAY)
        .update(presence=Presence.AWAY, presence_changed_at=now, updated_at=now)
    ):
        events.emit(
            events.AGENT_PRESENCE_CHANGED,
            agent_id=agent_id,
            presence=Presence.AWAY,
            actor_id=None,
            reason="offer_expired",
        )


def offers_expire(*, now: datetime.datetime | None = None) -> int:
    """Expire pending offers past their time (periodic); returns how many expired."""
    now = now or timezone.now()
    due = list(
        Offer.objects.filter(state=OfferState.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)
    )
    return sum(offer_decline(offer_id=pk, state=OfferState.EXPIRED) for pk in due)


def offer_declines_by_agent(*, conversation_id: int) -> dict[int, int]:
    """How many times each agent declined (rejected or let expire) this conversation."""
    counts: dict[int, int] = {}
    for agent_id in Offer.objects.filter(
        conversation_id=conversation_id, state__in=(OfferState.REJECTED, OfferState.EXPIRED)
    ).values_list("agent_id", flat=True):
        counts[agent_id] = counts.get(agent_id, 0) + 1
    return counts


def offer_skipped_agents(*, conversation_id: int) -> set[int]:
    """The agents no longer offered this conversation: OFFER_DECLINES_MAX declines."""
    return {
        a
        for a, n in offer_declines_by_agent(conversation_id=conversation_id).items()
        if n >= OFFER_DECLINES_MAX
    }


def _offers_withdraw(
    *, conversation_id: int, keep: Offer | None, now: datetime.datetime
) -> list[tuple[int, int]]:
    """Withdraw the conversation's pending offers (but `keep`); returns the (agent, units) they held,
    for the caller to release in its lock order."""
    pending = Offer.objects.filter(conversation_id=conversation_id, state=OfferState.PENDING)
    if keep is not None:
        pending = pending.exclude(pk=keep.pk)
    releases: list[tuple[int, int]] = []
    for offer_pk, agent_id, units in pending.values_list("pk", "agent_id", "capacity_units"):
        if Offer.objects.filter(pk=offer_pk, state=OfferState.PENDING).update(
            state=OfferState.WITHDRAWN, answered_at=now
        ):
            releases.append((agent_id, units))
            events.emit(
                events.OFFER_ANSWERED,
                offer_id=offer_pk,
                conversation_id=conversation_id,
                agent_id=agent_id,
                state=OfferState.WITHDRAWN,
            )
    return releases


def _offer_answered(*, offer: Offer, state: str, now: datetime.datetime) -> None:
    ConversationActivity.objects.create(
        conversation_id=offer.conversation_id,
        kind=ActivityKind.OFFER_ANSWERED,
        agent_id=offer.agent_id,
        data={"offer": offer.pk, "state": state},
        created_at=now,
    )
    events.emit(
        events.OFFER_ANSWERED,
        offer_id=offer.pk,
        conversation_id=offer.conversation_id,
        agent_id=offer.agent_id,
        state=state,
    )


def _offer_gone_reason(*, offer_id: int, now: datetime.datetime) -> str:
    row = Offer.objects.filter(pk=offer_id).values("state", "expires_at").first()
    if row is None:
        return gettext("There is no such offer for you.")
    if row["state"] == OfferState.PENDING and row["expires_at"] <= now:
        return gettext("This offer has expired.")
    if row["state"] == OfferState.WITHDRAWN:
        return gettext(
            "This offer was withdrawn: the conversation was taken, transferred or closed meanwhile."
        )
    return gettext("This offer was %(state)s already.") % {"state": OfferState(row["state"]).label.lower()}
