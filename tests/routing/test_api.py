"""The routing set-up API: /api/v1/queues/, /api/v1/workstreams/ (with their route-to-queue rules,
classification rule sets and test-routing) and /api/v1/channel-instances/. Roles, writes through
routing.services with the records' own messages, parts replaced as a whole in one transaction, 409 on
deleting what is in use, fixed query counts on lists."""

from __future__ import annotations

import datetime
from collections import defaultdict

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from omnichannel import events
from omnichannel.models import ConversationState
from routing.models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    DistributionMode,
    Queue,
    QueueHoliday,
    QueueMembership,
    QueueOperatingHours,
    RouteToQueueRule,
    Workstream,
)
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    ConversationFactory,
    LineMessagingAccountFactory,
    SupervisorFactory,
)
from tests.routing.conftest import (
    holiday_add,
    hours_add,
    instance_make,
    queue_make,
    route_make,
    rule_set_make,
    workstream_make,
)

pytestmark = pytest.mark.django_db

QUEUES = "/api/v1/queues/"
WORKSTREAMS = "/api/v1/workstreams/"
INSTANCES = "/api/v1/channel-instances/"
INVOICE = [{"field": "message.text", "operator": "contains", "value": "invoice"}]


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def token_api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def routes_url(workstream: Workstream) -> str:
    return f"{WORKSTREAMS}{workstream.pk}/route-to-queue-rules/"


def rule_sets_url(workstream: Workstream) -> str:
    return f"{WORKSTREAMS}{workstream.pk}/classification-rulesets/"


def routing_test_url(workstream: Workstream) -> str:
    return f"{WORKSTREAMS}{workstream.pk}/test-routing/"


@pytest.fixture
def admin_api() -> APIClient:
    return api_for(AdministratorFactory())


@pytest.fixture
def supervisor_api() -> APIClient:
    return api_for(SupervisorFactory())


@pytest.fixture
def agent_api() -> APIClient:
    return api_for(AgentFactory())


@pytest.fixture
def announced(monkeypatch) -> list[events.DomainEvent]:
    """Domain events delivered after commit, caught by a subscriber of this test only."""
    monkeypatch.setattr(events, "_subscribers", defaultdict(list))
    caught: list[events.DomainEvent] = []
    events.subscribe(events.QUEUE_MEMBER_ADDED, caught.append)
    return caught


class TestRoles:
    def test_a_supervisor_reads_every_set_up_list_but_cannot_change_anything(self, supervisor_api):
        workstream = workstream_make("Support")
        instance_make(workstream)

        for url in (QUEUES, WORKSTREAMS, INSTANCES, routes_url(workstream), rule_sets_url(workstream)):
            assert supervisor_api.get(url).status_code == 200, url
        assert supervisor_api.post(QUEUES, {"name": "Mine"}, format="json").status_code == 403
        assert (
            supervisor_api.patch(f"{WORKSTREAMS}{workstream.pk}/", {"name": "X"}, format="json").status_code
            == 403
        )
        assert supervisor_api.delete(f"{QUEUES}{workstream.fallback_queue_id}/").status_code == 403
        assert not Queue.objects.filter(name="Mine").exists()
        assert Workstream.objects.get(pk=workstream.pk).name == "Support"

    def test_an_agent_gets_403_on_every_set_up_endpoint_even_for_an_unknown_workstream(self, agent_api):
        workstream = workstream_make("Support")
        for url in (
            QUEUES,
            WORKSTREAMS,
            INSTANCES,
            routes_url(workstream),
            rule_sets_url(workstream),
            f"{WORKSTREAMS}999999/route-to-queue-rules/",
        ):
            assert agent_api.get(url).status_code == 403, url
        assert agent_api.post(routing_test_url(workstream), {}, format="json").status_code == 403

    def test_an_anonymous_client_gets_401(self):
        assert APIClient().get(QUEUES).status_code == 401
        assert APIClient().post(WORKSTREAMS, {}, format="json").status_code == 401

    def test_a_signed_in_session_works_too(self, client):
        queue_make("General")
        client.force_login(SupervisorFactory())
        response = client.get(QUEUES)
        assert response.status_code == 200
        assert [queue["name"] for queue in response.json()["results"]] == ["General"]


