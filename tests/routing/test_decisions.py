"""routing_decide: classification and route-to-queue over real records, at fixed times (no clock)."""

from __future__ import annotations

import datetime

import pytest

from omnichannel.models import ConversationState
from routing.models import ClassificationRule, OverflowAction
from routing.services import Outcome, routing_decide, routing_facts_sample
from tests.factories import ConversationFactory
from tests.routing.conftest import (
    holiday_add,
    hours_add,
    queue_make,
    route_make,
    rule_set_make,
    workstream_make,
)

pytestmark = pytest.mark.django_db

# Monday 2026-03-02, 10:00 in Bangkok (03:00 UTC).
MONDAY_10_BANGKOK = datetime.datetime(2026, 3, 2, 3, 0, tzinfo=datetime.UTC)
# Monday 2026-03-02, 20:00 in Bangkok.
MONDAY_20_BANGKOK = datetime.datetime(2026, 3, 2, 13, 0, tzinfo=datetime.UTC)


def contains(text: str) -> list[dict]:
    return [{"field": "message.text", "operator": "contains", "value": text}]


def decide(workstream, *, text: str = "", at=MONDAY_10_BANGKOK, split_key=1, **facts):
    return routing_decide(
        workstream=workstream, facts=routing_facts_sample(text=text, **facts), at=at, split_key=split_key
    )


def office_hours(queue) -> None:
    for day in range(5):
        hours_add(queue, day, "09:00", "18:00")


class TestRouteToQueue:
    def test_the_first_matching_rule_in_order_wins(self):
        workstream = workstream_make()
        billing, orders = queue_make("Billing"), queue_make("Orders")
        route_make(workstream, "Orders", contains("order"), orders, order=2)
        route_make(workstream, "Billing", contains("invoice"), billing, order=1)

        decision = decide(workstream, text="The invoice of my order")

        assert decision.queue == billing
        assert decision.outcome == Outcome.QUEUED
        assert decision.reason == "Route-to-queue rule 'Billing' matched: queue 'Billing'."
        assert [m["name"] for m in decision.matched] == ["Billing"]

    def test_reordering_the_rules_changes_the_winner(self):
        workstream = workstream_make()
        billing, orders = queue_make("Billing"), queue_make("Orders")
        route_make(workstream, "Orders", contains("order"), orders, order=1)
        route_make(workstream, "Billing", contains("invoice"), billing, order=2)

        assert decide(workstream, text="The invoice of my order").queue == orders

    def test_no_matching_rule_sends_the_work_to_the_fallback_queue(self):
        workstream = workstream_make()
        route_make(workstream, "Billing", contains("invoice"), queue_make("Billing"))

        decision = decide(workstream, text="Hello")

        assert decision.queue == workstream.fallback_queue
        assert decision.reason == "No route-to-queue rule matched: the fallback queue 'Support fallback'."
        assert decision.matched == []

    def test_a_matching_rule_whose_queue_is_full_gives_way_to_the_next_match(self):
        workstream = workstream_make()
        full = queue_make("Billing", open_items_limit=1, open_items_action=OverflowAction.ASSIGN_ANYWAY)
        spare = queue_make("Billing overflow")
        ConversationFactory(queue=full, state=ConversationState.OPEN)
        route_make(workstream, "Billing", contains("invoice"), full, order=1)
        route_make(workstream, "Anything", [], spare, order=2)

        decision = decide(workstream, text="invoice")

        assert decision.queue == spare
        assert [(m["name"], m["overflowing"]) for m in decision.matched] == [
            ("Billing", True),
            ("Anything", False),
        ]

    def test_conditions_on_the_hour_read_the_workstreams_time_zone(self):
        workstream = workstream_make(timezone="Asia/Bangkok")
        morning = queue_make("Morning")
        route_make(
            workstream, "Mornings", [{"field": "time.hour", "operator": "in", "value": [9, 10, 11]}], morning
        )

        assert decide(workstream, at=MONDAY_10_BANGKOK).queue == morning
        assert decide(workstream, at=MONDAY_20_BANGKOK).queue == workstream.fallback_queue


class TestPercentageSplit:
    def test_a_split_sends_shares_of_conversations_to_each_queue_by_conversation_id(self):
        workstream = workstream_make()
        first, second = queue_make("First"), queue_make("Second")
        route_make(
            workstream,
            "Half and half",
            [],
            split=[{"queue": first.pk, "percent": 50}, {"queue": second.pk, "percent": 50}],
        )

        picks = [decide(workstream, split_key=key).queue for key in range(40)]

        assert set(picks) == {first, second}
        assert 10 < picks.count(first) < 30
        # The same conversation always lands in the same queue.
        assert [decide(workstream, split_key=key).queue for key in range(40)] == picks

    def test_a_hundred_percent_share_takes_everything(self):
        workstream = workstream_make()
        only, never = queue_make("Only"), queue_make("Never")
        route_make(workstream, "All", [], split=[{"queue": only.pk, "percent": 100}])
        route_make(workstream, "Later", [], never, order=5)

        assert {decide(workstream, split_key=key).queue for key in range(20)} == {only}


