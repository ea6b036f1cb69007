"""Distribution under real concurrency: several threads (each with its own database connection) or the
real Celery worker giving out one queue's work at once. The guarantee: no agent above capacity, no item
offered or assigned to two agents. Every test commits (transaction=True), as production does.

Thread races need a database that lets writers in concurrently: PostgreSQL. On SQLite (one writer at a
time) they are skipped; the worker tests run on both."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count, F

from agents.models import AgentProfile
from agents.services import demo_users_ensure
from omnichannel import lifecycle
from omnichannel.lifecycle import LifecycleConflict
from omnichannel.models import Conversation, ConversationState
from routing import distribution
from routing.distribution import PICK_LOST, conversation_pick, queue_assign
from routing.models import DistributionMode, Offer, OfferState
from tests.conftest import wait_for
from tests.factories import LineMessagingAccountFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db(transaction=True)

needs_concurrent_writers = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="Needs concurrent writers (PostgreSQL): SQLite lets one writer in at a time, so threads take "
    "turns and there is no race to test.",
)


def run_together(count: int, work) -> list[object]:
    """Run `work(index)` in `count` threads started at once; their results (or exceptions)."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as error:  # the test looks at it
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def assert_within_capacity() -> None:
    over = AgentProfile.objects.filter(capacity_used__gt=F("capacity")).values_list("user_id", flat=True)
    assert list(over) == []


def assert_capacity_matches_the_work() -> None:
    """Every agent's used units are exactly what their pending offers and worked conversations hold."""
    held: Counter[int] = Counter()
    for agent_id, units in Offer.objects.filter(state=OfferState.PENDING).values_list(
        "agent_id", "capacity_units"
    ):
        held[agent_id] += units
    for agent_id, units in Conversation.objects.filter(capacity_held__gt=0).values_list(
        "assigned_agent_id", "capacity_held"
    ):
        held[agent_id] += units
    used = dict(AgentProfile.objects.filter(capacity_used__gt=0).values_list("user_id", "capacity_used"))
    assert used == dict(held)


@pytest.fixture
def account():
    return LineMessagingAccountFactory()


@needs_concurrent_writers
def test_four_workers_giving_out_one_queue_never_overfill_an_agent_nor_offer_an_item_twice(account):
    queue = queue_make("Rush")
    workstream = workstream_make("Rush ws", fallback=queue)
    agents = [agent_make(queue, capacity=3) for _ in range(4)]
    items = [item_make(queue, workstream, account=account) for _ in range(40)]

    given = run_together(4, lambda _: queue_assign(queue_id=queue.pk))

    assert all(isinstance(result, int) for result in given), given
    assert sum(given) == 12  # 4 agents x 3 units: every unit offered once
    assert Offer.objects.count() == 12
    assert not Offer.objects.values("conversation").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert dict(Counter(Offer.objects.values_list("agent_id", flat=True))) == {a.pk: 3 for a in agents}
    assert_within_capacity()
    assert_capacity_matches_the_work()
    # The oldest items went first.
    assert set(Offer.objects.values_list("conversation_id", flat=True)) == {i.pk for i in items[:12]}


@needs_concurrent_writers
def test_four_workers_auto_accepting_assign_each_item_once_within_capacity(account):
    queue = queue_make("Auto")
    workstream = workstream_make("Auto ws", fallback=queue, auto_accept=True, capacity_units=2)
    for capacity in (2, 3, 4, 5):
        agent_make(queue, capacity=capacity)
    for _ in range(20):
        item_make(queue, workstream, account=account)

    given = run_together(4, lambda _: queue_assign(queue_id=queue.pk))

    assert sum(given) == 1 + 1 + 2 + 2
    active = Conversation.objects.filter(state=ConversationState.ACTIVE)
    assert active.count() == 6
    assert (
        Conversation.objects.filter(state=ConversationState.OPEN, assigned_agent__isnull=False).count() == 0
    )
    assert_within_capacity()
    assert_capacity_matches_the_work()


