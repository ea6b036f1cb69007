"""What the worker does for a new conversation: one routing task routes it and gives it out (no
second task for its queue), in a fixed number of queries whatever the number of agents. Every test
commits (transaction=True), as production does: the counts are those of the real transactions."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from omnichannel import lifecycle
from omnichannel.models import ConversationState
from routing import tasks
from routing.distribution import conversation_transfer
from routing.models import Offer, OfferState
from routing.services import conversation_route
from tests.factories import AgentFactory
from tests.routing.conftest import conversation_arrives, instance_make, queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make, pending_offers

pytestmark = pytest.mark.django_db(transaction=True)

# Queries of the routing task for a new conversation of a push workstream without rules, routed to its
# fallback queue and offered, on either database (two transactions: BEGIN and COMMIT count):
# routing (11): the conversation (with its account, customer and contact), the channel instance's
# workstream, the first message's text, the workstream with its fallback queue, its rule sets, its
# route-to-queue rules; the transaction: the decision's UPDATE, the queue's live notice;
# the assignment up to this item (14): the queue (whether it has hours or holidays: these are read
# only when it has some), the next waiting item, the eligible members; the transaction: the
# conversation locked, the offer, the capacity, the activity, the agent's live notice (in
# lifecycle.offer_make, with two savepoints), the member's round-robin time. Before routing gave the
# item out itself: 31 queries in two tasks (routing read the queue, its hours and holidays, which the
# queue's task read again, and that task looked for a next waiting item once more after this one);
# then 27 (the queue's hours and holidays read whether it had some or not).
QUERIES_PER_NEW_CONVERSATION = 25


@pytest.fixture
def queued_assignments(monkeypatch) -> list[tuple]:
    """The queue_assign tasks queued, kept here instead of sent."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.queue_assign, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def shop():
    queue = queue_make("Front desk")
    workstream = workstream_make("Shop push", fallback=queue, offer_timeout_seconds=600)
    return instance_make(workstream)


def new_conversation(instance, routing_enqueued):
    conversation = conversation_arrives(instance.messaging_account, text="Where is my parcel?")
    assert routing_enqueued[-1] == conversation.pk
    return conversation


@pytest.mark.parametrize("agents", [2, 25])
def test_routing_and_offering_a_new_conversation_is_one_task_of_a_fixed_number_of_queries(
    shop, routing_enqueued, queued_assignments, django_assert_num_queries, agents
):
    queue = shop.workstream.fallback_queue
    for _ in range(agents):
        agent_make(queue, capacity=3)
    conversation = new_conversation(shop, routing_enqueued)

    with django_assert_num_queries(QUERIES_PER_NEW_CONVERSATION):
        tasks.conversation_route.run(conversation.pk)

    offer = Offer.objects.get(conversation=conversation)
    assert offer.state == OfferState.PENDING
    assert offer.expires_at > timezone.now() + datetime.timedelta(seconds=500)
    # Its queueing asked for no second task: the routing task gave it out.
    assert queued_assignments == []


def test_a_routed_conversation_nobody_can_take_waits_without_a_task_for_its_queue(
    shop, routing_enqueued, queued_assignments
):
    agent_make(shop.workstream.fallback_queue, capacity=1, used=1)
    conversation = new_conversation(shop, routing_enqueued)

    conversation_route(conversation_id=conversation.pk)

    conversation.refresh_from_db()
    assert conversation.state == ConversationState.OPEN and conversation.queue is not None
    assert pending_offers() == []
    assert queued_assignments == []  # the agent's next room (an event of its own) gives it out


def test_items_waiting_ahead_of_a_routed_conversation_are_given_out_first(shop, routing_enqueued):
    queue = shop.workstream.fallback_queue
    waiting = item_make(queue, shop.workstream, queued_at=timezone.now() - datetime.timedelta(minutes=5))
    agent = agent_make(queue, capacity=1)  # no event: only the next run can give it out
    conversation = new_conversation(shop, routing_enqueued)

    conversation_route(conversation_id=conversation.pk)

    assert pending_offers() == [(waiting.pk, agent.pk)]
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.OPEN


def test_a_conversation_queued_again_still_queues_assignment_up_to_it(
    shop, routing_enqueued, queued_assignments
):
    other = queue_make("Back office")
    agent = AgentFactory()
    conversation = new_conversation(shop, routing_enqueued)
    conversation_route(conversation_id=conversation.pk)
    lifecycle.conversation_transition(conversation=conversation, action=lifecycle.ASSIGN, agent=agent)

    conversation_transfer(conversation=conversation, actor=agent, queue=other)

    assert queued_assignments == [(other.pk, conversation.pk)]