class TestClassification:
    def test_in_each_set_the_first_matching_rule_writes_and_later_sets_read_it(self):
        workstream = workstream_make()
        rule_set_make(
            workstream,
            "Customer tier",
            1,
            [
                (
                    "VIP",
                    [{"field": "context.tier", "operator": "equals", "value": "gold"}],
                    {"context": {"vip": True}, "priority": 1},
                ),
                (
                    "Also gold, never reached",
                    [{"field": "context.tier", "operator": "exists"}],
                    {"priority": 50},
                ),
            ],
        )
        rule_set_make(
            workstream,
            "Skills",
            2,
            [
                (
                    "VIP billing",
                    [{"field": "context.vip", "operator": "equals", "value": True}, *contains("invoice")],
                    {"skills": {"billing": 7}, "capacity": 3},
                ),
            ],
        )
        rule_set_make(
            workstream,
            "Reads priority",
            3,
            [
                (
                    "Urgent",
                    [{"field": "work.priority", "operator": "equals", "value": 1}],
                    {"context": {"urgent": "yes"}},
                )
            ],
        )
        vip_queue = queue_make("VIP")
        route_make(
            workstream, "VIPs", [{"field": "context.urgent", "operator": "equals", "value": "yes"}], vip_queue
        )

        decision = decide(workstream, text="My invoice", context={"tier": "gold"})

        assert decision.attributes.as_record() == {
            "priority": 1,
            "capacity": 3,
            "skills": {"billing": 7},
            "context": {"vip": True, "urgent": "yes"},
        }
        assert [(m["kind"], m["name"]) for m in decision.matched] == [
            ("classification", "VIP"),
            ("classification", "VIP billing"),
            ("classification", "Urgent"),
            ("route", "VIPs"),
        ]
        assert decision.queue == vip_queue

    def test_sets_run_in_their_order_so_an_earlier_set_cannot_read_a_later_one(self):
        workstream = workstream_make()
        rule_set_make(
            workstream,
            "Reads",
            1,
            [("Sees urgent", [{"field": "context.urgent", "operator": "exists"}], {"priority": 2})],
        )
        rule_set_make(workstream, "Writes", 2, [("Urgent", [], {"context": {"urgent": True}})])

        decision = decide(workstream)

        assert decision.attributes.priority is None
        assert decision.attributes.context == {"urgent": True}

    def test_a_rule_that_cannot_be_evaluated_sends_the_work_to_the_fallback_queue_with_the_error(
        self, caplog
    ):
        workstream = workstream_make()
        rule_set = rule_set_make(workstream, "Broken", 1, [("Bad regex", contains("x"), {"priority": 1})])
        # Stored past validation (an old row, an edit in the database).
        ClassificationRule.objects.filter(rule_set=rule_set).update(
            conditions=[{"field": "message.text", "operator": "regex", "value": "(unclosed"}]
        )
        route_make(workstream, "Everything", [], queue_make("Elsewhere"))

        decision = decide(workstream, text="x")

        assert decision.queue == workstream.fallback_queue
        assert decision.outcome == Outcome.QUEUED
        assert decision.reason.startswith(
            "Classification failed (classification rule 'Bad regex' of set 'Broken': bad regular expression"
        )
        assert decision.error
        assert "Routing failed at classification rule 'Bad regex'" in caplog.text