class TestQueues:
    def test_an_administrator_creates_a_queue_with_members_hours_holidays_and_overflow(
        self, admin_api, announced, django_capture_on_commit_callbacks
    ):
        first, second = AgentFactory(), AgentFactory()
        spill = queue_make("Spill")
        body = {
            "name": "Billing",
            "priority": 5,
            "members": [second.pk, first.pk],
            "timezone": "Asia/Bangkok",
            "operating_hours": [
                {"weekday": 0, "start": "09:00", "end": "12:00"},
                {"weekday": 0, "start": "13:00", "end": "18:00"},
            ],
            "holidays": [{"date": "2026-12-31", "name": "New Year's Eve"}],
            "open_items_limit": 20,
            "open_items_action": "transfer",
            "open_items_transfer_queue": spill.pk,
            "out_of_hours_action": "end",
            "out_of_hours_message": "We are closed.",
        }

        with django_capture_on_commit_callbacks(execute=True):
            response = admin_api.post(QUEUES, body, format="json")

        assert response.status_code == 201, response.content
        data = response.json()
        queue = Queue.objects.get(name="Billing")
        assert data["id"] == queue.pk
        assert data["members"] == sorted([first.pk, second.pk])
        assert data["operating_hours"] == [
            {"weekday": 0, "start": "09:00:00", "end": "12:00:00"},
            {"weekday": 0, "start": "13:00:00", "end": "18:00:00"},
        ]
        assert data["holidays"] == [{"date": "2026-12-31", "name": "New Year's Eve"}]
        assert (data["open_items_transfer_queue"], data["out_of_hours_message"]) == (
            spill.pk,
            "We are closed.",
        )
        assert (queue.priority, queue.timezone, queue.open_items_limit) == (5, "Asia/Bangkok", 20)
        assert set(queue.members.values_list("pk", flat=True)) == {first.pk, second.pk}
        assert sorted((event.data["queue_id"], event.data["agent_id"]) for event in announced) == sorted(
            [(queue.pk, first.pk), (queue.pk, second.pk)]
        )

    def test_members_hours_and_holidays_are_replaced_as_a_whole_and_a_staying_member_keeps_their_row(
        self, admin_api, announced, django_capture_on_commit_callbacks
    ):
        stays, leaves, joins = AgentFactory(), AgentFactory(), AgentFactory()
        queue = queue_make("Billing")
        kept = QueueMembership.objects.create(queue=queue, user=stays)
        QueueMembership.objects.create(queue=queue, user=leaves)
        hours_add(queue, 0, "09:00", "17:00")
        hours_add(queue, 1, "09:00", "17:00")
        holiday_add(queue, "2026-12-25", "Christmas")

        with django_capture_on_commit_callbacks(execute=True):
            response = admin_api.patch(
                f"{QUEUES}{queue.pk}/",
                {
                    "members": [stays.pk, joins.pk],
                    "operating_hours": [{"weekday": 5, "start": "10:00", "end": "14:00"}],
                    "holidays": [],
                },
                format="json",
            )

        assert response.status_code == 200, response.content
        assert response.json()["members"] == sorted([stays.pk, joins.pk])
        assert response.json()["operating_hours"] == [{"weekday": 5, "start": "10:00:00", "end": "14:00:00"}]
        assert response.json()["holidays"] == []
        assert set(QueueMembership.objects.filter(queue=queue).values_list("user_id", flat=True)) == {
            stays.pk,
            joins.pk,
        }
        assert QueueMembership.objects.filter(pk=kept.pk).exists()
        assert list(QueueOperatingHours.objects.filter(queue=queue).values_list("weekday", flat=True)) == [5]
        assert not QueueHoliday.objects.filter(queue=queue).exists()
        assert [event.data["agent_id"] for event in announced] == [joins.pk]

    def test_a_patch_without_the_parts_leaves_them_as_they_are(self, admin_api):
        agent = AgentFactory()
        queue = queue_make("Billing")
        QueueMembership.objects.create(queue=queue, user=agent)
        hours_add(queue, 0, "09:00", "17:00")

        response = admin_api.patch(f"{QUEUES}{queue.pk}/", {"priority": 1}, format="json")

        assert response.status_code == 200
        assert response.json()["members"] == [agent.pk]
        assert len(response.json()["operating_hours"]) == 1
        assert Queue.objects.get(pk=queue.pk).priority == 1

    def test_a_bad_opening_period_is_refused_with_its_place_and_nothing_changes(self, admin_api):
        agent = AgentFactory()
        queue = queue_make("Billing")
        hours_add(queue, 0, "09:00", "17:00")

        response = admin_api.patch(
            f"{QUEUES}{queue.pk}/",
            {
                "name": "Renamed",
                "members": [agent.pk],
                "operating_hours": [
                    {"weekday": 1, "start": "09:00", "end": "12:00"},
                    {"weekday": 1, "start": "18:00", "end": "08:00"},
                ],
            },
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {
            "operating_hours": [
                "operating_hours[1].end: The end must come after the start (split a night shift in two rows)."
            ]
        }
        queue.refresh_from_db()
        assert queue.name == "Billing"
        assert not queue.members.exists()
        assert list(queue.operating_hours.values_list("weekday", flat=True)) == [0]

    def test_unknown_members_and_a_date_given_twice_are_refused(self, admin_api):
        response = admin_api.post(
            QUEUES,
            {
                "name": "Billing",
                "members": [999999],
                "holidays": [{"date": "2026-12-25"}, {"date": "2026-12-25", "name": "Again"}],
            },
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {
            "members": ["Unknown user ID(s): 999999."],
            "holidays": ["Date(s) given twice: 2026-12-25."],
        }
        assert not Queue.objects.filter(name="Billing").exists()

    def test_an_overflow_transfer_without_its_queue_is_refused_on_the_field_the_model_names(self, admin_api):
        response = admin_api.post(
            QUEUES, {"name": "Billing", "wait_limit_seconds": 600, "wait_action": "transfer"}, format="json"
        )

        assert response.status_code == 400
        assert response.json() == {"wait_transfer_queue": ["Pick the queue to transfer to."]}

    def test_the_list_is_by_priority_then_name_in_a_fixed_number_of_queries(self, django_assert_num_queries):
        api = token_api_for(SupervisorFactory())
        for name, priority in (("Zulu", 1), ("Alpha", 2), ("Bravo", 1)):
            queue = queue_make(name, priority=priority)
            QueueMembership.objects.create(queue=queue, user=AgentFactory())
            hours_add(queue, 0, "09:00", "17:00")
            holiday_add(queue, "2026-12-25")

        # Token and user, the user's permissions (two), count, page, members, hours, holidays.
        with django_assert_num_queries(8):
            response = api.get(QUEUES)
        assert [queue["name"] for queue in response.json()["results"]] == ["Bravo", "Zulu", "Alpha"]

        for name in ("Charlie", "Delta"):
            queue = queue_make(name)
            QueueMembership.objects.create(queue=queue, user=AgentFactory())
            hours_add(queue, 3, "09:00", "17:00")
        with django_assert_num_queries(8):
            assert api.get(QUEUES).json()["count"] == 5


class TestDeletingWhatIsInUse:
    def test_a_queue_used_by_a_workstream_a_rule_or_an_overflow_is_refused_with_409_naming_them(
        self, admin_api
    ):
        billing = queue_make("Billing")
        workstream = workstream_make("Support", fallback=billing)
        route_make(workstream, "Invoices", INVOICE, billing)
        queue_make(
            "Front", open_items_limit=5, open_items_action="transfer", open_items_transfer_queue=billing
        )

        response = admin_api.delete(f"{QUEUES}{billing.pk}/")

        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "The queue 'Billing' is in use" in detail
        assert "workstream 'Support' (its fallback queue)" in detail
        assert "route-to-queue rule 'Invoices' of workstream 'Support'" in detail
        assert "queue 'Front' (its overflow transfers there)" in detail
        assert Queue.objects.filter(pk=billing.pk).exists()

    def test_a_queue_named_in_a_percentage_split_or_holding_open_conversations_is_refused(self, admin_api):
        workstream = workstream_make("Support")
        first, second = queue_make("First"), queue_make("Second")
        route_make(
            workstream,
            "Half and half",
            [],
            split=[{"queue": first.pk, "percent": 50}, {"queue": second.pk, "percent": 50}],
        )
        busy = queue_make("Busy")
        ConversationFactory(queue=busy, state=ConversationState.OPEN)

        split_refusal = admin_api.delete(f"{QUEUES}{second.pk}/")
        busy_refusal = admin_api.delete(f"{QUEUES}{busy.pk}/")

        assert split_refusal.status_code == 409
        assert (
            "route-to-queue rule 'Half and half' of workstream 'Support' (its split)"
            in (split_refusal.json()["detail"])
        )
        assert busy_refusal.status_code == 409
        assert "1 open conversation(s) waiting in it" in busy_refusal.json()["detail"]
        assert Queue.objects.filter(pk__in=[second.pk, busy.pk]).count() == 2

    def test_a_workstream_with_a_channel_instance_is_refused_and_a_free_one_goes_with_its_rules(
        self, admin_api
    ):
        used = workstream_make("Used")
        instance = instance_make(used)
        free = workstream_make("Free")
        route_make(free, "Everything", [], free.fallback_queue)

        refused = admin_api.delete(f"{WORKSTREAMS}{used.pk}/")
        deleted = admin_api.delete(f"{WORKSTREAMS}{free.pk}/")

        assert refused.status_code == 409
        assert f"channel instance '{instance.messaging_account.name}'" in refused.json()["detail"]
        assert Workstream.objects.filter(pk=used.pk).exists()
        assert deleted.status_code == 204
        assert not Workstream.objects.filter(pk=free.pk).exists()
        assert not RouteToQueueRule.objects.filter(name="Everything").exists()

    def test_a_queue_nothing_uses_is_deleted(self, admin_api):
        queue = queue_make("Unused")
        assert admin_api.delete(f"{QUEUES}{queue.pk}/").status_code == 204
        assert not Queue.objects.filter(pk=queue.pk).exists()


class TestWorkstreams:
    def test_an_administrator_creates_a_workstream_with_every_setting(self, admin_api):
        fallback = queue_make("General")
        body = {
            "name": "Sales",
            "distribution_mode": "pick",
            "fallback_queue": fallback.pk,
            "capacity_units": 2,
            "wrap_up_capacity": "minutes",
            "wrap_up_capacity_minutes": 5,
            "assignment_method": "round_robin",
            "offer_timeout_seconds": 60,
            "away_after_missed_offer": False,
            "auto_accept": True,
            "keep_same_agent": True,
            "skill_matching": "closest",
            "allowed_presences": ["available"],
            "auto_close_after_minutes": 1440,
            "timezone": "Asia/Tokyo",
        }

        response = admin_api.post(WORKSTREAMS, body, format="json")

        assert response.status_code == 201, response.content
        data = response.json()
        assert data == {"id": data["id"], **body}
        workstream = Workstream.objects.get(pk=data["id"])
        assert (workstream.distribution_mode, workstream.allowed_presences) == (
            DistributionMode.PICK,
            ["available"],
        )

    def test_changing_the_distribution_mode_is_refused_naming_the_field(self, admin_api):
        workstream = workstream_make("Fixed")

        response = admin_api.patch(
            f"{WORKSTREAMS}{workstream.pk}/", {"distribution_mode": "pick", "name": "Renamed"}, format="json"
        )

        assert response.status_code == 400
        assert list(response.json()) == ["distribution_mode"]
        assert "fixed when the workstream is created" in response.json()["distribution_mode"][0]
        workstream.refresh_from_db()
        assert (workstream.name, workstream.distribution_mode) == ("Fixed", DistributionMode.PUSH)

    def test_other_settings_change_and_the_same_mode_may_be_sent_again(self, admin_api):
        workstream = workstream_make("Support")
        response = admin_api.patch(
            f"{WORKSTREAMS}{workstream.pk}/",
            {"distribution_mode": "push", "offer_timeout_seconds": 30, "keep_same_agent": True},
            format="json",
        )
        assert response.status_code == 200, response.content
        workstream.refresh_from_db()
        assert (workstream.offer_timeout_seconds, workstream.keep_same_agent) == (30, True)

    def test_the_models_rules_come_back_on_their_fields(self, admin_api):
        fallback = queue_make("General")
        response = admin_api.post(
            WORKSTREAMS,
            {
                "name": "Bad",
                "fallback_queue": fallback.pk,
                "allowed_presences": [],
                "wrap_up_capacity": "always",
                "wrap_up_capacity_minutes": 5,
            },
            format="json",
        )
        unknown_zone = admin_api.post(
            WORKSTREAMS,
            {"name": "Bad", "fallback_queue": fallback.pk, "timezone": "Mars/Olympus"},
            format="json",
        )

        assert response.status_code == 400
        errors = response.json()
        assert set(errors) == {"allowed_presences", "wrap_up_capacity_minutes"}
        assert "Pick at least one presence." in errors["allowed_presences"]
        assert errors["wrap_up_capacity_minutes"] == ["Minutes apply only to 'For N minutes'."]
        assert unknown_zone.status_code == 400
        assert "'Mars/Olympus' is not a known time zone" in unknown_zone.json()["timezone"][0]
        assert not Workstream.objects.filter(name="Bad").exists()

    def test_the_list_is_by_name_in_a_fixed_number_of_queries(self, django_assert_num_queries):
        api = token_api_for(SupervisorFactory())
        for name in ("Sales", "Billing"):
            workstream_make(name)
        # Token and user, the user's permissions (two), count, page.
        with django_assert_num_queries(5):
            response = api.get(WORKSTREAMS)
        assert [workstream["name"] for workstream in response.json()["results"]] == ["Billing", "Sales"]
        for name in ("Alpha", "Zulu", "Mike"):
            workstream_make(name)
        with django_assert_num_queries(5):
            assert api.get(WORKSTREAMS).json()["count"] == 5


class TestRouteToQueueRules:
    def test_an_administrator_adds_rules_and_the_list_is_in_their_order(self, admin_api):
        workstream = workstream_make("Support")
        billing = queue_make("Billing")
        route_make(workstream, "Later", [], billing, order=20)

        response = admin_api.post(
            routes_url(workstream),
            {"name": "Invoices", "order": 10, "conditions": INVOICE, "queue": billing.pk},
            format="json",
        )

        assert response.status_code == 201, response.content
        rule = RouteToQueueRule.objects.get(name="Invoices")
        assert rule.workstream_id == workstream.pk and rule.conditions == INVOICE
        listed = admin_api.get(routes_url(workstream)).json()["results"]
        assert [item["name"] for item in listed] == ["Invoices", "Later"]
        assert listed[0] == {
            "id": rule.pk,
            "name": "Invoices",
            "order": 10,
            "conditions": INVOICE,
            "queue": billing.pk,
            "split": [],
        }

    def test_a_condition_on_an_unknown_field_is_refused_with_its_place_named(self, admin_api):
        workstream = workstream_make("Support")
        response = admin_api.post(
            routes_url(workstream),
            {
                "name": "Typo",
                "conditions": [{"field": "customer.nme", "operator": "equals", "value": "Aiko"}],
                "queue": workstream.fallback_queue_id,
            },
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {"conditions": ["conditions[0].field: unknown field 'customer.nme'."]}
        assert not RouteToQueueRule.objects.exists()

    def test_a_queue_and_a_split_together_are_refused_on_the_queue(self, admin_api):
        workstream = workstream_make("Support")
        other = queue_make("Other")
        response = admin_api.post(
            routes_url(workstream),
            {
                "name": "Both",
                "queue": other.pk,
                "split": [
                    {"queue": other.pk, "percent": 50},
                    {"queue": workstream.fallback_queue_id, "percent": 50},
                ],
            },
            format="json",
        )
        assert response.status_code == 400
        assert response.json() == {"queue": ["Give a queue or a split, not both."]}

    def test_a_split_naming_a_queue_that_does_not_exist_is_refused_with_its_id(self, admin_api):
        workstream = workstream_make("Support")
        response = admin_api.post(
            routes_url(workstream),
            {
                "name": "Half lost",
                "split": [
                    {"queue": workstream.fallback_queue_id, "percent": 50},
                    {"queue": 987654, "percent": 50},
                ],
            },
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {"split": ["split: no queue has the ID 987654."]}
        assert not RouteToQueueRule.objects.exists()

    def test_a_rule_changes_through_the_same_checks(self, admin_api):
        workstream = workstream_make("Support")
        rule = route_make(workstream, "Invoices", INVOICE, workstream.fallback_queue)
        url = f"{routes_url(workstream)}{rule.pk}/"

        bad = admin_api.patch(
            url, {"conditions": [{"field": "message.text", "operator": "regex", "value": "("}]}, format="json"
        )
        good = admin_api.patch(url, {"order": 3, "name": "Bills"}, format="json")

        assert bad.status_code == 400
        assert bad.json()["conditions"][0].startswith("conditions[0].value: bad regular expression '('")
        assert good.status_code == 200
        rule.refresh_from_db()
        assert (rule.name, rule.order, rule.conditions) == ("Bills", 3, INVOICE)

    def test_another_workstreams_rules_are_not_found_there(self, admin_api):
        mine, other = workstream_make("Mine"), workstream_make("Other")
        rule = route_make(other, "Theirs", [], other.fallback_queue)

        assert admin_api.get(f"{routes_url(mine)}{rule.pk}/").status_code == 404
        assert admin_api.get(routes_url(mine)).json()["count"] == 0
        assert admin_api.get(f"{WORKSTREAMS}999999/route-to-queue-rules/").status_code == 404
        assert (
            admin_api.post(
                f"{WORKSTREAMS}999999/route-to-queue-rules/", {"name": "X"}, format="json"
            ).status_code
            == 404
        )

    def test_the_list_takes_a_fixed_number_of_queries(self, django_assert_num_queries):
        api = token_api_for(SupervisorFactory())
        workstream = workstream_make("Support")
        for index in range(2):
            route_make(workstream, f"Rule {index}", INVOICE, queue_make(f"Queue {index}"))
        # Token and user, the user's permissions (two), the workstream, count, page.
        with django_assert_num_queries(6):
            assert api.get(routes_url(workstream)).json()["count"] == 2
        for index in range(2, 6):
            route_make(workstream, f"Rule {index}", INVOICE, queue_make(f"Queue {index}"))
        with django_assert_num_queries(6):
            assert api.get(routes_url(workstream)).json()["count"] == 6


class TestClassificationRuleSets:
    def test_an_administrator_adds_a_rule_set_with_its_rules_in_order(self, admin_api):
        workstream = workstream_make("Support")
        body = {
            "name": "VIP",
            "order": 1,
            "rules": [
                {
                    "name": "Gold",
                    "conditions": [{"field": "context.tier", "operator": "equals", "value": "gold"}],
                    "set": {"priority": 1},
                },
                {"name": "Everyone", "set": {"priority": 50}},
            ],
        }

        response = admin_api.post(rule_sets_url(workstream), body, format="json")

        assert response.status_code == 201, response.content
        data = response.json()
        rule_set = ClassificationRuleSet.objects.get(pk=data["id"])
        assert rule_set.workstream_id == workstream.pk
        rules = list(rule_set.rules.order_by("order", "id"))
        assert [(rule.name, rule.order, rule.set) for rule in rules] == [
            ("Gold", 0, {"priority": 1}),
            ("Everyone", 1, {"priority": 50}),
        ]
        assert data["rules"] == [
            {
                "id": rules[0].pk,
                "name": "Gold",
                "order": 0,
                "conditions": body["rules"][0]["conditions"],
                "set": {"priority": 1},
            },
            {"id": rules[1].pk, "name": "Everyone", "order": 1, "conditions": [], "set": {"priority": 50}},
        ]

    def test_rules_are_replaced_as_a_whole_keeping_the_ids_given(self, admin_api):
        workstream = workstream_make("Support")
        rule_set = rule_set_make(
            workstream, "Tiers", 0, [("Gold", [], {"priority": 1}), ("Silver", [], {"priority": 5})]
        )
        gold, silver = rule_set.rules.order_by("order")

        response = admin_api.patch(
            f"{rule_sets_url(workstream)}{rule_set.pk}/",
            {
                "rules": [
                    {"name": "Bronze", "set": {"priority": 9}},
                    {"id": gold.pk, "name": "Gold+", "set": {"priority": 0}},
                ]
            },
            format="json",
        )

        assert response.status_code == 200, response.content
        assert [(rule["name"], rule["order"]) for rule in response.json()["rules"]] == [
            ("Bronze", 0),
            ("Gold+", 1),
        ]
        assert response.json()["rules"][1]["id"] == gold.pk
        assert not ClassificationRule.objects.filter(pk=silver.pk).exists()
        gold.refresh_from_db()
        assert (gold.name, gold.order, gold.set) == ("Gold+", 1, {"priority": 0})

    def test_a_bad_rule_is_refused_with_its_place_and_the_rule_set_is_left_as_it_was(self, admin_api):
        workstream = workstream_make("Support")
        rule_set = rule_set_make(workstream, "Tiers", 0, [("Gold", [], {"priority": 1})])

        response = admin_api.patch(
            f"{rule_sets_url(workstream)}{rule_set.pk}/",
            {
                "name": "Renamed",
                "rules": [
                    {"name": "Fine", "set": {"priority": 2}},
                    {
                        "name": "Typo",
                        "conditions": [{"field": "customer.nme", "operator": "exists"}],
                        "set": {"priorty": 1},
                    },
                ],
            },
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {
            "rules": [
                "rules[1].conditions[0].field: unknown field 'customer.nme'.",
                "rules[1].set.priorty: unknown attribute (one of priority, capacity, skills, context).",
            ]
        }
        rule_set.refresh_from_db()
        assert rule_set.name == "Tiers"
        assert list(rule_set.rules.values_list("name", flat=True)) == ["Gold"]

    def test_a_rule_id_of_another_set_is_refused(self, admin_api):
        workstream = workstream_make("Support")
        mine = rule_set_make(workstream, "Mine", 0, [("A", [], {"priority": 1})])
        other = rule_set_make(workstream, "Other", 1, [("B", [], {"priority": 1})])
        theirs = other.rules.get()

        response = admin_api.put(
            f"{rule_sets_url(workstream)}{mine.pk}/",
            {"name": "Mine", "rules": [{"id": theirs.pk, "name": "Stolen", "set": {"priority": 1}}]},
            format="json",
        )

        assert response.status_code == 400
        assert response.json() == {"rules": [f"rules[0].id: no rule {theirs.pk} in this rule set."]}
        assert ClassificationRule.objects.get(pk=theirs.pk).rule_set_id == other.pk

    def test_the_list_with_rules_takes_a_fixed_number_of_queries(self, django_assert_num_queries):
        api = token_api_for(SupervisorFactory())
        workstream = workstream_make("Support")
        rule_set_make(workstream, "One", 0, [("A", [], {"priority": 1}), ("B", [], {"priority": 2})])
        # Token and user, the user's permissions (two), the workstream, count, page, rules.
        with django_assert_num_queries(7):
            assert api.get(rule_sets_url(workstream)).json()["count"] == 1
        rule_set_make(workstream, "Two", 1, [("C", [], {"priority": 1})])
        rule_set_make(workstream, "Three", 2, [("D", [], {"priority": 1}), ("E", [], {"capacity": 2})])
        with django_assert_num_queries(7):
            response = api.get(rule_sets_url(workstream))
        assert [rule_set["name"] for rule_set in response.json()["results"]] == ["One", "Two", "Three"]
        assert [rule["name"] for rule in response.json()["results"][2]["rules"]] == ["D", "E"]


class TestTestRouting:
    @pytest.fixture
    def workstream(self) -> Workstream:
        workstream = workstream_make("Support", fallback=queue_make("General"))
        rule_set_make(
            workstream,
            "VIP",
            0,
            [("Gold", [{"field": "context.tier", "operator": "equals", "value": "gold"}], {"priority": 1})],
        )
        route_make(workstream, "Invoices", INVOICE, queue_make("Billing"))
        route_make(
            workstream,
            "Thai shop",
            [{"field": "channel_instance", "operator": "equals", "value": "Bangkok shop"}],
            queue_make("Thai"),
            order=1,
        )
        return workstream

    def test_a_sample_is_classified_and_routed_as_a_real_conversation_would_be(self, admin_api, workstream):
        response = admin_api.post(
            routing_test_url(workstream),
            {
                "customer": {"display_name": "Aiko", "language": "ja"},
                "message": {"text": "Where is my INVOICE?"},
                "channel_instance": "Tokyo shop",
                "contact": {"email": "aiko@example.com"},
                "context": {"tier": "gold"},
            },
            format="json",
        )

        assert response.status_code == 200, response.content
        data = response.json()
        billing = Queue.objects.get(name="Billing")
        assert data["queue"] == {"id": billing.pk, "name": "Billing"}
        assert data["outcome"] == "queued"
        assert data["attributes"] == {"priority": 1}
        assert [(rule["kind"], rule["name"]) for rule in data["matched"]] == [
            ("classification", "Gold"),
            ("route", "Invoices"),
        ]
        assert data["reason"] == "Route-to-queue rule 'Invoices' matched: queue 'Billing'."
        assert data["overflow"] is None and data["error"] == ""

    def test_the_channel_instance_and_no_match_lead_where_the_rules_say(self, supervisor_api, workstream):
        thai = supervisor_api.post(
            routing_test_url(workstream), {"channel_instance": "Bangkok shop"}, format="json"
        ).json()
        nothing = supervisor_api.post(routing_test_url(workstream), {}, format="json").json()

        assert thai["queue"]["name"] == "Thai"
        assert nothing["queue"]["name"] == "General"
        assert nothing["reason"] == "No route-to-queue rule matched: the fallback queue 'General'."
        assert nothing["matched"] == [] and nothing["attributes"] == {}

    def test_an_out_of_hours_queue_applies_its_overflow_at_the_time_given(self, admin_api, workstream):
        billing = Queue.objects.get(name="Billing")
        billing.out_of_hours_action = "end"
        billing.out_of_hours_message = "Closed."
        billing.save()
        hours_add(billing, 0, "09:00", "17:00")  # Mondays only, UTC
        sunday = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)

        response = admin_api.post(
            routing_test_url(workstream),
            {"message": {"text": "invoice"}, "at": sunday.isoformat()},
            format="json",
        )

        data = response.json()
        assert data["outcome"] == "ended"
        assert data["overflow"]["condition"] == "out_of_hours"
        assert data["overflow"]["message"] == "Closed."

    def test_nothing_is_written_and_a_bad_sample_is_refused(self, admin_api, workstream):
        before = Workstream.objects.get(pk=workstream.pk).updated_at
        bad = admin_api.post(
            routing_test_url(workstream), {"context": ["not", "an", "object"]}, format="json"
        )

        assert bad.status_code == 400
        assert "context" in bad.json()
        assert Workstream.objects.get(pk=workstream.pk).updated_at == before
        assert admin_api.post(f"{WORKSTREAMS}999999/test-routing/", {}, format="json").status_code == 404


class TestChannelInstances:
    def test_an_administrator_attaches_an_account_with_its_behaviors_and_user_features(self, admin_api):
        workstream = workstream_make("Support")
        account = LineMessagingAccountFactory(name="Tokyo shop")
        body = {
            "workstream": workstream.pk,
            "messaging_account": str(account.pk),
            "language": "ja",
            "custom_automated_messages": True,
            "post_conversation_survey": True,
            "file_attachments": True,
            "customers_can_send_attachments": False,
            "agents_can_send_attachments": True,
        }

        response = admin_api.post(INSTANCES, body, format="json")

        assert response.status_code == 201, response.content
        instance = ChannelInstance.objects.get(messaging_account=account)
        assert response.json() == {"id": instance.pk, "name": "Tokyo shop", **body}
        assert (instance.language, instance.customers_can_send_attachments) == ("ja", False)

    def test_an_account_attached_already_is_refused_with_the_services_message(self, admin_api):
        account = LineMessagingAccountFactory()
        instance_make(workstream_make("First"), account)
        other = workstream_make("Second")

        response = admin_api.post(
            INSTANCES, {"workstream": other.pk, "messaging_account": str(account.pk)}, format="json"
        )

        assert response.status_code == 400
        assert response.json() == {
            "messaging_account": [
                "This messaging account is attached to a channel instance already: an account can be in "
                "one channel instance only."
            ]
        }
        assert ChannelInstance.objects.filter(messaging_account=account).count() == 1

    def test_an_instance_changes_and_is_deleted(self, admin_api):
        instance = instance_make(workstream_make("First"))
        other = workstream_make("Second")
        url = f"{INSTANCES}{instance.pk}/"

        changed = admin_api.patch(url, {"workstream": other.pk, "file_attachments": False}, format="json")

        assert changed.status_code == 200, changed.content
        instance.refresh_from_db()
        assert (instance.workstream_id, instance.file_attachments) == (other.pk, False)
        assert admin_api.delete(url).status_code == 204
        assert not ChannelInstance.objects.filter(pk=instance.pk).exists()

    def test_the_list_is_by_account_name_in_a_fixed_number_of_queries(self, django_assert_num_queries):
        api = token_api_for(SupervisorFactory())
        workstream = workstream_make("Support")
        for name in ("Osaka", "Bangkok"):
            instance_make(workstream, LineMessagingAccountFactory(name=name))
        # Token and user, the user's permissions (two), count, page.
        with django_assert_num_queries(5):
            response = api.get(INSTANCES)
        assert [item["name"] for item in response.json()["results"]] == ["Bangkok", "Osaka"]
        for name in ("Chiang Mai", "Tokyo", "Nagoya"):
            instance_make(workstream, LineMessagingAccountFactory(name=name))
        with django_assert_num_queries(5):
            assert api.get(INSTANCES).json()["count"] == 5


def test_the_schema_describes_the_set_up_endpoints(client):
    client.force_login(SupervisorFactory())
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    for path in (
        "/api/v1/queues/",
        "/api/v1/workstreams/{id}/test-routing/",
        "/api/v1/workstreams/{workstream_pk}/route-to-queue-rules/",
        "/api/v1/workstreams/{workstream_pk}/classification-rulesets/{id}/",
        "/api/v1/channel-instances/",
    ):
        assert path in schema["paths"], path
    queue = schema["components"]["schemas"]["Queue"]["properties"]
    assert {"members", "operating_hours", "holidays", "wait_transfer_queue"} <= set(queue)
    rule = schema["components"]["schemas"]["RouteToQueueRule"]["properties"]
    assert rule["conditions"]["items"] == {"$ref": "#/components/schemas/RoutingCondition"}
