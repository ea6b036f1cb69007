"""LINE tasks: thin, take IDs, call one service, own their retry policy, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError

from . import services
from .client import LineApiError
from .models import EventState

logger = logging.getLogger(__name__)

DELIVERY_MAX_RETRIES = 5
EVENT_RETRY_SECONDS = 5
EVENT_QUICK_RETRIES = 2


@shared_task(acks_late=True, ignore_result=True)
def line_events_process(event_pks: list[int]) -> None:
    """Turn stored webhook events into conversation records (inbound queue): these events, and
    other due events while its transactions have room (under load a task carries several; a task
    whose events were taken finds nothing to do). An event that fails for a passing reason stays
    pending with its error. Its first EVENT_QUICK_RETRIES retries come after 5 and 10 s (most
    failures pass: a deadlock, a database restart); after that the periodic sweep takes it up
    every few minutes, until it is marked failed after MAX_ATTEMPTS tries."""
    processed = services.line_events_process(event_pks=event_pks)
    again = [
        event
        for event in processed
        if event.state == EventState.PENDING and event.attempts <= EVENT_QUICK_RETRIES
    ]
    if again:
        tries = max(event.attempts for event in again)
        pks = [event.pk for event in again]
        services.line_events_mark_enqueued(event_pks=pks)
        line_events_process.apply_async((pks,), countdown=EVENT_RETRY_SECONDS * 2 ** (tries - 1))


@shared_task(acks_late=True, ignore_result=True)
def line_message_content_fetch(attachment_pk: int) -> None:
    """Download a customer's media from LINE's data host; LINE's 202 (not ready) is tried again
    later (the attachment is due then: the sweep queues it should this enqueue be lost)."""
    retry_in = services.line_attachment_fetch(attachment_pk=attachment_pk)
    if retry_in is not None:
        line_message_content_fetch.apply_async((attachment_pk,), countdown=retry_in)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=DELIVERY_MAX_RETRIES)
def line_message_deliver(self, message_pk: int) -> None:
    """Send one outbound message to LINE (outbound queue). 429, 5xx and timeouts are retried with
    backoff; after the last try the message is marked failed with LINE's reason."""
    try:
        services.line_message_deliver(message_pk=message_pk)
    except LineApiError as error:
        if error.retryable and self.request.retries < self.max_retries:
            countdown = min(2 * 3**self.request.retries, 600)
            services.line_message_delivery_retrying(message_pk=message_pk, error=error, countdown=countdown)
            raise self.retry(countdown=countdown, exc=error) from error
        services.line_message_delivery_failed(message_pk=message_pk, error=error)
    except DatabaseError:
        raise  # passing (the database restarting): the sweep queues the message again
    except Exception as error:
        # A bug or data no retry can pass: failed with the reason rather than pending for ever, which
        # would also hold up the conversation's next messages (they go in order).
        logger.exception("LINE delivery failed unexpectedly message=%s", message_pk)
        failure = LineApiError(
            None, f"The message could not be sent: {type(error).__name__}: {error}", permanent=True
        )
        services.line_message_delivery_failed(message_pk=message_pk, error=failure)


@shared_task(ignore_result=True)
def line_events_sweep() -> None:
    """Enqueue stored events that were never processed (for example while the broker was down)."""
    count = services.line_events_sweep()
    if count:
        logger.info("LINE events sweep enqueued %s pending events", count)


@shared_task(ignore_result=True)
def line_attachments_sweep() -> None:
    """Queue again the media downloads whose enqueue or worker was lost."""
    count = services.line_attachments_sweep()
    if count:
        logger.info("LINE attachments sweep queued %s downloads", count)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=3)
def line_conversation_mark_read(self, conversation_pk: int) -> None:
    """Send LINE's "read" mark for a conversation (outbound queue)."""
    try:
        services.line_conversation_mark_read(conversation_pk=conversation_pk)
    except LineApiError as error:
        if error.retryable:
            raise self.retry(countdown=5 * 2**self.request.retries, exc=error) from error
        logger.warning("LINE mark as read refused conversation=%s error=%s", conversation_pk, error)


@shared_task(ignore_result=True)
def line_conversation_typing(conversation_pk: int, seconds: int = 20) -> None:
    """Show the typing (loading) indicator to the customer; useless later, so never retried."""
    services.line_conversation_typing(conversation_pk=conversation_pk, seconds=seconds)
