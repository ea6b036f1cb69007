"""What a processing task takes: its own events and, while its transaction has room, other due
events; and what one event costs in queries. Called as the worker calls the task (the worker itself:
test_end_to_end.py)."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from channels_line import tasks
from channels_line.models import EventState, LineWebhookEvent
from channels_line.services import inbound, line_webhook_receive
from omnichannel.models import Conversation, Message, SocialProfile
from tests.channels_line.payloads import body_bytes, load_payload, sign

# The production path: every transaction commits (no test transaction around them); what is queued
# after a commit is captured instead of sent (`enqueued`: no worker runs here).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _offline(no_line, enqueued):
    """LINE calls fail fast here; the customers' profiles are made fresh by the tests that need it."""


def receive(account, *, user_id: str, timestamp: int | None = None) -> LineWebhookEvent:
    payload = load_payload("message_text__user", fresh=True, user_id=user_id)
    if timestamp is not None:
        payload["events"][0]["timestamp"] = timestamp
    body = body_bytes(payload)
    line_webhook_receive(account=account, body=body, signature=sign(body, account.line.channel_secret))
    return LineWebhookEvent.objects.get(webhook_event_id=payload["events"][0]["webhookEventId"])


def customers_known(account, *user_ids: str) -> None:
    """Each customer has written before: a profile fetched from LINE a moment ago, an open
    conversation (as under steady load)."""
    for user_id in user_ids:
        tasks.line_events_process.run([receive(account, user_id=user_id).pk])
    now = timezone.now()
    SocialProfile.objects.filter(external_id__in=user_ids).update(
        profile_fetched_at=now, profile_attempted_at=now
    )


def user(n: int) -> str:
    return f"U{n:032x}"


def states(events: list[LineWebhookEvent]) -> list[str]:
    by_pk = dict(LineWebhookEvent.objects.values_list("pk", "state"))
    return [by_pk[event.pk] for event in events]


def test_a_lone_event_of_a_known_customer_is_processed_in_twelve_queries_and_a_lock(
    line_account, django_assert_max_num_queries
):
    # Read the task's events with their accounts, the customer's profile; the transaction: begin,
    # take the events, lock the conversation, the message in its savepoint (3), the last activity,
    # the outcome, the live notice of the message, commit; on PostgreSQL the thread's advisory lock
    # besides. Two more before: a savepoint per event and a second read of the same events.
    customers_known(line_account, user(1))
    event = receive(line_account, user_id=user(1))

    with django_assert_max_num_queries(12 + (connection.vendor == "postgresql")):
        tasks.line_events_process.run([event.pk])

    assert states([event]) == [EventState.PROCESSED]
    assert Message.objects.count() == 2


def test_a_task_takes_other_due_events_oldest_first_and_their_own_tasks_find_nothing_in_one_query(
    line_account, django_assert_num_queries
):
    customers_known(line_account, user(1), user(2), user(3))
    events = [receive(line_account, user_id=user(n % 3 + 1)) for n in range(6)]

    tasks.line_events_process.run([events[4].pk])

    # Its own event and the three oldest due ones: one transaction of EVENTS_PER_TRANSACTION.
    assert inbound.EVENTS_PER_TRANSACTION == 4
    processed, pending = EventState.PROCESSED, EventState.PENDING
    assert states(events) == [processed, processed, processed, pending, processed, pending]
    for taken in (events[0], events[1], events[2]):
        with django_assert_num_queries(1):
            tasks.line_events_process.run([taken.pk])
    tasks.line_events_process.run([events[3].pk])
    tasks.line_events_process.run([events[5].pk])
    assert states(events) == [EventState.PROCESSED] * 6
    assert Message.objects.count() == 3 + 6
    assert set(LineWebhookEvent.objects.values_list("attempts", flat=True)) == {1}


def test_a_customer_s_events_taken_by_a_later_event_s_task_are_processed_in_order(line_account):
    customers_known(line_account, user(1))
    start = int(timezone.now().timestamp() * 1000)
    events = [receive(line_account, user_id=user(1), timestamp=start + n) for n in range(3)]

    tasks.line_events_process.run([events[2].pk])  # the newest event's task runs first

    conversation = Conversation.objects.get()
    messages = list(conversation.messages.order_by("id").values_list("external_id", flat=True))
    assert messages[1:] == [event.raw["message"]["id"] for event in events]


def test_events_that_need_line_or_were_tried_are_left_to_their_own_tasks(line_account):
    customers_known(line_account, user(1), user(2))
    new_customer = receive(line_account, user_id=user(9))  # no profile yet: LINE is asked first
    stale = receive(line_account, user_id=user(2))
    SocialProfile.objects.filter(external_id=user(2)).update(
        profile_fetched_at=None, profile_attempted_at=None
    )
    tried = receive(line_account, user_id=user(1))
    LineWebhookEvent.objects.filter(pk=tried.pk).update(attempts=1)  # waiting for its retry
    own = receive(line_account, user_id=user(1))

    tasks.line_events_process.run([own.pk])

    assert states([new_customer, stale, tried, own]) == [EventState.PENDING] * 3 + [EventState.PROCESSED]


def test_an_event_taken_from_another_task_that_fails_leaves_the_task_s_own_event_processed(
    line_account, monkeypatch
):
    customers_known(line_account, user(1), user(2))
    handle = inbound.HANDLERS["message"]

    def fails_for_the_other(event, profile):  # stands in for a database error on that event alone
        if event.pk == other.pk:
            raise OperationalError("passing failure")
        return handle(event, profile)

    monkeypatch.setitem(inbound.HANDLERS, "message", fails_for_the_other)
    queued: list[tuple[list[int], int]] = []
    monkeypatch.setattr(
        tasks.line_events_process, "apply_async", lambda args, countdown: queued.append((args[0], countdown))
    )
    other = receive(line_account, user_id=user(2))
    own = receive(line_account, user_id=user(1))

    tasks.line_events_process.run([own.pk])

    own.refresh_from_db()
    other.refresh_from_db()
    assert own.state == EventState.PROCESSED and own.message.conversation.thread_id == user(1)
    assert (other.state, other.attempts) == (EventState.PENDING, 1)
    assert other.last_error == "OperationalError: passing failure"
    assert Message.objects.filter(conversation__thread_id=user(2)).count() == 1  # the earlier one only
    assert queued == [([other.pk], 5)]  # tried again soon, as any event of the task would be
    assert other.enqueued_at is not None


def test_concurrent_tasks_taking_each_other_s_events_process_each_event_once(line_account, caplog):
    users = [user(n) for n in range(1, 6)]
    customers_known(line_account, *users)
    events = [receive(line_account, user_id=users[n % len(users)]) for n in range(24)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(own: list[LineWebhookEvent]) -> None:
        try:
            barrier.wait()
            for event in own:  # one task per event, as the webhook queues them
                tasks.line_events_process.run([event.pk])
        except BaseException as exc:  # collected and reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(events[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    # A failed try is retried (the event ends processed, with 2 attempts): name its cause.
    failures = [
        f"{record.getMessage()}: {record.exc_info[1]!r}"
        for record in caplog.records
        if record.exc_info and "processing failed" in record.getMessage()
    ]
    assert failures == []
    assert (
        sorted(LineWebhookEvent.objects.values_list("state", "attempts")) == [(EventState.PROCESSED, 1)] * 29
    )
    assert Message.objects.count() == 29
    assert Message.objects.values("external_id").distinct().count() == 29
