"""Push distribution (who is offered an item, in what order), pick, transfer, presence and the events
that run assignment. Real database; the Celery tasks that events queue are captured where a test
looks at what was queued (the real worker runs in test_distribution_concurrency.py)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from agents.models import AgentProfile, AgentSkill, Presence, Skill
from agents.services import agent_presence_set
from omnichannel import lifecycle
from omnichannel.lifecycle import CapacityExhausted, LifecycleConflict
from omnichannel.models import Conversation, ConversationState
from routing import distribution
from routing.distribution import (
    PICK_LOST,
    PICK_REFUSED_PUSH,
    assignment_choose,
    conversation_pick,
    conversation_transfer,
    item_facts,
    queue_assign,
)
from routing.models import (
    AssignmentMethod,
    DistributionMode,
    Offer,
    OfferState,
    Queue,
    QueueMembership,
    SkillMatching,
)
from routing.services import routing_record_save
from tests.factories import (
    AgentFactory,
    ConversationFactory,
    LineMessagingAccountFactory,
    SocialProfileFactory,
)
from tests.routing.conftest import hours_add, queue_make, workstream_make

pytestmark = pytest.mark.django_db


# --- Helpers (the other distribution test files use them too) -------------------------------------


def agent_make(
    *queues: Queue,
    presence: str = Presence.AVAILABLE,
    capacity: int = 10,
    used: int = 0,
    skills: dict[str, int] | None = None,
    last_assigned_at: datetime.datetime | None = None,
):
    """An agent with a profile, member of `queues`."""
    agent = AgentFactory()
    profile = AgentProfile.objects.create(
        user=agent, presence=presence, capacity=capacity, capacity_used=used
    )
    for name, level in (skills or {}).items():
        skill = Skill.objects.filter(name__iexact=name).first() or Skill.objects.create(name=name)
        AgentSkill.objects.create(profile=profile, skill=skill, level=level)
    for queue in queues:
        QueueMembership.objects.create(queue=queue, user=agent, last_assigned_at=last_assigned_at)
    return agent


def item_make(
    queue: Queue,
    workstream,
    *,
    account=None,
    priority: int = 100,
    queued_at: datetime.datetime | None = None,
    attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> Conversation:
    """An Open conversation routed to `queue` (as conversation_route leaves it)."""
    profile = SocialProfileFactory(messaging_account=account or LineMessagingAccountFactory())
    return ConversationFactory(
        social_profile=profile,
        workstream=workstream,
        queue=queue,
        priority=priority,
        queued_at=queued_at or timezone.now(),
        routing={"attributes": attributes or {}},
        **fields,
    )


def pending_offers(**filters: Any) -> list[tuple[int, int]]:
    """(conversation, agent) of the pending offers, oldest first."""
    return list(
        Offer.objects.filter(state=OfferState.PENDING, **filters)
        .order_by("created_at", "pk")
        .values_list("conversation_id", "agent_id")
    )


def used(agent) -> int:
    return AgentProfile.objects.get(user=agent).capacity_used


def active_with(conversation: Conversation, agent) -> Conversation:
    """The conversation assigned to `agent` (through the lifecycle, as a pick or an accept does)."""
    return lifecycle.conversation_transition(conversation=conversation, action=lifecycle.ASSIGN, agent=agent)


@pytest.fixture
def account():
    return LineMessagingAccountFactory()


@pytest.fixture
def queue():
    return queue_make("Support queue")


def push(queue: Queue, **fields: Any):
    return workstream_make(f"Push {queue.name}", fallback=queue, **fields)


# --- The decision --------------------------------------------------------------------------------


class TestHighestCapacity:
    def test_the_member_with_the_most_free_units_is_chosen(self, queue, account):
        workstream = push(queue)
        agent_make(queue, capacity=5, used=3)
        roomy = agent_make(queue, capacity=5, used=1)
        agent_make(queue, capacity=3, used=0)
        item = item_make(queue, workstream, account=account)

        chosen = assignment_choose(
            facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
        )

        assert chosen.agent_id == roomy.pk

    def test_ties_go_to_the_member_never_given_work_then_to_the_longest_ago(self, queue, account):
        workstream = push(queue)
        hour_ago = timezone.now() - datetime.timedelta(hours=1)
        agent_make(queue, capacity=4, last_assigned_at=hour_ago)
        never = agent_make(queue, capacity=4)
        item = item_make(queue, workstream, account=account)

        first = assignment_choose(
            facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
        )
        QueueMembership.objects.filter(user=never).update(last_assigned_at=timezone.now())
        second = assignment_choose(
            facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
        )

        assert first.agent_id == never.pk
        assert second.agent_id != never.pk

    def test_a_queue_assign_run_spreads_equal_agents_round_robin(self, queue, account):
        workstream = push(queue)
        agents = [agent_make(queue, capacity=10) for _ in range(3)]
        items = [item_make(queue, workstream, account=account) for _ in range(3)]

        assert queue_assign(queue_id=queue.pk) == 3

        assert sorted(agent for _, agent in pending_offers()) == sorted(a.pk for a in agents)
        assert [c for c, _ in pending_offers()] == [i.pk for i in items]


class TestAdvancedRoundRobin:
    def test_the_member_given_work_of_this_queue_longest_ago_wins_whatever_their_room(self, queue, account):
        workstream = push(queue, assignment_method=AssignmentMethod.ROUND_ROBIN)
        now = timezone.now()
        agent_make(queue, capacity=10, last_assigned_at=now - datetime.timedelta(minutes=1))
        oldest = agent_make(queue, capacity=2, used=1, last_assigned_at=now - datetime.timedelta(minutes=30))
        item = item_make(queue, workstream, account=account)

        chosen = assignment_choose(
            facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
        )

        assert chosen.agent_id == oldest.pk

    def test_the_member_offered_an_item_goes_to_the_back_of_the_line(self, queue, account):
        workstream = push(queue, assignment_method=AssignmentMethod.ROUND_ROBIN)
        first = agent_make(queue, last_assigned_at=timezone.now() - datetime.timedelta(hours=2))
        second = agent_make(queue, last_assigned_at=timezone.now() - datetime.timedelta(hours=1))
        item_make(queue, workstream, account=account)
        item_make(queue, workstream, account=account)
        item_make(queue, workstream, account=account)

        queue_assign(queue_id=queue.pk)

        assert [agent for _, agent in pending_offers()] == [first.pk, second.pk, first.pk]
        assert (
            QueueMembership.objects.get(user=first).last_assigned_at
            > QueueMembership.objects.get(user=second).last_assigned_at
        )


class TestEligibility:
    def test_only_members_in_an_allowed_presence_are_offered_work(self, queue, account):
        workstream = push(queue, allowed_presences=[Presence.AVAILABLE])
        agent_make(queue, presence=Presence.BUSY, capacity=10)
        agent_make(queue, presence=Presence.OFFLINE, capacity=10)
        available = agent_make(queue, presence=Presence.AVAILABLE, capacity=1)
        item_make(queue, workstream, account=account)

        queue_assign(queue_id=queue.pk)

        assert [agent for _, agent in pending_offers()] == [available.pk]

    def test_agents_outside_the_queue_are_never_offered_its_work(self, queue, account):
        workstream = push(queue)
        agent_make(queue_make("Other queue"), capacity=10)
        item_make(queue, workstream, account=account)

        assert queue_assign(queue_id=queue.pk) == 0
        assert pending_offers() == []

    def test_an_agent_without_room_for_the_items_units_is_passed_over(self, queue, account):
        workstream = push(queue)
        agent_make(queue, capacity=3, used=2)
        roomy = agent_make(queue, capacity=2, used=0)
        item = item_make(queue, workstream, account=account, attributes={"capacity": 2})

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, roomy.pk)]
        assert used(roomy) == 2

    def test_pending_offers_hold_capacity_so_an_agent_is_never_promised_more_than_their_room(
        self, queue, account
    ):
        workstream = push(queue)
        agent = agent_make(queue, capacity=2)
        for _ in range(4):
            item_make(queue, workstream, account=account)

        assert queue_assign(queue_id=queue.pk) == 2
        assert queue_assign(queue_id=queue.pk) == 0

        assert len(pending_offers(agent=agent)) == 2
        assert used(agent) == 2

    def test_an_agent_who_declined_an_item_three_times_is_not_offered_it_again(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue)
        item = item_make(queue, workstream, account=account)
        for _ in range(3):
            assert queue_assign(queue_id=queue.pk) == 1
            offer = Offer.objects.get(conversation=item, state=OfferState.PENDING)
            assert lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=agent)

        assert queue_assign(queue_id=queue.pk) == 0
        other = agent_make(queue)
        assert queue_assign(queue_id=queue.pk) == 1
        assert pending_offers() == [(item.pk, other.pk)]

    def test_an_expired_offer_goes_to_the_next_agent(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=30)
        first = agent_make(queue, capacity=5)
        second = agent_make(queue, capacity=4)
        item = item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)
        assert pending_offers() == [(item.pk, first.pk)]

        assert lifecycle.offers_expire(now=timezone.now() + datetime.timedelta(seconds=31)) == 1
        QueueMembership.objects.filter(user=first).update(last_assigned_at=timezone.now())
        AgentProfile.objects.filter(user=first).update(capacity=4)
        queue_assign(queue_id=queue.pk)

        assert Offer.objects.get(agent=first).state == OfferState.EXPIRED
        assert used(first) == 0
        assert pending_offers() == [(item.pk, second.pk)]

    def test_an_agent_who_lets_an_offer_expire_is_set_away_and_offered_nothing_more(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=30)
        first = agent_make(queue, capacity=5)
        item = item_make(queue, workstream, account=account)
        later = item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)
        assert sorted(pending_offers()) == [(item.pk, first.pk), (later.pk, first.pk)]

        assert lifecycle.offers_expire(now=timezone.now() + datetime.timedelta(seconds=31)) == 2
        queue_assign(queue_id=queue.pk)

        profile = AgentProfile.objects.get(user=first)
        assert profile.presence == Presence.AWAY
        assert pending_offers() == []
        agent_presence_set(user=first, presence=Presence.AVAILABLE)
        queue_assign(queue_id=queue.pk)
        assert sorted(pending_offers()) == [(item.pk, first.pk), (later.pk, first.pk)]

    def test_the_workstream_can_keep_an_agent_s_presence_when_an_offer_expires(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=30, away_after_missed_offer=False)
        first = agent_make(queue, capacity=5)
        item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)

        lifecycle.offers_expire(now=timezone.now() + datetime.timedelta(seconds=31))

        assert AgentProfile.objects.get(user=first).presence == Presence.AVAILABLE

    def test_a_rejected_offer_or_a_presence_without_pushed_work_is_left_as_it_is(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=30)
        agent = agent_make(queue, capacity=5)
        item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)
        offer = Offer.objects.get(agent=agent, state=OfferState.PENDING)
        lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=agent)
        assert AgentProfile.objects.get(user=agent).presence == Presence.AVAILABLE

        queue_assign(queue_id=queue.pk)
        agent_presence_set(user=agent, presence=Presence.BUSY_DND)
        lifecycle.offers_expire(now=timezone.now() + datetime.timedelta(seconds=31))

        assert Offer.objects.filter(agent=agent, state=OfferState.EXPIRED).count() == 1
        assert AgentProfile.objects.get(user=agent).presence == Presence.BUSY_DND


class TestSkills:
    def test_exact_matching_offers_only_to_agents_with_every_skill_at_its_level(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.EXACT)
        agent_make(queue, capacity=10, skills={"billing": 9})
        agent_make(queue, capacity=10, skills={"billing": 3, "japanese": 8})
        expert = agent_make(queue, capacity=1, skills={"Billing": 5, "japanese": 5})
        item = item_make(
            queue, workstream, account=account, attributes={"skills": {"billing": 5, "Japanese": 5}}
        )

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, expert.pk)]

    def test_exact_matching_leaves_the_item_waiting_when_nobody_has_the_skills(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.EXACT)
        agent_make(queue, skills={"billing": 2})
        item_make(queue, workstream, account=account, attributes={"skills": {"billing": 5}})

        assert queue_assign(queue_id=queue.pk) == 0

    def test_closest_matching_prefers_more_skills_met_then_closer_levels_and_never_excludes(
        self, queue, account
    ):
        workstream = push(queue, skill_matching=SkillMatching.CLOSEST)
        none = agent_make(queue, capacity=10)
        one = agent_make(queue, capacity=9, skills={"billing": 5})
        one_closer = agent_make(queue, capacity=8, skills={"billing": 5, "japanese": 4})
        item = item_make(
            queue, workstream, account=account, attributes={"skills": {"billing": 5, "japanese": 5}}
        )
        facts = item_facts(conversation=item)

        first = assignment_choose(facts=facts, queue_id=queue.pk, workstream=workstream)
        AgentProfile.objects.filter(user__in=[one, one_closer]).update(presence=Presence.OFFLINE)
        only_unskilled = assignment_choose(facts=facts, queue_id=queue.pk, workstream=workstream)

        assert first.agent_id == one_closer.pk
        assert only_unskilled.agent_id == none.pk
        ranked = distribution.candidates_rank(
            candidates=distribution.agents_eligible(
                queue_id=queue.pk, workstream=workstream, units=1, skills=facts.skills
            ),
            workstream=workstream,
            skills=facts.skills,
        )
        assert [c.agent_id for c in ranked] == [none.pk]

    def test_closest_matching_ranks_every_member_by_match(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.CLOSEST)
        none = agent_make(queue, capacity=10)
        one = agent_make(queue, capacity=9, skills={"billing": 5})
        both = agent_make(queue, capacity=1, skills={"billing": 5, "japanese": 6})
        item = item_make(queue, workstream, account=account, attributes={"skills": ["billing", "japanese"]})
        facts = item_facts(conversation=item)

        ranked = distribution.candidates_rank(
            candidates=distribution.agents_eligible(
                queue_id=queue.pk, workstream=workstream, units=1, skills=facts.skills
            ),
            workstream=workstream,
            skills=facts.skills,
        )

        assert [c.agent_id for c in ranked] == [both.pk, one.pk, none.pk]

    def test_no_skill_matching_ignores_the_skills_the_item_asks_for(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.NONE)
        roomy = agent_make(queue, capacity=10)
        agent_make(queue, capacity=2, skills={"billing": 10})
        item = item_make(queue, workstream, account=account, attributes={"skills": {"billing": 5}})

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, roomy.pk)]


class TestAffinity:
    def test_the_previous_agent_gets_a_reopened_conversation_back_when_the_workstream_keeps_the_same_agent(
        self, queue, account
    ):
        workstream = push(queue, keep_same_agent=True)
        previous = agent_make(queue, capacity=3)
        agent_make(queue, capacity=10)
        item = item_make(queue, workstream, account=account)
        active_with(item, previous)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.WAIT, actor=previous)
        # The customer writes again: Waiting > Open, in its queue.
        lifecycle.conversation_transition(conversation=item, action=lifecycle.REOPEN)

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, previous.pk)]

    def test_without_affinity_the_method_decides(self, queue, account):
        workstream = push(queue, keep_same_agent=False)
        previous = agent_make(queue, capacity=3)
        roomy = agent_make(queue, capacity=10)
        item = item_make(queue, workstream, account=account)
        active_with(item, previous)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.WAIT)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.REOPEN)

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, roomy.pk)]

    def test_an_ineligible_previous_agent_does_not_block_the_item(self, queue, account):
        workstream = push(queue, keep_same_agent=True)
        previous = agent_make(queue, capacity=3)
        other = agent_make(queue, capacity=1)
        item = item_make(queue, workstream, account=account)
        active_with(item, previous)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.WAIT)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.REOPEN)
        agent_presence_set(user=previous, presence=Presence.AWAY, actor=previous)

        queue_assign(queue_id=queue.pk)

        assert pending_offers() == [(item.pk, other.pk)]


class TestTheDecisionsCost:
    def test_choosing_an_agent_is_one_query_whatever_the_number_of_members(
        self, queue, account, django_assert_num_queries
    ):
        workstream = push(queue, skill_matching=SkillMatching.CLOSEST)
        for index in range(30):
            agent_make(queue, capacity=5, skills={"billing": index % 10 + 1, "thai": 3})
        item_make(queue, workstream, account=account, attributes={"skills": {"billing": 5}})
        item = distribution.queue_items_waiting(queue_id=queue.pk).select_related("workstream").get()

        # The eligible members with their skills; nobody declined the item, so no declines are read.
        with django_assert_num_queries(1):
            chosen = assignment_choose(
                facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
            )

        assert chosen.skills["billing"] >= 5  # skills came with the members (no other query)

    def test_an_item_declined_before_costs_one_more_query_for_its_declines(
        self, queue, account, django_assert_num_queries
    ):
        workstream = push(queue)
        agent = agent_make(queue)
        other = agent_make(queue, capacity=3)
        item = item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)
        lifecycle.offer_decline(offer_id=Offer.objects.get().pk, state=OfferState.REJECTED, agent=agent)
        item = distribution.queue_items_waiting(queue_id=queue.pk).select_related("workstream").get()
        assert item.has_declines

        with django_assert_num_queries(2):
            chosen = assignment_choose(
                facts=item_facts(conversation=item), queue_id=queue.pk, workstream=workstream
            )

        assert chosen.agent_id in {agent.pk, other.pk}


class TestQueueAssign:
    def test_items_go_out_by_priority_then_oldest_queued(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue, capacity=3)
        now = timezone.now()
        old = item_make(queue, workstream, account=account, queued_at=now - datetime.timedelta(minutes=5))
        urgent = item_make(queue, workstream, account=account, priority=1, queued_at=now)
        older = item_make(queue, workstream, account=account, queued_at=now - datetime.timedelta(minutes=9))
        item_make(queue, workstream, account=account, queued_at=now)

        assert queue_assign(queue_id=queue.pk) == 3

        assert pending_offers(agent=agent) == [
            (urgent.pk, agent.pk),
            (older.pk, agent.pk),
            (old.pk, agent.pk),
        ]

    def test_an_offer_expires_after_the_workstreams_timeout(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=45)
        agent_make(queue)
        item_make(queue, workstream, account=account)
        before = timezone.now()

        queue_assign(queue_id=queue.pk)

        offer = Offer.objects.get()
        assert before + datetime.timedelta(seconds=45) <= offer.expires_at
        assert offer.expires_at <= timezone.now() + datetime.timedelta(seconds=45)

    def test_auto_accept_assigns_at_once_holding_capacity(self, queue, account):
        workstream = push(queue, auto_accept=True)
        agent = agent_make(queue, capacity=2)
        item = item_make(queue, workstream, account=account)

        assert queue_assign(queue_id=queue.pk) == 1

        item.refresh_from_db()
        assert item.state == ConversationState.ACTIVE
        assert item.assigned_agent_id == agent.pk
        assert used(agent) == 1
        assert list(Offer.objects.values_list("agent_id", "state")) == [(agent.pk, OfferState.ACCEPTED)]

    def test_pick_workstreams_are_never_offered(self, queue, account):
        workstream = workstream_make("Pickers", fallback=queue, distribution_mode=DistributionMode.PICK)
        agent_make(queue)
        item_make(queue, workstream, account=account)

        assert queue_assign(queue_id=queue.pk) == 0
        assert pending_offers() == []

    def test_items_of_a_queue_out_of_its_hours_wait_unless_routing_assigned_them_anyway(self, queue, account):
        hours_add(queue, (timezone.now().weekday() + 3) % 7, "09:00", "10:00")
        workstream = push(queue)
        agent = agent_make(queue)
        waiting = item_make(queue, workstream, account=account, priority=1)
        anyway = item_make(queue, workstream, account=account, priority=5)
        Conversation.objects.filter(pk=anyway.pk).update(routing={"attributes": {}, "assign_anyway": True})

        assert queue_assign(queue_id=queue.pk) == 1
        assert pending_offers() == [(anyway.pk, agent.pk)]

        queue.operating_hours.all().delete()  # open every day, all day now
        assert queue_assign(queue_id=queue.pk) == 1
        assert pending_offers() == [(anyway.pk, agent.pk), (waiting.pk, agent.pk)]

    def test_a_run_for_one_item_gives_out_the_items_ahead_of_it_then_stops_there(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue, capacity=5)
        now = timezone.now()
        ahead = item_make(queue, workstream, account=account, queued_at=now - datetime.timedelta(minutes=2))
        arrived = item_make(queue, workstream, account=account, queued_at=now - datetime.timedelta(minutes=1))
        behind = item_make(queue, workstream, account=account, queued_at=now)

        assert queue_assign(queue_id=queue.pk, until=arrived.pk) == 2

        assert pending_offers() == [(ahead.pk, agent.pk), (arrived.pk, agent.pk)]
        assert behind.pk in {c.pk for c in distribution.queue_items_waiting(queue_id=queue.pk)}

    def test_a_run_for_an_item_nobody_can_take_stops_at_it(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.EXACT)
        agent_make(queue)
        french = item_make(
            queue, workstream, account=account, priority=1, attributes={"skills": {"french": 3}}
        )
        item_make(queue, workstream, account=account, priority=5)

        assert queue_assign(queue_id=queue.pk, until=french.pk) == 0
        assert pending_offers() == []

    def test_a_run_for_an_item_given_out_meanwhile_gives_out_the_whole_queue(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue)
        offered = item_make(queue, workstream, account=account)
        queue_assign(queue_id=queue.pk)
        first = item_make(queue, workstream, account=account)
        second = item_make(queue, workstream, account=account)

        assert queue_assign(queue_id=queue.pk, until=offered.pk) == 2
        assert [c for c, _ in pending_offers(agent=agent)] == [offered.pk, first.pk, second.pk]

    def test_an_item_nobody_can_take_does_not_hold_up_the_next(self, queue, account):
        workstream = push(queue, skill_matching=SkillMatching.EXACT)
        agent = agent_make(queue)
        item_make(queue, workstream, account=account, priority=1, attributes={"skills": {"french": 3}})
        plain = item_make(queue, workstream, account=account, priority=5)

        assert queue_assign(queue_id=queue.pk) == 1

        assert pending_offers() == [(plain.pk, agent.pk)]


# --- Pick ----------------------------------------------------------------------------------------


@pytest.fixture
def pick_queue(queue):
    return workstream_make("Pickers", fallback=queue, distribution_mode=DistributionMode.PICK)


class TestPick:
    def test_a_member_picks_an_open_item_and_holds_its_capacity(self, queue, pick_queue, account):
        agent = agent_make(queue, capacity=2)
        item = item_make(queue, pick_queue, account=account)

        picked = conversation_pick(conversation=item, agent=agent)

        assert picked.state == ConversationState.ACTIVE
        assert Conversation.objects.get(pk=item.pk).assigned_agent_id == agent.pk
        assert used(agent) == 1

    def test_the_second_agent_to_pick_is_told_someone_was_first(self, queue, pick_queue, account):
        first, second = agent_make(queue), agent_make(queue)
        item = item_make(queue, pick_queue, account=account)
        conversation_pick(conversation=item, agent=first)

        with pytest.raises(LifecycleConflict) as error:
            conversation_pick(conversation=Conversation.objects.get(pk=item.pk), agent=second)

        assert error.value.message == PICK_LOST
        assert used(second) == 0

    def test_a_stale_copy_picked_late_is_refused_too(self, queue, pick_queue, account):
        first, second = agent_make(queue), agent_make(queue)
        item = item_make(queue, pick_queue, account=account)
        stale = Conversation.objects.get(pk=item.pk)
        conversation_pick(conversation=item, agent=first)

        with pytest.raises(LifecycleConflict, match="Another agent picked"):
            conversation_pick(conversation=stale, agent=second)

    def test_push_workstreams_refuse_a_pick(self, queue, account):
        agent = agent_make(queue)
        item = item_make(queue, push(queue), account=account)

        with pytest.raises(LifecycleConflict) as error:
            conversation_pick(conversation=item, agent=agent)

        assert error.value.message == PICK_REFUSED_PUSH

    def test_an_agent_outside_the_queue_cannot_pick(self, queue, pick_queue, account):
        outsider = agent_make(queue_make("Elsewhere"))
        item = item_make(queue, pick_queue, account=account)

        with pytest.raises(PermissionDenied):
            conversation_pick(conversation=item, agent=outsider)
        assert Conversation.objects.get(pk=item.pk).state == ConversationState.OPEN

    def test_an_agent_without_room_cannot_pick(self, queue, pick_queue, account):
        agent = agent_make(queue, capacity=1, used=1)
        item = item_make(queue, pick_queue, account=account)

        with pytest.raises(CapacityExhausted):
            conversation_pick(conversation=item, agent=agent)
        item.refresh_from_db()
        assert (item.state, item.assigned_agent_id) == (ConversationState.OPEN, None)


# --- Transfer ------------------------------------------------------------------------------------


class TestTransfer:
    def test_to_a_queue_it_is_open_there_with_the_agents_capacity_released(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue, capacity=3)
        target = queue_make("Escalations")
        item = item_make(queue, workstream, account=account)
        active_with(item, agent)

        moved = conversation_transfer(conversation=item, actor=agent, queue=target, note="Needs a specialist")

        moved.refresh_from_db()
        assert (moved.state, moved.queue_id, moved.assigned_agent_id) == (
            ConversationState.OPEN,
            target.pk,
            None,
        )
        assert moved.previous_agent_id == agent.pk
        assert used(agent) == 0
        assert moved.activities.filter(kind="transferred", note="Needs a specialist").exists()

    def test_to_an_agent_it_is_offered_to_them_in_the_same_transaction(self, queue, account):
        workstream = push(queue, offer_timeout_seconds=60)
        agent = agent_make(queue)
        colleague = agent_make(queue_make("Not this queue"))
        item = item_make(queue, workstream, account=account)
        active_with(item, agent)

        conversation_transfer(conversation=item, actor=agent, agent=colleague)

        item.refresh_from_db()
        assert (item.state, item.queue_id) == (ConversationState.OPEN, queue.pk)
        assert pending_offers() == [(item.pk, colleague.pk)]
        assert (used(agent), used(colleague)) == (0, 1)

    def test_to_an_agent_without_room_nothing_is_transferred(self, queue, account):
        workstream = push(queue)
        agent = agent_make(queue)
        full = agent_make(queue, capacity=1, used=1)
        item = item_make(queue, workstream, account=account)
        active_with(item, agent)

        with pytest.raises(CapacityExhausted, match="Not transferred"):
            conversation_transfer(conversation=item, actor=agent, agent=full)

        item.refresh_from_db()
        assert (item.state, item.assigned_agent_id) == (ConversationState.ACTIVE, agent.pk)
        assert (used(agent), used(full)) == (1, 1)
        assert pending_offers() == []

    def test_neither_a_queue_nor_an_agent_is_refused(self, queue, account):
        item = item_make(queue, push(queue), account=account)

        with pytest.raises(ValidationError):
            conversation_transfer(conversation=item, actor=None)

    def test_a_conversation_in_wrap_up_cannot_be_transferred(self, queue, account):
        agent = agent_make(queue)
        item = item_make(queue, push(queue), account=account)
        active_with(item, agent)
        lifecycle.conversation_transition(conversation=item, action=lifecycle.END, note="done")

        with pytest.raises(LifecycleConflict):
            conversation_transfer(conversation=item, actor=agent, queue=queue_make("Later"))


# --- Presence ------------------------------------------------------------------------------------


class TestPresence:
    def test_a_change_is_recorded_and_announced_once(self, queue, django_capture_on_commit_callbacks):
        agent = agent_make(queue, presence=Presence.OFFLINE)
        with django_capture_on_commit_callbacks() as callbacks:
            profile = agent_presence_set(user=agent, presence=Presence.AVAILABLE, actor=agent)
        with django_capture_on_commit_callbacks() as repeated:
            agent_presence_set(user=agent, presence=Presence.AVAILABLE, actor=agent)

        assert profile.presence == Presence.AVAILABLE
        assert profile.presence_changed_at is not None
        assert len(callbacks) == 1
        assert repeated == []

    def test_an_unknown_presence_is_refused(self, queue):
        agent = agent_make(queue, presence=Presence.OFFLINE)

        with pytest.raises(ValidationError) as error:
            agent_presence_set(user=agent, presence="napping", actor=agent)

        assert "presence" in error.value.message_dict
        assert AgentProfile.objects.get(user=agent).presence == Presence.OFFLINE

    def test_a_user_without_a_profile_gets_one(self):
        user = AgentFactory()

        profile = agent_presence_set(user=user, presence=Presence.BUSY, actor=user)

        assert AgentProfile.objects.get(user=user).presence == Presence.BUSY == profile.presence


# --- The events that run assignment --------------------------------------------------------------


@pytest.fixture
def queued_tasks(monkeypatch) -> list[tuple[str, tuple]]:
    """The distribution tasks the event handlers queue (kept here instead of sent)."""
    from routing import tasks

    calls: list[tuple[str, tuple]] = []
    for name in ("queue_assign", "agent_queues_assign"):
        monkeypatch.setattr(getattr(tasks, name), "delay", lambda *args, _n=name: calls.append((_n, args)))
    return calls


class TestAssignmentTriggers:
    def test_a_queued_conversation_queues_assignment_for_its_queue(
        self, queue, account, queued_tasks, django_capture_on_commit_callbacks
    ):
        item = item_make(queue, push(queue), account=account)
        agent = agent_make(queue)
        active_with(item, agent)

        with django_capture_on_commit_callbacks(execute=True):
            conversation_transfer(conversation=item, actor=agent, queue=queue)

        # Up to that item: a run for this arrival stops once it is given out.
        assert ("queue_assign", (queue.pk, item.pk)) in queued_tasks

    def test_a_new_member_queues_assignment_for_the_queue(
        self, queue, queued_tasks, django_capture_on_commit_callbacks
    ):
        agent = AgentFactory()

        with django_capture_on_commit_callbacks(execute=True):
            routing_record_save(record=QueueMembership(queue=queue, user=agent))
        with django_capture_on_commit_callbacks(execute=True):
            membership = QueueMembership.objects.get(queue=queue, user=agent)
            routing_record_save(record=membership)

        assert queued_tasks == [("queue_assign", (queue.pk,))]

    def test_released_capacity_and_a_presence_change_queue_assignment_for_the_agent(
        self, queue, account, queued_tasks, django_capture_on_commit_callbacks
    ):
        agent = agent_make(queue, presence=Presence.AWAY)
        item = item_make(queue, push(queue), account=account)
        active_with(item, agent)

        with django_capture_on_commit_callbacks(execute=True):
            lifecycle.conversation_transition(conversation=item, action=lifecycle.WAIT)
        with django_capture_on_commit_callbacks(execute=True):
            agent_presence_set(user=agent, presence=Presence.AVAILABLE, actor=agent)

        assert queued_tasks == [("agent_queues_assign", (agent.pk,)), ("agent_queues_assign", (agent.pk,))]

    def test_an_agent_going_away_or_without_room_gives_nobody_work(self, account):
        queue = queue_make("Quiet")
        workstream = push(queue)
        away = agent_make(queue, presence=Presence.AWAY)
        full = agent_make(queue, capacity=1, used=1)
        item_make(queue, workstream, account=account)
        agent_make(queue)  # someone who could take it: only their own events give it to them

        assert distribution.agent_queues_assign(agent_id=away.pk) == 0
        assert distribution.agent_queues_assign(agent_id=full.pk) == 0
        assert pending_offers() == []

    def test_an_agent_with_room_again_gets_work_of_their_highest_priority_queue_first(self, account):
        low = queue_make("Low", priority=20)
        high = queue_make("High", priority=1)
        agent = agent_make(low, high, capacity=1)
        in_low = item_make(
            low, push(low), account=account, queued_at=timezone.now() - datetime.timedelta(hours=1)
        )
        in_high = item_make(high, push(high), account=account)

        assert distribution.agent_queues_assign(agent_id=agent.pk) == 1

        assert pending_offers() == [(in_high.pk, agent.pk)]
        assert Conversation.objects.get(pk=in_low.pk).state == ConversationState.OPEN
