"""The routing admin: workstreams with their rules as ordered inlines and "Test routing", queues with
open items and the oldest wait, channel instances (one per account), validation errors on the field."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from omnichannel.models import ConversationState
from routing.models import ChannelInstance, DistributionMode, Queue, RouteToQueueRule, Workstream
from routing.services import channel_instance_save, workstream_save
from tests.factories import (
    AdministratorFactory,
    ConversationFactory,
    LineMessagingAccountFactory,
    SupervisorFactory,
)
from tests.routing.conftest import instance_make, queue_make, route_make, workstream_make

pytestmark = pytest.mark.django_db

REGEX_INV = '[{"field": "message.text", "operator": "regex", "value": "inv"}]'
WORKSTREAM_INLINES = ("channel_instances", "classification_rule_sets", "route_to_queue_rules")


def management(prefix: str, total: int = 0, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def workstream_post(workstream: Workstream, **changes) -> dict[str, str]:
    data = {
        "name": workstream.name,
        "fallback_queue": str(workstream.fallback_queue_id),
        "timezone": workstream.timezone,
        "capacity_units": str(workstream.capacity_units),
        "wrap_up_capacity": workstream.wrap_up_capacity,
        "wrap_up_capacity_minutes": "",
        "allowed_presences": list(workstream.allowed_presences),
        "assignment_method": workstream.assignment_method,
        "offer_timeout_seconds": str(workstream.offer_timeout_seconds),
        "skill_matching": workstream.skill_matching,
        "auto_close_after_minutes": "",
    }
    for prefix in WORKSTREAM_INLINES:
        data.update(management(prefix))
    data.update(changes)
    return data


@pytest.fixture
def admin_client(client):
    client.force_login(AdministratorFactory())
    return client


class TestWorkstreamPage:
    def test_an_administrator_creates_a_workstream_with_its_distribution_mode(self, admin_client):
        fallback = queue_make("General")
        data = workstream_post(Workstream(name="Sales", fallback_queue=fallback), distribution_mode="pick")

        response = admin_client.post(reverse("admin:routing_workstream_add"), data)

        assert response.status_code == 302, response.context["adminform"].form.errors
        created = Workstream.objects.get(name="Sales")
        assert created.distribution_mode == DistributionMode.PICK
        assert created.timezone == "UTC"
        assert created.allowed_presences == ["available", "busy"]

    def test_the_distribution_mode_is_shown_read_only_after_creation_and_a_change_is_ignored(
        self, admin_client
    ):
        workstream = workstream_make("Fixed")
        url = reverse("admin:routing_workstream_change", args=[workstream.pk])

        page = admin_client.get(url).content.decode()
        response = admin_client.post(
            url, workstream_post(workstream, distribution_mode="pick", name="Fixed 2")
        )

        assert 'name="distribution_mode"' not in page
        assert response.status_code == 302
        workstream.refresh_from_db()
        assert (workstream.name, workstream.distribution_mode) == ("Fixed 2", DistributionMode.PUSH)

    def test_the_service_refuses_to_change_the_distribution_mode(self):
        workstream = workstream_make("Fixed")
        workstream.distribution_mode = DistributionMode.PICK

        with pytest.raises(ValidationError) as error:
            workstream_save(workstream=workstream)

        assert "distribution_mode" in error.value.message_dict
        assert Workstream.objects.get(pk=workstream.pk).distribution_mode == DistributionMode.PUSH

    def test_an_unknown_timezone_or_presence_is_refused_on_its_field(self, admin_client):
        fallback = queue_make("General")
        data = workstream_post(
            Workstream(name="Bad", fallback_queue=fallback), timezone="Mars/Olympus", allowed_presences=[]
        )

        response = admin_client.post(reverse("admin:routing_workstream_add"), data)

        errors = response.context["adminform"].form.errors
        assert "'Mars/Olympus' is not a known time zone" in errors["timezone"][0]
        assert "allowed_presences" in errors

    def test_a_route_rule_with_an_unknown_field_is_refused_with_the_field_named(self, admin_client):
        workstream = workstream_make("Rules")
        billing = queue_make("Billing")
        prefix = "route_to_queue_rules"
        data = workstream_post(
            workstream,
            **management(prefix, total=1),
            **{
                f"{prefix}-0-order": "1",
                f"{prefix}-0-name": "Typo",
                f"{prefix}-0-conditions": '[{"field": "customer.nme", "operator": "equals", "value": "x"}]',
                f"{prefix}-0-queue": str(billing.pk),
                f"{prefix}-0-split": "[]",
                f"{prefix}-0-workstream": str(workstream.pk),
            },
        )

        response = admin_client.post(reverse("admin:routing_workstream_change", args=[workstream.pk]), data)

        assert response.status_code == 200
        (formset,) = [f for f in response.context["inline_admin_formsets"] if f.formset.prefix == prefix]
        assert formset.formset.errors[0]["conditions"] == [
            "conditions[0].field: unknown field 'customer.nme'."
        ]
        assert not RouteToQueueRule.objects.exists()

    def test_route_rules_are_saved_in_order_from_the_page(self, admin_client):
        workstream = workstream_make("Rules")
        billing = queue_make("Billing")
        prefix = "route_to_queue_rules"
        rows = {}
        for index, (order, name) in enumerate([(2, "Second"), (1, "First")]):
            rows.update(
                {
                    f"{prefix}-{index}-order": str(order),
                    f"{prefix}-{index}-name": name,
                    f"{prefix}-{index}-conditions": REGEX_INV,
                    f"{prefix}-{index}-queue": str(billing.pk),
                    f"{prefix}-{index}-split": "[]",
                    f"{prefix}-{index}-workstream": str(workstream.pk),
                }
            )
        data = workstream_post(workstream, **management(prefix, total=2), **rows)

        response = admin_client.post(reverse("admin:routing_workstream_change", args=[workstream.pk]), data)

        assert response.status_code == 302
        assert [rule.name for rule in workstream.route_to_queue_rules.order_by("order", "id")] == [
            "First",
            "Second",
        ]


class TestTestRouting:
    def test_the_workstream_page_links_to_test_routing(self, admin_client):
        workstream = workstream_make("Shop")

        page = admin_client.get(
            reverse("admin:routing_workstream_change", args=[workstream.pk])
        ).content.decode()

        assert reverse("admin:routing_workstream_test_routing", args=[workstream.pk]) in page

    def test_sample_values_show_the_rules_matched_the_attributes_the_queue_and_the_reason(self, admin_client):
        from tests.routing.conftest import rule_set_make

        workstream = workstream_make("Shop")
        billing = queue_make("Billing")
        rule_set_make(
            workstream,
            "Tier",
            1,
            [("Gold", [{"field": "context.tier", "operator": "equals", "value": "gold"}], {"priority": 1})],
        )
        route_make(
            workstream,
            "Invoices",
            [{"field": "message.text", "operator": "contains", "value": "invoice"}],
            billing,
        )
        url = reverse("admin:routing_workstream_test_routing", args=[workstream.pk])

        response = admin_client.post(
            url,
            {
                "display_name": "Aiko",
                "language": "ja",
                "text": "My INVOICE please",
                "context": '{"tier": "gold"}',
                "at": "2026-03-02 10:00",
                "split_key": "1",
            },
        )

        assert response.status_code == 200
        record = response.context["record"]
        assert record["queue"]["name"] == "Billing"
        assert record["attributes"] == {"priority": 1}
        assert [m["name"] for m in record["matched"]] == ["Gold", "Invoices"]
        page = response.content.decode()
        assert 'id="result-queue">Billing<' in page
        assert "Route-to-queue rule &#x27;Invoices&#x27; matched: queue &#x27;Billing&#x27;." in page
        assert "Classification: Tier &gt; Gold" in page
        # Nothing was written: a test is not a conversation.
        assert not workstream.conversations.exists()

    def test_context_variables_that_are_not_an_object_are_refused(self, admin_client):
        workstream = workstream_make("Shop")
        url = reverse("admin:routing_workstream_test_routing", args=[workstream.pk])

        response = admin_client.post(url, {"context": "[1, 2]", "split_key": "1"})

        assert response.context["record"] is None
        assert response.context["form"].errors["context"] == [
            'Context variables are a JSON object, e.g. {"vip": true}.'
        ]

    def test_a_supervisor_may_test_routing_but_not_change_the_workstream(self, client):
        workstream = workstream_make("Shop")
        client.force_login(SupervisorFactory())

        assert (
            client.get(reverse("admin:routing_workstream_test_routing", args=[workstream.pk])).status_code
            == 200
        )
        response = client.post(
            reverse("admin:routing_workstream_change", args=[workstream.pk]),
            workstream_post(workstream, name="Hacked"),
        )
        assert response.status_code == 403
        assert Workstream.objects.get(pk=workstream.pk).name == "Shop"


class TestChannelInstances:
    def test_an_account_is_in_one_channel_instance_at_most_in_the_database(self):
        account = LineMessagingAccountFactory()
        instance_make(workstream_make("One"), account=account)

        with pytest.raises(IntegrityError), transaction.atomic():
            ChannelInstance.objects.create(messaging_account=account, workstream=workstream_make("Two"))

    def test_the_page_refuses_a_second_instance_for_an_account_with_a_clear_message(self, admin_client):
        account = LineMessagingAccountFactory()
        instance_make(workstream_make("One"), account=account)
        other = workstream_make("Two")

        response = admin_client.post(
            reverse("admin:routing_channelinstance_add"),
            {"messaging_account": str(account.pk), "workstream": str(other.pk), "language": "ja"},
        )

        errors = response.context["adminform"].form.errors["messaging_account"]
        assert errors  # the account is not even offered: it is attached elsewhere
        assert ChannelInstance.objects.filter(messaging_account=account).count() == 1

    def test_the_page_offers_only_accounts_not_attached_elsewhere(self, admin_client):
        attached = LineMessagingAccountFactory(name="Attached")
        free = LineMessagingAccountFactory(name="Free")
        instance_make(workstream_make("One"), account=attached)

        form = admin_client.get(reverse("admin:routing_channelinstance_add")).context["adminform"].form

        assert list(form.fields["messaging_account"].queryset) == [free]

    def test_two_saves_racing_for_one_account_end_with_a_clear_error_for_the_loser(self, monkeypatch):
        account = LineMessagingAccountFactory()
        instance_make(workstream_make("One"), account=account)
        # The loser's check ran before the winner's row existed: only the constraint sees the clash.
        monkeypatch.setattr(ChannelInstance, "validate_unique", lambda self, exclude=None: None)

        with pytest.raises(ValidationError) as error:
            channel_instance_save(
                instance=ChannelInstance(messaging_account=account, workstream=workstream_make("Two"))
            )

        assert error.value.message_dict["messaging_account"] == [
            "This messaging account is attached to a channel instance already: an account can be in one "
            "channel instance only."
        ]

    def test_a_second_instance_is_refused_by_the_service_with_the_same_message(self):
        account = LineMessagingAccountFactory()
        instance_make(workstream_make("One"), account=account)

        with pytest.raises(ValidationError) as error:
            channel_instance_save(
                instance=ChannelInstance(messaging_account=account, workstream=workstream_make("Two"))
            )

        assert error.value.message_dict["messaging_account"][0].startswith(
            "This messaging account is attached"
        )


class TestQueueList:
    def test_the_queue_list_shows_open_items_and_the_oldest_wait_in_a_fixed_number_of_queries(
        self, admin_client, django_assert_max_num_queries
    ):
        busy = queue_make("Busy")
        queue_make("Idle")
        long_ago = timezone.now() - datetime.timedelta(hours=2)
        ConversationFactory(queue=busy, state=ConversationState.OPEN, queued_at=long_ago)
        ConversationFactory(queue=busy, state=ConversationState.OPEN, queued_at=timezone.now())
        ConversationFactory(
            queue=busy, state=ConversationState.ACTIVE, queued_at=long_ago - datetime.timedelta(days=1)
        )
        url = reverse("admin:routing_queue_changelist")
        admin_client.get(url)

        with django_assert_max_num_queries(12):
            response = admin_client.get(url)

        rows = {queue.name: queue for queue in response.context["cl"].result_list}
        assert rows["Busy"].open_items == 2 and rows["Idle"].open_items == 0
        assert rows["Busy"].oldest_queued_at == long_ago
        assert rows["Idle"].oldest_queued_at is None
        assert "2\xa0hours" in response.content.decode()

    def test_a_transfer_action_without_a_queue_is_refused_on_its_field(self, admin_client):
        data = {
            "name": "Q",
            "priority": "1",
            "timezone": "UTC",
            "out_of_hours_action": "transfer",
            "open_items_action": "",
            "wait_action": "",
            **management("memberships"),
            **management("operating_hours"),
            **management("holidays"),
        }

        response = admin_client.post(reverse("admin:routing_queue_add"), data)

        assert response.context["adminform"].form.errors["out_of_hours_transfer_queue"] == [
            "Pick the queue to transfer to."
        ]


class TestDeletingFromTheAdmin:
    def test_a_queue_with_open_conversations_is_not_deleted_and_its_page_says_why(self, admin_client):
        queue = queue_make("Billing")
        ConversationFactory(queue=queue, state=ConversationState.OPEN)
        url = reverse("admin:routing_queue_delete", args=[queue.pk])

        shown = admin_client.get(url, follow=True)
        posted = admin_client.post(url, {"post": "yes"}, follow=True)

        assert Queue.objects.filter(pk=queue.pk).exists()
        for response in (shown, posted):
            assert response.redirect_chain[-1][0] == reverse("admin:routing_queue_change", args=[queue.pk])
            assert "1 open conversation(s) waiting in it (transfer them first)" in response.content.decode()

    def test_a_queue_named_by_a_percentage_split_is_not_deleted(self, admin_client):
        workstream = workstream_make("Shop")
        kept, split_to = queue_make("Kept"), queue_make("Split to")
        route_make(
            workstream,
            "Half",
            [],
            split=[{"queue": kept.pk, "percent": 50}, {"queue": split_to.pk, "percent": 50}],
        )

        response = admin_client.post(
            reverse("admin:routing_queue_delete", args=[split_to.pk]), {"post": "yes"}, follow=True
        )

        assert Queue.objects.filter(pk=split_to.pk).exists()
        assert "route-to-queue rule &#x27;Half&#x27; of workstream &#x27;Shop&#x27; (its split)" in (
            response.content.decode()
        )

    def test_a_queue_nothing_uses_is_deleted_after_the_confirmation(self, admin_client):
        queue = queue_make("Old")
        ConversationFactory(queue=queue, state=ConversationState.CLOSED, closed_at=timezone.now())
        url = reverse("admin:routing_queue_delete", args=[queue.pk])

        assert admin_client.get(url).status_code == 200  # Django's confirmation page
        admin_client.post(url, {"post": "yes"})

        assert not Queue.objects.filter(pk=queue.pk).exists()

    def test_a_queue_that_comes_into_use_after_the_check_is_still_refused(self, admin_client, monkeypatch):
        from routing import admin as routing_admin

        queue = queue_make("Racing")
        ConversationFactory(queue=queue, state=ConversationState.OPEN)
        # The page's check found nothing (the conversation arrived after it): the service decides.
        monkeypatch.setattr(routing_admin, "routing_record_uses", lambda record: [])

        response = admin_client.post(
            reverse("admin:routing_queue_delete", args=[queue.pk]), {"post": "yes"}, follow=True
        )

        assert Queue.objects.filter(pk=queue.pk).exists()
        assert "open conversation(s) waiting in it" in response.content.decode()

    def test_the_lists_offer_no_bulk_delete(self, admin_client):
        queue_make("Billing")
        for name in ("queue", "workstream", "classificationruleset", "channelinstance"):
            response = admin_client.get(reverse(f"admin:routing_{name}_changelist"))
            assert "delete_selected" not in response.content.decode(), name


class TestPagesOpen:
    def test_every_routing_page_opens_for_an_administrator(self, admin_client):
        from tests.routing.conftest import rule_set_make

        workstream = workstream_make("Shop")
        queue = queue_make("Billing")
        route_make(workstream, "Invoices", [], queue)
        rule_set = rule_set_make(workstream, "Tier", 1, [("Gold", [], {"priority": 1})])
        instance = instance_make(workstream)
        urls = [
            reverse("admin:routing_workstream_add"),
            reverse("admin:routing_workstream_change", args=[workstream.pk]),
            reverse("admin:routing_queue_add"),
            reverse("admin:routing_queue_change", args=[queue.pk]),
            reverse("admin:routing_classificationruleset_change", args=[rule_set.pk]),
            reverse("admin:routing_channelinstance_change", args=[instance.pk]),
            reverse("admin:routing_channelinstance_changelist"),
            reverse("admin:routing_workstream_changelist"),
        ]

        assert {url: admin_client.get(url).status_code for url in urls} == dict.fromkeys(urls, 200)

    def test_a_conversation_shows_its_queue_and_routing_decision_read_only(self, admin_client):
        queue = queue_make("Billing")
        conversation = ConversationFactory(
            queue=queue, routing={"reason": "Route-to-queue rule 'Invoices' matched", "matched": []}
        )

        page = admin_client.get(reverse("admin:omnichannel_conversation_change", args=[conversation.pk]))

        content = page.content.decode()
        assert "Route-to-queue rule &#x27;Invoices&#x27; matched" in content
        assert 'name="routing"' not in content
        assert "Billing" in content
