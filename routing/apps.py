"""The routing app. On start it subscribes distribution to the domain events that give work out
(routing/distribution.py says when assignment runs); each handler only queues a task on the `routing`
queue after the commit that announced the event. A lost enqueue is logged, and the assignment sweep
(every 15 s) makes it up. A conversation that routing queued needs no task: the routing task gives it
out itself."""

from __future__ import annotations

import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def _queue(task, *args) -> None:
    try:
        task.delay(*args)
    except Exception:
        logger.exception("Assignment not queued (the assignment sweep will) %s%s", task.name, args)


def on_conversation_queued(event) -> None:
    """Assignment for the queue, up to this item. Not for an item routing queued: the routing task
    gives it out itself, right after this commit (routing.services.conversation_route)."""
    from .tasks import queue_assign

    if event.data.get("routed"):
        return
    _queue(queue_assign, event.data["queue_id"], event.data["conversation_id"])


def on_queue_member_added(event) -> None:
    from .tasks import queue_assign

    _queue(queue_assign, event.data["queue_id"])


def on_agent_has_room(event) -> None:
    """Capacity released, or a presence change (the task gives work only where the presence is
    allowed: going Offline gives nothing)."""
    from .tasks import agent_queues_assign

    _queue(agent_queues_assign, event.data["agent_id"])


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"

    def ready(self) -> None:
        from omnichannel import events

        events.subscribe(events.CONVERSATION_QUEUED, on_conversation_queued)
        events.subscribe(events.QUEUE_MEMBER_ADDED, on_queue_member_added)
        events.subscribe(events.AGENT_CAPACITY_RELEASED, on_agent_has_room)
        events.subscribe(events.AGENT_PRESENCE_CHANGED, on_agent_has_room)
