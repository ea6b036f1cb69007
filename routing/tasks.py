"""Routing tasks: thin, take IDs, call one service, safe to run twice (a conversation is routed once)."""

from __future__ import annotations

import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def conversation_route(conversation_pk: int) -> None:
    """Classify and route a new conversation (routing queue). A failure leaves it due for routing:
    the sweep queues it again QUEUE_SWEEP_AFTER_SECONDS later."""
    services.conversation_route(conversation_id=conversation_pk)


@shared_task(ignore_result=True)
def conversations_routing_sweep() -> None:
    """Queue again the routing of conversations whose enqueue or worker was lost (maintenance queue)."""
    count = services.conversations_routing_sweep()
    if count:
        logger.info("Routing sweep queued %s conversations", count)
