"""The "Set up LINE" wizard on a workstream's admin page: LINE (only free accounts) > Language >
Behaviors > User features > Summary > Finish, which creates the LINE channel instance through
channel_instance_save. Every step validates before the next, Back keeps the values, the draft lives in
the session per workstream, only users who may add channel instances get in, and an account taken
meanwhile sends Finish back to the LINE step with the reason. tests/browser/test_setup_line.py walks it
in Chromium."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from routing.models import ChannelInstance, ChannelLanguage
from tests.factories import AdministratorFactory, LineMessagingAccountFactory, SupervisorFactory
from tests.routing.conftest import instance_make, workstream_make

pytestmark = pytest.mark.django_db

ATTACHED_ALREADY = (
    "This messaging account is attached to a channel instance already: an account can be in one "
    "channel instance only."
)


def wizard_url(workstream, step: str | None = None) -> str:
    if step is None:
        return reverse("admin:routing_workstream_setup_line_start", args=[workstream.pk])
    return reverse("admin:routing_workstream_setup_line", args=[workstream.pk, step])


def features(file_attachments: bool = True, customers: bool = True, agents: bool = True) -> dict[str, str]:
    """The User features step's POST: a check box that is off is not sent at all."""
    boxes = {
        "file_attachments": file_attachments,
        "customers_can_send_attachments": customers,
        "agents_can_send_attachments": agents,
    }
    return {name: "on" for name, checked in boxes.items() if checked}


def walk_to_summary(client, workstream, account, *, language: str = "ja", **feature_boxes) -> None:
    assert client.get(wizard_url(workstream)).status_code == 302
    steps = [
        ("line", {"messaging_account": str(account.pk)}, "language"),
        ("language", {"language": language}, "behaviors"),
        ("behaviors", {"post_conversation_survey": "on"}, "features"),
        ("features", features(**feature_boxes), "summary"),
    ]
    for step, data, following in steps:
        response = client.post(wizard_url(workstream, step), data)
        assert response.status_code == 302, (step, response.context and response.context["form"].errors)
        assert response["Location"] == wizard_url(workstream, following)


@pytest.fixture
def admin_client(client):
    client.force_login(AdministratorFactory())
    return client


@pytest.fixture
def workstream():
    return workstream_make("Support")


class TestTheWay:
    def test_the_workstream_page_has_a_set_up_line_button_that_starts_the_wizard_at_the_line_step(
        self, admin_client, workstream
    ):
        change_page = admin_client.get(reverse("admin:routing_workstream_change", args=[workstream.pk]))

        assert f'href="{wizard_url(workstream)}"' in change_page.content.decode()
        start = admin_client.get(wizard_url(workstream))
        assert start.status_code == 302
        assert start["Location"] == wizard_url(workstream, "line")

    def test_an_administrator_sets_up_line_step_by_step_and_finish_creates_the_channel_instance(
        self, admin_client, workstream
    ):
        account = LineMessagingAccountFactory(name="Osaka shop")
        walk_to_summary(admin_client, workstream, account, language="th", agents=False)

        summary = admin_client.get(wizard_url(workstream, "summary"))
        assert summary.status_code == 200
        rows = {row["label"]: row["value"] for row in summary.context["rows"]}
        assert rows["LINE account"] == f"Osaka shop (channel ID {account.line.channel_id})"
        assert rows["Language"] == "Thai"
        assert rows["Custom automated messages"] == "Off"
        assert rows["Post-conversation survey"] == "On"
        assert rows["Agents can send file attachments"] == "No"
        assert not ChannelInstance.objects.exists()  # nothing is written before Finish

        finish = admin_client.post(wizard_url(workstream, "summary"), {"_finish": "Finish"})

        assert finish["Location"] == wizard_url(workstream, "done")
        instance = ChannelInstance.objects.get()
        assert (instance.messaging_account_id, instance.workstream_id) == (account.pk, workstream.pk)
        assert instance.language == ChannelLanguage.THAI
        assert (instance.custom_automated_messages, instance.post_conversation_survey) == (False, True)
        assert (
            instance.file_attachments,
            instance.customers_can_send_attachments,
            instance.agents_can_send_attachments,
        ) == (True, True, False)

    def test_a_reload_of_the_done_page_shows_the_instance_and_the_other_steps_lead_there(
        self, admin_client, workstream
    ):
        account = LineMessagingAccountFactory(name="Nagoya shop")
        walk_to_summary(admin_client, workstream, account)
        admin_client.post(wizard_url(workstream, "summary"))
        instance = ChannelInstance.objects.get()

        for _ in range(2):
            done = admin_client.get(wizard_url(workstream, "done"))
            assert done.status_code == 200
            assert done.context["instance"] == instance
            assert (
                reverse("admin:routing_channelinstance_change", args=[instance.pk]) in done.content.decode()
            )
        # Finished: the summary cannot create a second instance; it shows the Done page instead.
        assert admin_client.post(wizard_url(workstream, "summary"))["Location"] == wizard_url(
            workstream, "done"
        )
        assert ChannelInstance.objects.count() == 1

    def test_the_button_starts_afresh_after_a_finished_instance(self, admin_client, workstream):
        walk_to_summary(admin_client, workstream, LineMessagingAccountFactory())
        admin_client.post(wizard_url(workstream, "summary"))

        admin_client.get(wizard_url(workstream))

        assert admin_client.get(wizard_url(workstream, "done"))["Location"] == wizard_url(workstream, "line")
        assert admin_client.get(wizard_url(workstream, "language"))["Location"] == wizard_url(
            workstream, "line"
        )


