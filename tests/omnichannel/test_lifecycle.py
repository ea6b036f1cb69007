"""The conversation lifecycle: every transition of TRANSITIONS with the capacity it holds or releases,
offers (accept, reject, expire, withdraw) and wrap-up capacity (never / always / for N minutes)."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from agents.models import Presence
from omnichannel import lifecycle
from omnichannel.lifecycle import (
    ACTIVE,
    CLOSED,
    OPEN,
    WAITING,
    WRAP_UP,
    CapacityExhausted,
    LifecycleConflict,
)
from omnichannel.models import ActivityKind, Conversation
from routing.models import Offer, OfferState, WrapUpCapacity
from tests.factories import LineMessagingAccountFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make, used

pytestmark = pytest.mark.django_db


def transition(conversation: Conversation, action: str, **kwargs) -> Conversation:
    return lifecycle.conversation_transition(conversation=conversation, action=action, **kwargs)


def state_of(conversation: Conversation) -> tuple[str, int | None, int]:
    row = Conversation.objects.get(pk=conversation.pk)
    return row.state, row.assigned_agent_id, row.capacity_held


@pytest.fixture
def queue():
    return queue_make("Lifecycle queue")


@pytest.fixture
def setup(queue):
    """An Available agent with capacity 4 in the queue, and a messaging account."""
    agent = agent_make(queue, capacity=4, presence=Presence.AVAILABLE)
    return agent, LineMessagingAccountFactory()


def item(queue, account, *, units: int = 1, **workstream_fields) -> Conversation:
    name = f"WS {Conversation.objects.count()} {sorted(workstream_fields.items())}"
    workstream = workstream_make(name[:90], fallback=queue, capacity_units=units, **workstream_fields)
    return item_make(queue, workstream, account=account)


class TestTransitionsAndCapacity:
    def test_assign_holds_the_workstreams_units(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=2)

        transition(conversation, lifecycle.ASSIGN, agent=agent)

        assert state_of(conversation) == (ACTIVE, agent.pk, 2)
        assert used(agent) == 2

    def test_assign_holds_what_classification_wrote_over_the_workstreams_units(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=1)
        Conversation.objects.filter(pk=conversation.pk).update(routing={"attributes": {"capacity": 3}})
        conversation.refresh_from_db()

        transition(conversation, lifecycle.ASSIGN, agent=agent)

        assert used(agent) == 3

    def test_assign_beyond_the_agents_capacity_is_refused_and_changes_nothing(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=5)

        with pytest.raises(CapacityExhausted):
            transition(conversation, lifecycle.ASSIGN, agent=agent)

        assert state_of(conversation) == (OPEN, None, 0)
        assert used(agent) == 0

    @pytest.mark.parametrize(
        ("mode", "minutes", "held_after_end"),
        [(WrapUpCapacity.NEVER, None, 0), (WrapUpCapacity.ALWAYS, None, 2), (WrapUpCapacity.MINUTES, 5, 2)],
    )
    def test_end_moves_to_wrap_up_and_releases_capacity_unless_the_workstream_blocks_it(
        self, queue, setup, mode, minutes, held_after_end
    ):
        agent, account = setup
        conversation = item(queue, account, units=2, wrap_up_capacity=mode, wrap_up_capacity_minutes=minutes)
        transition(conversation, lifecycle.ASSIGN, agent=agent)

        transition(conversation, lifecycle.END, actor=agent, note="Refund issued")

        assert state_of(conversation) == (WRAP_UP, agent.pk, held_after_end)
        assert used(agent) == held_after_end
        assert Conversation.objects.get(pk=conversation.pk).wrap_up_notes == "Refund issued"

    def test_wrap_up_capacity_for_n_minutes_is_released_once_they_have_passed(self, queue, setup):
        agent, account = setup
        conversation = item(
            queue, account, units=2, wrap_up_capacity=WrapUpCapacity.MINUTES, wrap_up_capacity_minutes=5
        )
        transition(conversation, lifecycle.ASSIGN, agent=agent)
        transition(conversation, lifecycle.END)
        ended = timezone.now()

        assert lifecycle.wrap_up_capacity_release_due(now=ended + datetime.timedelta(minutes=4)) == 0
        assert used(agent) == 2
        assert lifecycle.wrap_up_capacity_release_due(now=ended + datetime.timedelta(minutes=6)) == 1
        assert lifecycle.wrap_up_capacity_release_due(now=ended + datetime.timedelta(minutes=7)) == 0

        assert state_of(conversation) == (WRAP_UP, agent.pk, 0)
        assert used(agent) == 0

    def test_wrap_up_capacity_always_is_held_until_close(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=2, wrap_up_capacity=WrapUpCapacity.ALWAYS)
        transition(conversation, lifecycle.ASSIGN, agent=agent)
        transition(conversation, lifecycle.END)

        assert lifecycle.wrap_up_capacity_release_due(now=timezone.now() + datetime.timedelta(days=1)) == 0
        assert used(agent) == 2
        transition(conversation, lifecycle.CLOSE, actor=agent)

        assert state_of(conversation) == (CLOSED, agent.pk, 0)
        assert used(agent) == 0

    def test_wait_releases_and_resume_holds_again(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=2)
        transition(conversation, lifecycle.ASSIGN, agent=agent)

        transition(conversation, lifecycle.WAIT, actor=agent)
        assert state_of(conversation) == (WAITING, agent.pk, 0)
        assert used(agent) == 0

        transition(conversation, lifecycle.RESUME, actor=agent)
        assert state_of(conversation) == (ACTIVE, agent.pk, 2)
        assert used(agent) == 2

    def test_resume_without_room_is_refused(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=2)
        transition(conversation, lifecycle.ASSIGN, agent=agent)
        transition(conversation, lifecycle.WAIT)
        other = item(queue, account, units=3)
        transition(other, lifecycle.ASSIGN, agent=agent)

        with pytest.raises(CapacityExhausted):
            transition(conversation, lifecycle.RESUME)

        assert state_of(conversation) == (WAITING, agent.pk, 0)
        assert used(agent) == 3

    def test_reopen_puts_a_waiting_conversation_back_in_its_queue_remembering_the_agent(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        transition(conversation, lifecycle.ASSIGN, agent=agent)
        transition(conversation, lifecycle.WAIT)

        transition(conversation, lifecycle.REOPEN)

        row = Conversation.objects.get(pk=conversation.pk)
        assert (row.state, row.assigned_agent_id, row.previous_agent_id, row.queue_id) == (
            OPEN,
            None,
            agent.pk,
            queue.pk,
        )
        assert used(agent) == 0

    def test_transfer_releases_the_capacity_and_requeues(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=3)
        transition(conversation, lifecycle.ASSIGN, agent=agent)
        target = queue_make("Target")

        transition(conversation, lifecycle.TRANSFER, actor=agent, queue=target, note="for billing")

        row = Conversation.objects.get(pk=conversation.pk)
        assert (row.state, row.queue_id, row.capacity_held, row.previous_agent_id) == (
            OPEN,
            target.pk,
            0,
            agent.pk,
        )
        assert used(agent) == 0
        assert row.activities.filter(kind=ActivityKind.TRANSFERRED, note="for billing").exists()

    @pytest.mark.parametrize("before", [OPEN, ACTIVE, WAITING, WRAP_UP])
    def test_close_from_every_state_releases_what_is_held(self, queue, setup, before):
        agent, account = setup
        conversation = item(queue, account, units=2, wrap_up_capacity=WrapUpCapacity.ALWAYS)
        if before != OPEN:
            transition(conversation, lifecycle.ASSIGN, agent=agent)
        if before == WAITING:
            transition(conversation, lifecycle.WAIT)
        if before == WRAP_UP:
            transition(conversation, lifecycle.END)

        transition(conversation, lifecycle.CLOSE)

        row = Conversation.objects.get(pk=conversation.pk)
        assert (row.state, row.capacity_held) == (CLOSED, 0)
        assert row.closed_at is not None
        assert used(agent) == 0

    @pytest.mark.parametrize(
        ("action", "state"),
        [
            (lifecycle.END, OPEN),
            (lifecycle.WAIT, OPEN),
            (lifecycle.RESUME, ACTIVE),
            (lifecycle.REOPEN, ACTIVE),
            (lifecycle.ASSIGN, ACTIVE),
            (lifecycle.TRANSFER, WRAP_UP),
            (lifecycle.CLOSE, CLOSED),
        ],
    )
    def test_an_action_that_does_not_apply_to_the_state_is_refused(self, queue, setup, action, state):
        agent, account = setup
        conversation = item(queue, account)
        if state != OPEN:
            transition(conversation, lifecycle.ASSIGN, agent=agent)
        if state == WRAP_UP:
            transition(conversation, lifecycle.END)
        if state == CLOSED:
            transition(conversation, lifecycle.CLOSE)
        held = used(agent)

        with pytest.raises(LifecycleConflict):
            transition(conversation, action, agent=agent)

        assert Conversation.objects.get(pk=conversation.pk).state == state
        assert used(agent) == held

    def test_every_change_is_recorded_with_its_actor(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        transition(conversation, lifecycle.ASSIGN, agent=agent, actor=agent)
        transition(conversation, lifecycle.END, actor=agent)

        rows = list(conversation.activities.values_list("from_state", "to_state", "actor_id"))

        assert rows == [(OPEN, ACTIVE, agent.pk), (ACTIVE, WRAP_UP, agent.pk)]


class TestOffers:
    def test_an_offer_holds_its_units_and_accepting_hands_them_to_the_conversation(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account, units=2)
        offer = lifecycle.offer_make(conversation=conversation, agent=agent, queue=queue, timeout_seconds=60)
        assert used(agent) == 2

        lifecycle.offer_accept(offer_id=offer.pk, agent=agent)

        assert state_of(conversation) == (ACTIVE, agent.pk, 2)
        assert used(agent) == 2
        assert Offer.objects.get(pk=offer.pk).state == OfferState.ACCEPTED

    def test_a_second_pending_offer_of_one_conversation_is_refused(self, queue, setup):
        agent, account = setup
        other = agent_make(queue)
        conversation = item(queue, account)
        lifecycle.offer_make(conversation=conversation, agent=agent, queue=queue, timeout_seconds=60)

        with pytest.raises(LifecycleConflict, match="offered to an agent already"):
            lifecycle.offer_make(conversation=conversation, agent=other, queue=queue, timeout_seconds=60)

        assert used(other) == 0

    def test_rejecting_releases_the_units_and_leaves_the_conversation_open(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        offer = lifecycle.offer_make(conversation=conversation, agent=agent, queue=queue, timeout_seconds=60)

        assert lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=agent)
        assert not lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=agent)

        assert used(agent) == 0
        assert state_of(conversation) == (OPEN, None, 0)

    def test_an_expired_offer_cannot_be_accepted(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        offer = lifecycle.offer_make(conversation=conversation, agent=agent, queue=queue, timeout_seconds=60)
        Offer.objects.filter(pk=offer.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

        with pytest.raises(LifecycleConflict, match="expired"):
            lifecycle.offer_accept(offer_id=offer.pk, agent=agent)

        assert lifecycle.offers_expire() == 1
        assert Offer.objects.get(pk=offer.pk).state == OfferState.EXPIRED
        assert used(agent) == 0

    def test_closing_an_offered_conversation_withdraws_the_offer(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        offer = lifecycle.offer_make(conversation=conversation, agent=agent, queue=queue, timeout_seconds=60)

        transition(conversation, lifecycle.CLOSE)

        assert Offer.objects.get(pk=offer.pk).state == OfferState.WITHDRAWN
        assert used(agent) == 0
        with pytest.raises(LifecycleConflict, match="withdrawn"):
            lifecycle.offer_accept(offer_id=offer.pk, agent=agent)

    def test_three_declines_skip_the_agent(self, queue, setup):
        agent, account = setup
        conversation = item(queue, account)
        for count in range(3):
            assert agent.pk not in lifecycle.offer_skipped_agents(conversation_id=conversation.pk), count
            offer = lifecycle.offer_make(
                conversation=conversation, agent=agent, queue=queue, timeout_seconds=60
            )
            state = OfferState.REJECTED if count % 2 == 0 else OfferState.EXPIRED
            lifecycle.offer_decline(offer_id=offer.pk, state=state)

        assert lifecycle.offer_skipped_agents(conversation_id=conversation.pk) == {agent.pk}