@needs_concurrent_writers
def test_offers_answered_while_workers_give_out_the_queue_keep_capacity_exact(account):
    queue = queue_make("Churn")
    workstream = workstream_make("Churn ws", fallback=queue)
    agents = [agent_make(queue, capacity=2) for _ in range(3)]
    for _ in range(30):
        item_make(queue, workstream, account=account)
    queue_assign(queue_id=queue.pk)

    def work(index: int) -> int:
        if index < 2:
            return sum(queue_assign(queue_id=queue.pk) for _ in range(5))
        answered = 0
        for offer_id, agent_id in list(
            Offer.objects.filter(state=OfferState.PENDING).values_list("pk", "agent_id")
        ):
            agent = next(a for a in agents if a.pk == agent_id)
            if index == 2:
                answered += lifecycle.offer_decline(offer_id=offer_id, state=OfferState.REJECTED, agent=agent)
            else:
                try:
                    lifecycle.offer_accept(offer_id=offer_id, agent=agent)
                    answered += 1
                except LifecycleConflict:
                    pass
        return answered

    results = run_together(4, work)

    assert all(isinstance(result, int) for result in results), results
    assert (
        not Offer.objects.filter(state=OfferState.PENDING)
        .values("conversation")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    assert_within_capacity()
    assert_capacity_matches_the_work()


@needs_concurrent_writers
def test_two_agents_picking_one_conversation_at_once_one_wins_the_other_is_told(account, monkeypatch):
    queue = queue_make("Pickers")
    workstream = workstream_make("Pick ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    first, second = agent_make(queue), agent_make(queue)
    item = item_make(queue, workstream, account=account)
    # Both pass the checks before either changes the row: the race is decided by the lifecycle's
    # conditional UPDATE, not by who read first.
    barrier = threading.Barrier(2, timeout=30)
    real_transition = lifecycle.conversation_transition

    def transition_together(**kwargs):
        barrier.wait()
        return real_transition(**kwargs)

    monkeypatch.setattr(lifecycle, "conversation_transition", transition_together)

    results = run_together(
        2, lambda index: conversation_pick(conversation=item, agent=(first, second)[index])
    )

    winners = [r for r in results if isinstance(r, Conversation)]
    losers = [r for r in results if isinstance(r, LifecycleConflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert losers[0].message == PICK_LOST
    item.refresh_from_db()
    assert item.assigned_agent_id == winners[0].assigned_agent_id
    assert_capacity_matches_the_work()


@needs_concurrent_writers
def test_agents_transferring_to_each_other_at_once_never_deadlock(account):
    queue = queue_make("Swap")
    workstream = workstream_make("Swap ws", fallback=queue)
    first, second = agent_make(queue, capacity=20), agent_make(queue, capacity=20)
    held: dict[int, list[Conversation]] = {first.pk: [], second.pk: []}
    for agent in (first, second):
        for _ in range(8):
            item = item_make(queue, workstream, account=account)
            held[agent.pk].append(
                lifecycle.conversation_transition(conversation=item, action=lifecycle.ASSIGN, agent=agent)
            )

    def work(index: int) -> int:
        sender, receiver = (first, second) if index == 0 else (second, first)
        for conversation in held[sender.pk]:
            distribution.conversation_transfer(conversation=conversation, actor=sender, agent=receiver)
        return len(held[sender.pk])

    results = run_together(2, work)

    assert results == [8, 8], results
    assert Offer.objects.filter(state=OfferState.PENDING).count() == 16
    assert_within_capacity()
    assert_capacity_matches_the_work()


# --- The real worker -----------------------------------------------------------------------------


def test_the_worker_running_several_assignment_tasks_at_once_keeps_the_guarantee(account, celery_worker):
    from routing import tasks

    queue = queue_make("Worker rush")
    workstream = workstream_make("Worker rush ws", fallback=queue)
    agents = [agent_make(queue, capacity=2) for _ in range(3)]
    for _ in range(15):
        item_make(queue, workstream, account=account)

    sent = [tasks.queue_assign.delay(queue.pk).id for _ in range(6)]

    wait_for(
        lambda: Offer.objects.filter(state=OfferState.PENDING).count() == 6,
        timeout=60,
        message="the worker to offer six items",
    )
    # No agent has room left, so no task still running can offer more.
    assert Offer.objects.count() == 6
    assert dict(Counter(Offer.objects.values_list("agent_id", flat=True))) == {a.pk: 2 for a in agents}
    assert_within_capacity()
    assert_capacity_matches_the_work()
    # The worker is shared by the session: let the six tasks finish before the database is flushed
    # (a task still writing while the tables are truncated deadlocks the teardown).
    wait_for(
        lambda: all(f"{task_id}] succeeded" in celery_worker.log() for task_id in sent),
        timeout=60,
        message="the worker to finish the six assignment tasks",
    )


def test_a_new_line_customer_is_routed_and_offered_to_a_demo_agent_by_the_worker(
    line_shop_online, celery_worker
):
    """End to end: the stand-in signs and POSTs a webhook; the worker processes it, routes the new
    conversation (the demo set-up), and distribution offers it to a demo agent."""
    from routing.demo import routing_demo_ensure

    demo_users_ensure(
        passwords={"admin": "x" * 16, "supervisor": "y" * 16, "agent1": "z" * 16, "agent2": "w" * 16}
    )
    routing_demo_ensure(account=line_shop_online.account)

    result = line_shop_online.act(type="text", text="Hello, where is my parcel?")
    assert result["delivery"]["status"] == 200

    offer = wait_for(
        lambda: (
            Offer.objects.filter(state=OfferState.PENDING).select_related("agent", "conversation").first()
        ),
        timeout=60,
        message="the worker to route the conversation and offer it to a demo agent",
    )
    assert offer.agent.username in {"agent1", "agent2"}
    assert offer.conversation.messaging_account_id == line_shop_online.account.pk
    assert offer.conversation.queue.name == "General"
    assert offer.conversation.state == ConversationState.OPEN
    assert AgentProfile.objects.get(user=offer.agent).capacity_used == 1