class TestTheLineStep:
    def test_only_line_accounts_not_attached_to_a_channel_instance_are_offered(
        self, admin_client, workstream
    ):
        free = LineMessagingAccountFactory(name="Free shop")
        taken = LineMessagingAccountFactory(name="Taken shop")
        instance_make(workstream_make("Sales"), account=taken)

        response = admin_client.get(wizard_url(workstream, "line"))

        offered = list(response.context["form"].fields["messaging_account"].queryset)
        assert offered == [free]
        assert "Taken shop" not in response.content.decode()
        refused = admin_client.post(wizard_url(workstream, "line"), {"messaging_account": str(taken.pk)})
        assert refused.status_code == 200
        assert "not available any more" in str(refused.context["form"].errors["messaging_account"])

    def test_without_a_choice_the_step_asks_for_one_and_does_not_go_on(self, admin_client, workstream):
        LineMessagingAccountFactory()

        response = admin_client.post(wizard_url(workstream, "line"), {})

        assert response.status_code == 200
        assert response.context["form"].errors["messaging_account"] == ["Pick a LINE account."]
        assert admin_client.get(wizard_url(workstream, "language"))["Location"] == wizard_url(
            workstream, "line"
        )

    def test_with_no_free_account_it_says_so_and_links_to_the_new_account_wizard(
        self, admin_client, workstream
    ):
        instance_make(workstream_make("Sales"))

        response = admin_client.get(wizard_url(workstream, "line"))

        content = response.content.decode()
        assert "No LINE account is available" in content
        assert f'href="{reverse("admin:omnichannel_messagingaccount_add")}"' in content
        assert 'name="_next"' not in content

    def test_the_step_reads_a_fixed_number_of_queries_whatever_the_number_of_accounts(
        self, admin_client, workstream
    ):
        LineMessagingAccountFactory()
        admin_client.get(wizard_url(workstream, "line"))  # the session and the caches settle
        with CaptureQueriesContext(connection) as one:
            admin_client.get(wizard_url(workstream, "line"))
        for _ in range(4):
            LineMessagingAccountFactory()
        with CaptureQueriesContext(connection) as five:
            response = admin_client.get(wizard_url(workstream, "line"))

        assert response.content.decode().count('name="messaging_account"') == 5
        assert len(five) == len(one)


