"""Routing a new conversation: recorded due when created, queued after the commit, routed once with
the decision recorded, swept up when the enqueue is lost. Every test commits (transaction=True), as
production does."""

from __future__ import annotations

import datetime
import logging
import threading

import pytest
from django.db import connection
from django.utils import timezone

from omnichannel.models import Conversation, ConversationState, Direction, Message
from routing import services
from routing.models import OverflowAction
from routing.services import conversation_route, conversations_routing_sweep
from tests.conftest import broker_down, wait_for
from tests.factories import LineMessagingAccountFactory
from tests.routing.conftest import (
    conversation_arrives,
    instance_make,
    queue_make,
    route_make,
    rule_set_make,
    workstream_make,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop():
    """A workstream with a Billing rule, and a messaging account attached to it."""
    workstream = workstream_make("Shop")
    billing = queue_make("Billing")
    route_make(
        workstream,
        "Invoices",
        [{"field": "message.text", "operator": "contains", "value": "invoice"}],
        billing,
    )
    instance = instance_make(workstream)
    return instance


class TestRoutingANewConversation:
    def test_a_new_conversation_is_recorded_due_and_queued_for_routing_after_the_commit(
        self, shop, routing_enqueued
    ):
        conversation = conversation_arrives(shop.messaging_account, text="Where is my invoice?")

        assert conversation.routing_due_at is not None
        assert conversation.queue is None
        assert routing_enqueued == [conversation.pk]

    def test_routing_records_the_decision_on_the_conversation(self, shop, routing_enqueued):
        conversation = conversation_arrives(shop.messaging_account, text="Where is my invoice?")

        decision = conversation_route(conversation_id=conversation.pk)

        conversation.refresh_from_db()
        assert decision is not None
        assert conversation.workstream == shop.workstream
        assert conversation.queue.name == "Billing"
        assert conversation.routing_due_at is None
        assert conversation.queued_at is not None
        assert conversation.state == ConversationState.OPEN
        record = conversation.routing
        assert record["queue"] == {"id": conversation.queue_id, "name": "Billing"}
        assert record["outcome"] == "queued"
        assert record["reason"] == "Route-to-queue rule 'Invoices' matched: queue 'Billing'."
        assert [m["name"] for m in record["matched"]] == ["Invoices"]
        assert record["workstream"] == {"id": shop.workstream.pk, "name": "Shop"}

    def test_the_customer_and_the_first_message_are_what_the_rules_read(self, shop, routing_enqueued):
        rule_set_make(
            shop.workstream,
            "Language",
            1,
            [
                (
                    "Thai speakers",
                    [
                        {"field": "customer.language", "operator": "equals", "value": "th"},
                        {"field": "customer.display_name", "operator": "starts_with", "value": "Natt"},
                        {
                            "field": "channel_instance",
                            "operator": "equals",
                            "value": shop.messaging_account.name,
                        },
                    ],
                    {"priority": 3, "skills": ["thai"]},
                )
            ],
        )
        conversation = conversation_arrives(
            shop.messaging_account, text="Hello", display_name="Nattapong", language="th"
        )
        later = Message.objects.create(
            conversation=conversation,
            direction=Direction.INBOUND,
            kind="text",
            text="invoice",
            sent_at=timezone.now(),
        )

        conversation_route(conversation_id=conversation.pk)

        conversation.refresh_from_db()
        assert conversation.priority == 3
        assert conversation.routing["attributes"] == {"priority": 3, "skills": {"thai": 1}}
        # The first message ("Hello") decides, not a later one.
        assert later.text == "invoice" and conversation.queue == shop.workstream.fallback_queue

    def test_a_conversation_of_an_account_in_no_channel_instance_stays_unrouted(
        self, routing_enqueued, caplog
    ):
        caplog.set_level(logging.INFO, logger="routing")
        account = LineMessagingAccountFactory()

        conversation = conversation_arrives(account)
        # Its routing is queued like any other's (one place decides): the task finds no instance.
        assert routing_enqueued == [conversation.pk]
        assert conversation_route(conversation_id=conversation.pk) is None

        conversation.refresh_from_db()
        assert conversation.queue is None and conversation.routing_due_at is None
        assert conversation.routing["outcome"] == "unrouted"
        assert conversation.routing["reason"] == "Its messaging account is in no channel instance."
        assert f"Conversation not routed conversation={conversation.pk}" in caplog.text

    def test_routing_twice_changes_nothing_the_second_time(self, shop, routing_enqueued):
        conversation = conversation_arrives(shop.messaging_account, text="invoice")
        assert conversation_route(conversation_id=conversation.pk) is not None
        first = Conversation.objects.get(pk=conversation.pk).routing

        assert conversation_route(conversation_id=conversation.pk) is None
        assert Conversation.objects.get(pk=conversation.pk).routing == first

    def test_a_classification_error_sends_the_conversation_to_the_fallback_queue_never_lost(
        self, shop, routing_enqueued, monkeypatch, caplog
    ):
        def broken(**kwargs):
            raise KeyError("a bug in the rules engine")

        monkeypatch.setattr(services, "routing_facts_for_conversation", broken)  # a bug, simulated
        conversation = conversation_arrives(shop.messaging_account, text="invoice")

        conversation_route(conversation_id=conversation.pk)

        conversation.refresh_from_db()
        assert conversation.queue == shop.workstream.fallback_queue
        assert conversation.routing_due_at is None
        assert (
            conversation.routing["reason"]
            == "Routing failed ('a bug in the rules engine'): sent to the fallback queue."
        )
        assert f"Routing failed conversation={conversation.pk}" in caplog.text

    def test_an_overflow_that_ends_the_conversation_sends_the_queues_message_and_closes_it(
        self, routing_enqueued
    ):
        closed = queue_make(
            "Closed",
            open_items_limit=0,
            open_items_action=OverflowAction.END,
            open_items_message="Sorry, we are full.",
        )
        workstream = workstream_make("Ends", fallback=closed)
        instance = instance_make(workstream)
        conversation = conversation_arrives(instance.messaging_account)

        conversation_route(conversation_id=conversation.pk)

        conversation.refresh_from_db()
        assert conversation.state == ConversationState.CLOSED
        assert conversation.routing["outcome"] == "ended"
        (sent,) = conversation.messages.filter(direction=Direction.OUTBOUND)
        assert sent.text == "Sorry, we are full." and sent.author is None
        assert sent.delivery_state == "pending"

    def test_two_concurrent_runs_route_the_conversation_once(
        self, shop, routing_enqueued, monkeypatch, caplog
    ):
        # Each run decides, then both try to record at once: the barrier (test timing only) makes
        # both reach the conditional UPDATE with a decision in hand.
        conversation = conversation_arrives(shop.messaging_account, text="invoice")
        barrier = threading.Barrier(2, timeout=30)
        real_decide = services.routing_decide

        def decide_then_wait(**kwargs):
            decision = real_decide(**kwargs)
            barrier.wait()
            return decision

        monkeypatch.setattr(services, "routing_decide", decide_then_wait)
        results: list[object] = []

        def run() -> None:
            try:
                results.append(conversation_route(conversation_id=conversation.pk))
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert len(results) == 2
        assert sum(result is not None for result in results) == 1
        assert f"Routing lost a race conversation={conversation.pk}" in caplog.text
        conversation.refresh_from_db()
        assert conversation.queue.name == "Billing" and conversation.routing_due_at is None


class TestRoutingSweep:
    def test_the_sweep_queues_conversations_still_due_after_the_delay_and_not_fresh_ones(
        self, shop, routing_enqueued, settings
    ):
        settings.QUEUE_SWEEP_AFTER_SECONDS = 60
        lost = conversation_arrives(shop.messaging_account)
        Conversation.objects.filter(pk=lost.pk).update(
            routing_due_at=timezone.now() - datetime.timedelta(minutes=5)
        )
        fresh = conversation_arrives(shop.messaging_account)
        routing_enqueued.clear()

        assert conversations_routing_sweep() == 1
        assert routing_enqueued == [lost.pk]
        assert fresh.pk not in routing_enqueued
        # Due again from now: the next sweep leaves it alone until the delay has passed again.
        assert conversations_routing_sweep() == 0
        assert conversations_routing_sweep(now=timezone.now() + datetime.timedelta(seconds=61)) == 2

    def test_a_routed_conversation_is_never_swept(self, shop, routing_enqueued):
        conversation = conversation_arrives(shop.messaging_account, text="invoice")
        conversation_route(conversation_id=conversation.pk)

        assert conversations_routing_sweep(now=timezone.now() + datetime.timedelta(hours=1)) == 0


@pytest.mark.worker
class TestWithTheRealWorker:
    def test_a_routing_enqueue_lost_while_the_broker_is_down_is_swept_up_and_routed(
        self, shop, celery_worker, caplog
    ):
        with broker_down():
            conversation = conversation_arrives(shop.messaging_account, text="My invoice is wrong")
        assert "Routing not queued (the sweep will)" in caplog.text
        conversation.refresh_from_db()
        assert conversation.routing_due_at is not None and conversation.queue is None

        assert conversations_routing_sweep(now=timezone.now() + datetime.timedelta(hours=1)) == 1

        routed = wait_for(
            lambda: Conversation.objects.filter(pk=conversation.pk, queue__isnull=False).first(),
            timeout=60,
            message="the worker to route the swept conversation",
        )
        assert routed.queue.name == "Billing"
        assert routed.routing_due_at is None

    def test_a_line_customers_first_message_is_routed_by_the_worker(self, line_shop_online, celery_worker):
        workstream = workstream_make("LINE shop")
        billing = queue_make("Billing")
        route_make(
            workstream,
            "Invoices",
            [{"field": "message.text", "operator": "contains", "value": "invoice"}],
            billing,
        )
        instance_make(workstream, account=line_shop_online.account)

        result = line_shop_online.act(type="text", text="Could you send the INVOICE again?")
        assert result["delivery"]["status"] == 200

        conversation = wait_for(
            lambda: Conversation.objects.filter(
                messaging_account=line_shop_online.account, queue__isnull=False
            ).first(),
            timeout=60,
            message="the worker to process and route the customer's first message",
        )
        assert conversation.queue == billing
        assert conversation.workstream == workstream
        assert conversation.routing["reason"] == "Route-to-queue rule 'Invoices' matched: queue 'Billing'."
        assert conversation.social_profile.display_name == "Aiko Tanaka"
