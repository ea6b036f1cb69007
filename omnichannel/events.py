"""Domain events: what core services announce once their transaction commits.

A service calls `emit(NAME, ...)` inside its transaction; subscribers (`subscribe`, from an app's
`ready()`) are called after the commit, each on its own (one failing is logged and does not stop the
others), never when the transaction rolls back. Subscribers do little: they queue a task or notify a
page. Nobody polls another app's tables for these facts.

Work that must not be lost is never carried by an event alone: the row that needs the work is written
first (a conversation Open in a queue, an offer past its expiry) and a periodic sweep finds it when a
subscriber's enqueue was lost."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

CONVERSATION_OPENED = "conversation.opened"
MESSAGE_RECEIVED = "message.received"
# A conversation is Open in a queue and waits for an agent (routed, reopened, transferred).
CONVERSATION_QUEUED = "conversation.queued"
CONVERSATION_OFFERED = "conversation.offered"
OFFER_ANSWERED = "offer.answered"
CONVERSATION_ASSIGNED = "conversation.assigned"
CONVERSATION_STATE_CHANGED = "conversation.state_changed"
# An agent has room again (a conversation or an offer released capacity).
AGENT_CAPACITY_RELEASED = "agent.capacity_released"
AGENT_PRESENCE_CHANGED = "agent.presence_changed"
QUEUE_MEMBER_ADDED = "queue.member_added"


@dataclass(frozen=True)
class DomainEvent:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[DomainEvent], None]

_subscribers: dict[str, list[Subscriber]] = defaultdict(list)


def subscribe(name: str, subscriber: Subscriber) -> None:
    """Call `subscriber(event)` after every commit that emitted `name` (once per subscriber)."""
    if subscriber not in _subscribers[name]:
        _subscribers[name].append(subscriber)


def emit(name: str, **data: Any) -> None:
    """Announce `name` with `data` (IDs and plain values) once the current transaction commits (at
    once outside a transaction). What open pages show is told to them in the transaction itself
    (omnichannel.live: a notice commits with the change, or not at all)."""
    _live_notice(name, data)
    transaction.on_commit(partial(_deliver, DomainEvent(name=name, data=data)))


def _live_notice(name: str, data: dict[str, Any]) -> None:
    from . import live

    conversation_id, agent_id, queue_id = (
        data.get("conversation_id"),
        data.get("agent_id"),
        data.get("queue_id"),
    )
    if name in (CONVERSATION_STATE_CHANGED, CONVERSATION_ASSIGNED):
        extra = {"state": data["to_state"]} if "to_state" in data else {}
        live.publish(
            live.CONVERSATION,
            agent_id=agent_id,
            conversation_id=conversation_id,
            queue_id=queue_id,
            supervisors=True,
            **extra,
        )
    elif name in (CONVERSATION_OFFERED, OFFER_ANSWERED):
        # Supervisors too: a pending offer holds the agent's capacity (their load on the dashboard).
        live.publish(
            live.OFFER,
            agent_id=agent_id,
            conversation_id=conversation_id,
            supervisors=True,
            offer=data.get("offer_id"),
        )
    elif name == CONVERSATION_QUEUED:
        live.publish(live.QUEUE, conversation_id=conversation_id, queue_id=queue_id, supervisors=True)
    elif name in (AGENT_PRESENCE_CHANGED, AGENT_CAPACITY_RELEASED):
        live.publish(live.AGENT, agent_id=agent_id, supervisors=True)


def _deliver(event: DomainEvent) -> None:
    for subscriber in list(_subscribers.get(event.name, ())):
        try:
            subscriber(event)
        except Exception:
            logger.exception("Subscriber %s failed on %s %s", subscriber, event.name, event.data)