class TestOverflowBeforeQueueing:
    def out_of_hours_queue(self, **fields):
        queue = queue_make("Daytime", timezone="Asia/Bangkok", **fields)
        office_hours(queue)
        return queue

    def routed_to(self, queue, **kwargs):
        workstream = workstream_make()
        route_make(workstream, "All", [], queue)
        return decide(workstream, **kwargs)

    def test_out_of_hours_with_end_ends_the_conversation_with_the_queues_message(self):
        queue = self.out_of_hours_queue(
            out_of_hours_action=OverflowAction.END, out_of_hours_message="We open at 9."
        )

        decision = self.routed_to(queue, at=MONDAY_20_BANGKOK)

        assert decision.outcome == Outcome.ENDED
        assert decision.overflow.message == "We open at 9."
        assert decision.overflow.condition == "out_of_hours"
        assert "queue 'Daytime' is out of its operating hours: the conversation ends" in decision.reason

    def test_within_hours_the_same_queue_takes_the_work(self):
        queue = self.out_of_hours_queue(
            out_of_hours_action=OverflowAction.END, out_of_hours_message="Closed."
        )

        decision = self.routed_to(queue, at=MONDAY_10_BANGKOK)

        assert (decision.queue, decision.outcome, decision.overflow) == (queue, Outcome.QUEUED, None)

    def test_out_of_hours_with_transfer_sends_the_work_to_the_other_queue(self):
        night = queue_make("Night shift")
        queue = self.out_of_hours_queue(
            out_of_hours_action=OverflowAction.TRANSFER, out_of_hours_transfer_queue=night
        )

        decision = self.routed_to(queue, at=MONDAY_20_BANGKOK)

        assert decision.queue == night
        assert decision.outcome == Outcome.QUEUED
        assert decision.reason.endswith("transferred to queue 'Night shift'.")

    def test_out_of_hours_with_assign_anyway_keeps_the_queue_and_says_so(self):
        queue = self.out_of_hours_queue(out_of_hours_action=OverflowAction.ASSIGN_ANYWAY)

        decision = self.routed_to(queue, at=MONDAY_20_BANGKOK)

        assert (decision.queue, decision.assign_anyway) == (queue, True)
        assert decision.reason.endswith("assigned anyway.")

    def test_out_of_hours_without_an_action_the_work_waits_in_the_queue(self):
        queue = self.out_of_hours_queue()

        decision = self.routed_to(queue, at=MONDAY_20_BANGKOK)

        assert (decision.queue, decision.outcome, decision.overflow) == (queue, Outcome.QUEUED, None)

    def test_a_holiday_is_out_of_hours_all_day(self):
        queue = self.out_of_hours_queue(
            out_of_hours_action=OverflowAction.END, out_of_hours_message="Holiday."
        )
        holiday_add(queue, "2026-03-02", "Makha Bucha")

        assert self.routed_to(queue, at=MONDAY_10_BANGKOK).outcome == Outcome.ENDED

    def test_a_queue_holding_its_limit_of_open_items_overflows_and_one_below_does_not(self):
        other = queue_make("Other")
        queue = queue_make(
            "Small",
            open_items_limit=2,
            open_items_action=OverflowAction.TRANSFER,
            open_items_transfer_queue=other,
        )
        ConversationFactory(queue=queue, state=ConversationState.OPEN)
        ConversationFactory(queue=queue, state=ConversationState.ACTIVE)  # assigned: not an open item
        ConversationFactory(queue=queue, state=ConversationState.CLOSED, closed_at=MONDAY_10_BANGKOK)

        workstream = workstream_make()
        route_make(workstream, "All", [], queue)
        assert decide(workstream).queue == queue

        ConversationFactory(queue=queue, state=ConversationState.OPEN)
        decision = decide(workstream)
        assert decision.queue == other
        assert decision.overflow.condition == "open_items"
        assert decision.overflow.open_items == 2
        assert (
            "queue 'Small' is full (2 open items, limit 2): transferred to queue 'Other'." in decision.reason
        )

    def test_when_every_matching_queue_overflows_the_first_ones_action_applies(self):
        first = queue_make(
            "First", open_items_limit=1, open_items_action=OverflowAction.END, open_items_message="Busy!"
        )
        second = queue_make("Second", open_items_limit=1, open_items_action=OverflowAction.ASSIGN_ANYWAY)
        ConversationFactory(queue=first, state=ConversationState.OPEN)
        ConversationFactory(queue=second, state=ConversationState.OPEN)
        workstream = workstream_make()
        route_make(workstream, "First", [], first, order=1)
        route_make(workstream, "Second", [], second, order=2)

        decision = decide(workstream)

        assert (decision.queue, decision.outcome) == (first, Outcome.ENDED)
        assert decision.reason.startswith(
            "Route-to-queue rule 'First' matched but every matching queue overflows"
        )

    def test_a_fallback_queue_that_overflows_applies_its_own_action(self):
        fallback = queue_make(
            "Fallback", open_items_limit=1, open_items_action=OverflowAction.END, open_items_message="Full"
        )
        ConversationFactory(queue=fallback, state=ConversationState.OPEN)
        workstream = workstream_make(fallback=fallback)

        decision = decide(workstream)

        assert (decision.queue, decision.outcome) == (fallback, Outcome.ENDED)

    def test_a_transfer_is_followed_once_even_between_two_queues_that_point_at_each_other(self):
        a = queue_make("A", timezone="Asia/Bangkok")
        b = queue_make("B", timezone="Asia/Bangkok")
        for queue, target in ((a, b), (b, a)):
            office_hours(queue)
            queue.out_of_hours_action = OverflowAction.TRANSFER
            queue.out_of_hours_transfer_queue = target
            queue.save()

        assert self.routed_to(a, at=MONDAY_20_BANGKOK).queue == b
