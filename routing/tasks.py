"""Routing tasks: thin, take IDs, call one service, safe to run twice (a conversation is routed once)."""

from __future__ import annotations

import logging

from celery import shared_task

from omnichannel import lifecycle

from . import distribution, services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def conversation_route(conversation_pk: int) -> None:
    """Classify and route a new conversation, then give it out (routing queue). A failure to route
    leaves it due for routing: the sweep queues it again QUEUE_SWEEP_AFTER_SECONDS later."""
    services.conversation_route(conversation_id=conversation_pk)


@shared_task(ignore_result=True)
def conversations_routing_sweep() -> None:
    """Queue again the routing of conversations whose enqueue or worker was lost (maintenance queue)."""
    count = services.conversations_routing_sweep()
    if count:
        logger.info("Routing sweep queued %s conversations", count)


# --- Distribution (routing queue: thin, idempotent; a lost one is made up by the assignment sweep) ---


@shared_task(acks_late=True, ignore_result=True)
def queue_assign(queue_pk: int, conversation_pk: int | None = None) -> None:
    """Offer (or assign) a push queue's waiting items to its eligible members; up to the conversation
    whose queueing asked for the run, when given (distribution.queue_assign's `until`)."""
    given = distribution.queue_assign(queue_id=queue_pk, until=conversation_pk)
    if given:
        logger.info("Assignment gave out %s items queue=%s", given, queue_pk)


@shared_task(acks_late=True, ignore_result=True)
def agent_queues_assign(agent_pk: int) -> None:
    """Run assignment for each of the agent's queues, highest priority first (room or presence again)."""
    distribution.agent_queues_assign(agent_id=agent_pk)


# --- Sweeps (maintenance queue) -------------------------------------------------------------------


@shared_task(ignore_result=True)
def offers_expire() -> None:
    """Expire pending offers past their time (the item is queued again: offered to the next agent)."""
    count = lifecycle.offers_expire()
    if count:
        logger.info("Offers expired: %s", count)


@shared_task(ignore_result=True)
def assignment_sweep() -> None:
    """Queue assignment for every push queue with waiting items (the recovery for lost enqueues)."""
    for queue_pk in distribution.queues_with_waiting_items():
        try:
            queue_assign.delay(queue_pk)
        except Exception:
            logger.exception("Assignment not queued (the next sweep will) queue=%s", queue_pk)
            break


@shared_task(ignore_result=True)
def queues_wait_overflow() -> None:
    """Apply the queues' overflow after queueing to items waiting longer than their limit."""
    count = distribution.queues_wait_overflow()
    if count:
        logger.info("Wait overflow applied to %s items", count)


@shared_task(ignore_result=True)
def conversations_auto_close() -> None:
    """Close Waiting conversations inactive for their workstream's auto-close time."""
    count = distribution.conversations_auto_close()
    if count:
        logger.info("Auto-closed %s waiting conversations", count)


@shared_task(ignore_result=True)
def wrap_up_capacity_release_due() -> None:
    """Release the capacity held in wrap-up past the workstream's "for N minutes"."""
    count = lifecycle.wrap_up_capacity_release_due()
    if count:
        logger.info("Wrap-up capacity released for %s conversations", count)
