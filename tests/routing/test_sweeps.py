"""The periodic jobs of distribution: offers expire, the assignment sweep (lost enqueues), waiting-time
overflow, auto-close of waiting conversations, wrap-up capacity release. Each runs through its Celery
task's function (as the worker calls it), on the real database."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.utils import timezone

from agents.models import Presence
from omnichannel import lifecycle
from omnichannel.models import Conversation, ConversationState, Direction, Message
from routing import distribution, tasks
from routing.models import DistributionMode, Offer, OfferState, WaitAction, WrapUpCapacity
from tests.factories import LineMessagingAccountFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import active_with, agent_make, item_make, used

pytestmark = pytest.mark.django_db

ROUTING_SWEEPS = {
    "routing.tasks.offers_expire": 5.0,
    "routing.tasks.assignment_sweep": 15.0,
    "routing.tasks.queues_wait_overflow": 15.0,
    "routing.tasks.conversations_auto_close": 60.0,
    "routing.tasks.wrap_up_capacity_release_due": 30.0,
}


@pytest.fixture
def account():
    return LineMessagingAccountFactory()


def test_every_distribution_sweep_is_scheduled_on_the_maintenance_queue():
    scheduled = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert {name: scheduled.get(name) for name in ROUTING_SWEEPS} == ROUTING_SWEEPS
    assert {settings.CELERY_TASK_ROUTES[name]["queue"] for name in ROUTING_SWEEPS} == {"maintenance"}
    assert settings.CELERY_TASK_ROUTES["routing.tasks.queue_assign"]["queue"] == "routing"
    assert settings.CELERY_TASK_ROUTES["routing.tasks.agent_queues_assign"]["queue"] == "routing"


class TestOffersExpire:
    def test_offers_past_their_time_expire_and_release_the_agents_room(self, account):
        queue = queue_make("Expiring")
        workstream = workstream_make("Expiring ws", fallback=queue, offer_timeout_seconds=30)
        agent = agent_make(queue)
        item_make(queue, workstream, account=account)
        distribution.queue_assign(queue_id=queue.pk)
        offer = Offer.objects.get()

        tasks.offers_expire()
        assert Offer.objects.get().state == OfferState.PENDING
        Offer.objects.filter(pk=offer.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
        tasks.offers_expire()

        assert Offer.objects.get().state == OfferState.EXPIRED
        assert used(agent) == 0


class TestAssignmentSweep:
    def test_it_queues_assignment_for_push_queues_with_items_waiting_without_an_offer(
        self, account, monkeypatch
    ):
        queued: list[int] = []
        monkeypatch.setattr(tasks.queue_assign, "delay", queued.append)
        lost = queue_make("Lost enqueue", priority=5)
        offered = queue_make("Offered already", priority=1)
        picking = queue_make("Pick queue", priority=1)
        empty = queue_make("Empty", priority=1)
        item_make(lost, workstream_make("Lost ws", fallback=lost), account=account)
        offered_ws = workstream_make("Offered ws", fallback=offered)
        agent_make(offered)
        item_make(offered, offered_ws, account=account)
        distribution.queue_assign(queue_id=offered.pk)
        item_make(
            picking,
            workstream_make("Pick ws", fallback=picking, distribution_mode=DistributionMode.PICK),
            account=account,
        )
        workstream_make("Empty ws", fallback=empty)

        tasks.assignment_sweep()

        assert queued == [lost.pk]

    def test_a_broker_outage_is_logged_and_left_to_the_next_sweep(self, account, monkeypatch, caplog):
        queue = queue_make("Broker down")
        item_make(queue, workstream_make("Down ws", fallback=queue), account=account)

        def refused(*args):
            raise ConnectionRefusedError("broker down")

        monkeypatch.setattr(tasks.queue_assign, "delay", refused)

        tasks.assignment_sweep()

        assert "Assignment not queued" in caplog.text


class TestWaitOverflow:
    def test_an_item_waiting_past_the_limit_is_ended_with_the_queues_message(self, account):
        queue = queue_make(
            "Slow", wait_limit_seconds=300, wait_action=WaitAction.END, wait_message="Sorry, we are busy."
        )
        workstream = workstream_make("Slow ws", fallback=queue)
        late = item_make(
            queue, workstream, account=account, queued_at=timezone.now() - datetime.timedelta(minutes=6)
        )
        recent = item_make(
            queue, workstream, account=account, queued_at=timezone.now() - datetime.timedelta(minutes=4)
        )

        tasks.queues_wait_overflow()

        late.refresh_from_db()
        assert late.state == ConversationState.CLOSED
        assert list(
            Message.objects.filter(conversation=late, direction=Direction.OUTBOUND).values_list(
                "text", flat=True
            )
        ) == ["Sorry, we are busy."]
        assert late.routing["wait_overflow"]["action"] == WaitAction.END
        assert Conversation.objects.get(pk=recent.pk).state == ConversationState.OPEN

    def test_an_item_waiting_past_the_limit_is_transferred_once(self, account):
        overflow = queue_make("Overflow")
        queue = queue_make(
            "Busy", wait_limit_seconds=60, wait_action=WaitAction.TRANSFER, wait_transfer_queue=overflow
        )
        # The target transfers back after a minute too: the item must not bounce between them.
        overflow.wait_limit_seconds, overflow.wait_action, overflow.wait_transfer_queue = (
            60,
            WaitAction.TRANSFER,
            queue,
        )
        overflow.save()
        workstream = workstream_make("Busy ws", fallback=queue)
        item = item_make(
            queue, workstream, account=account, queued_at=timezone.now() - datetime.timedelta(minutes=2)
        )

        assert distribution.queues_wait_overflow() == 1
        assert distribution.queues_wait_overflow(now=timezone.now() + datetime.timedelta(minutes=5)) == 0

        item.refresh_from_db()
        assert (item.state, item.queue_id) == (ConversationState.OPEN, overflow.pk)
        assert item.routing["wait_overflow"]["transfer_to"] == {"id": overflow.pk, "name": "Overflow"}
        assert item.activities.filter(kind="transferred").count() == 1

    def test_an_item_an_agent_took_meanwhile_is_not_overflowed(self, account):
        queue = queue_make("Limited", wait_limit_seconds=60, wait_action=WaitAction.END, wait_message="Bye")
        workstream = workstream_make("Limited ws", fallback=queue)
        agent = agent_make(queue)
        long_ago = timezone.now() - datetime.timedelta(minutes=2)
        taken = item_make(queue, workstream, account=account, queued_at=long_ago)
        active_with(taken, agent)

        assert distribution.queues_wait_overflow() == 0
        assert Conversation.objects.get(pk=taken.pk).state == ConversationState.ACTIVE


class TestAutoClose:
    def test_waiting_conversations_inactive_for_the_workstreams_time_are_closed(self, account):
        queue = queue_make("Async")
        workstream = workstream_make("Async ws", fallback=queue, auto_close_after_minutes=30)
        agent = agent_make(queue, presence=Presence.AVAILABLE)
        stale = item_make(queue, workstream, account=account)
        fresh = item_make(queue, workstream, account=account)
        for conversation in (stale, fresh):
            active_with(conversation, agent)
            lifecycle.conversation_transition(conversation=conversation, action=lifecycle.WAIT)
        long_ago = timezone.now() - datetime.timedelta(minutes=31)
        Conversation.objects.filter(pk=stale.pk).update(state_changed_at=long_ago, last_message_at=long_ago)
        Conversation.objects.filter(pk=fresh.pk).update(state_changed_at=long_ago)  # a message just now

        tasks.conversations_auto_close()

        assert Conversation.objects.get(pk=stale.pk).state == ConversationState.CLOSED
        assert Conversation.objects.get(pk=fresh.pk).state == ConversationState.WAITING

    def test_workstreams_without_auto_close_keep_waiting_conversations(self, account):
        queue = queue_make("Patient")
        workstream = workstream_make("Patient ws", fallback=queue)
        agent = agent_make(queue)
        item = item_make(queue, workstream, account=account)
        active_with(item, agent)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.WAIT)
        Conversation.objects.filter(pk=item.pk).update(
            state_changed_at=timezone.now() - datetime.timedelta(days=30), last_message_at=None
        )

        assert distribution.conversations_auto_close() == 0
        assert Conversation.objects.get(pk=item.pk).state == ConversationState.WAITING


class TestWrapUpRelease:
    def test_the_task_releases_wrap_up_capacity_past_the_workstreams_minutes(self, account):
        queue = queue_make("Wrap")
        workstream = workstream_make(
            "Wrap ws", fallback=queue, wrap_up_capacity=WrapUpCapacity.MINUTES, wrap_up_capacity_minutes=2
        )
        agent = agent_make(queue)
        item = item_make(queue, workstream, account=account)
        active_with(item, agent)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.END)

        tasks.wrap_up_capacity_release_due()
        assert used(agent) == 1
        Conversation.objects.filter(pk=item.pk).update(
            state_changed_at=timezone.now() - datetime.timedelta(minutes=3)
        )
        tasks.wrap_up_capacity_release_due()

        assert used(agent) == 0