class TestValidationAndBack:
    def test_a_language_not_offered_is_refused_on_its_step(self, admin_client, workstream):
        admin_client.post(
            wizard_url(workstream, "line"), {"messaging_account": LineMessagingAccountFactory().pk}
        )

        response = admin_client.post(wizard_url(workstream, "language"), {"language": "klingon"})

        assert response.status_code == 200
        assert "Select a valid choice" in str(response.context["form"].errors["language"])
        assert admin_client.get(wizard_url(workstream, "behaviors"))["Location"] == wizard_url(
            workstream, "language"
        )

    def test_a_later_step_opened_early_sends_to_the_first_step_not_done(self, admin_client, workstream):
        admin_client.post(
            wizard_url(workstream, "line"), {"messaging_account": LineMessagingAccountFactory().pk}
        )
        admin_client.post(wizard_url(workstream, "language"), {"language": "ko"})

        for step in ("features", "summary"):
            assert admin_client.get(wizard_url(workstream, step))["Location"] == wizard_url(
                workstream, "behaviors"
            )
        assert admin_client.get(wizard_url(workstream, "nonsense"))["Location"] == wizard_url(
            workstream, "line"
        )

    def test_back_keeps_every_value_entered_including_those_of_the_step_left(self, admin_client, workstream):
        account = LineMessagingAccountFactory()
        walk_to_summary(admin_client, workstream, account, language="id", customers=False)

        # From User features, Back with a changed box: kept, and the step before shows its values.
        back = admin_client.post(
            wizard_url(workstream, "features"), {**features(customers=False, agents=False), "_back": "Back"}
        )
        assert back["Location"] == wizard_url(workstream, "behaviors")
        behaviors = admin_client.get(wizard_url(workstream, "behaviors")).context["form"]
        assert behaviors.initial["post_conversation_survey"] is True
        assert behaviors.initial["custom_automated_messages"] is False
        admin_client.post(
            wizard_url(workstream, "behaviors"), {"_back": "Back", "post_conversation_survey": "on"}
        )
        assert (
            admin_client.get(wizard_url(workstream, "language")).context["form"].initial["language"] == "id"
        )
        line = admin_client.get(wizard_url(workstream, "line"))
        assert line.context["form"].initial["messaging_account"] == str(account.pk)
        assert "checked" in re.search(rf'<input[^>]*value="{account.pk}"[^>]*>', line.content.decode())[0]
        assert admin_client.get(wizard_url(workstream, "features")).context["form"].initial == {
            "messaging_account": str(account.pk),
            "language": "id",
            "custom_automated_messages": False,
            "post_conversation_survey": True,
            "file_attachments": True,
            "customers_can_send_attachments": False,
            "agents_can_send_attachments": False,
        }

    def test_an_invalid_step_left_with_back_keeps_the_earlier_value(self, admin_client, workstream):
        admin_client.post(
            wizard_url(workstream, "line"), {"messaging_account": LineMessagingAccountFactory().pk}
        )
        admin_client.post(wizard_url(workstream, "language"), {"language": "ja"})

        back = admin_client.post(wizard_url(workstream, "language"), {"language": "klingon", "_back": "Back"})

        assert back["Location"] == wizard_url(workstream, "line")
        assert (
            admin_client.get(wizard_url(workstream, "language")).context["form"].initial["language"] == "ja"
        )

    def test_the_user_features_page_says_the_can_send_boxes_need_file_attachments_on(
        self, admin_client, workstream
    ):
        walk_to_summary(admin_client, workstream, LineMessagingAccountFactory(), file_attachments=False)

        html = admin_client.get(wizard_url(workstream, "features")).content.decode()
        summary = admin_client.get(wizard_url(workstream, "summary")).context["rows"]

        assert html.count("Only matters when file attachments is on.") == 2
        assert "only matter when <b>File attachments</b> is on" in html
        values = {row["label"]: row["value"] for row in summary}
        assert values["File attachments"] == "Off"
        assert values["Customers can send file attachments"] == "Yes (no effect: file attachments is off)"

    def test_each_workstream_keeps_its_own_draft(self, admin_client, workstream):
        other = workstream_make("Sales")
        first, second = LineMessagingAccountFactory(), LineMessagingAccountFactory()
        admin_client.post(wizard_url(workstream, "line"), {"messaging_account": first.pk})
        admin_client.post(wizard_url(other, "line"), {"messaging_account": second.pk})

        def draft_of(stream) -> str:
            return admin_client.get(wizard_url(stream, "line")).context["form"].initial["messaging_account"]

        assert (draft_of(workstream), draft_of(other)) == (str(first.pk), str(second.pk))


class TestRaceAndAccess:
    def test_an_account_attached_meanwhile_sends_finish_back_to_the_line_step_with_the_reason(
        self, admin_client, workstream
    ):
        account = LineMessagingAccountFactory(name="Kobe shop")
        walk_to_summary(admin_client, workstream, account)
        assert admin_client.get(wizard_url(workstream, "summary")).status_code == 200
        elsewhere = instance_make(
            workstream_make("Sales"), account=account
        )  # another administrator, meanwhile

        finish = admin_client.post(wizard_url(workstream, "summary"))

        assert finish.status_code == 302
        assert finish["Location"] == wizard_url(workstream, "line")
        line = admin_client.get(wizard_url(workstream, "line"))
        assert line.status_code == 200
        assert line.context["notice"] == ATTACHED_ALREADY
        assert ATTACHED_ALREADY in line.content.decode()
        assert list(ChannelInstance.objects.all()) == [elsewhere]
        # Shown once; the other values stay for the account picked next.
        assert admin_client.get(wizard_url(workstream, "line")).context["notice"] == ""
        replacement = LineMessagingAccountFactory()
        admin_client.post(wizard_url(workstream, "line"), {"messaging_account": replacement.pk})
        assert admin_client.get(wizard_url(workstream, "summary")).status_code == 200
        admin_client.post(wizard_url(workstream, "summary"))
        assert ChannelInstance.objects.get(workstream=workstream).messaging_account == replacement

    def test_an_account_taken_before_the_summary_shows_sends_back_to_the_line_step(
        self, admin_client, workstream
    ):
        account = LineMessagingAccountFactory()
        walk_to_summary(admin_client, workstream, account)
        instance_make(workstream_make("Sales"), account=account)

        summary = admin_client.get(wizard_url(workstream, "summary"))

        assert summary["Location"] == wizard_url(workstream, "line")
        assert "not available any more" in admin_client.get(wizard_url(workstream, "line")).context["notice"]

    def test_a_user_who_may_not_add_channel_instances_gets_403_and_no_button(self, client, workstream):
        client.force_login(SupervisorFactory())  # sees routing, sets nothing up

        change_page = client.get(reverse("admin:routing_workstream_change", args=[workstream.pk]))

        assert change_page.status_code == 200
        assert wizard_url(workstream) not in change_page.content.decode()
        for step in (None, "line", "summary", "done"):
            assert client.get(wizard_url(workstream, step)).status_code == 403
        account = LineMessagingAccountFactory()
        assert (
            client.post(wizard_url(workstream, "line"), {"messaging_account": account.pk}).status_code == 403
        )
        assert not ChannelInstance.objects.exists()
