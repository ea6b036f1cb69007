"""The admin site: the "New account" wizard, the masked change form, "Check credentials", and the
read-only pages of conversations, messages, profiles and webhook events (no N+1 on any list)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from channels_line.admin import WIZARD_SESSION_KEY
from channels_line.models import EventState, LineAccount, LineWebhookEvent, LineWebhookRejectedBody
from channels_line.services.accounts import line_account_check_credentials
from channels_line.standin.client import StandinControl
from omnichannel.fields import decrypt
from omnichannel.models import DeliveryState, MessagingAccount
from tests.factories import (
    AdministratorFactory,
    AttachmentFactory,
    ContactFactory,
    ConversationFactory,
    LineMessagingAccountFactory,
    LineWebhookEventFactory,
    MessageFactory,
    SocialProfileFactory,
    SupervisorFactory,
    channel_access_token_new,
    channel_secret_new,
)

pytestmark = pytest.mark.django_db

WIZARD = "admin:omnichannel_messagingaccount_wizard"


@pytest.fixture
def admin_client(client):
    client.force_login(AdministratorFactory())
    return client


def raw_line_account_row(account: MessagingAccount) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT channel_secret, channel_access_token FROM channels_line_lineaccount "
            "WHERE messaging_account_id = %s",
            [account.pk.hex if connection.vendor == "sqlite" else account.pk],
        )
        return cursor.fetchone()


def page_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


class TestTheNewAccountWizard:
    def test_the_add_button_leads_to_the_wizard_which_walks_four_steps_and_creates_an_encrypted_account(
        self, admin_client
    ):
        secret, token = channel_secret_new(), channel_access_token_new()

        changelist = admin_client.get(reverse("admin:omnichannel_messagingaccount_changelist"))
        assert b"New account" in changelist.content
        start = admin_client.get(reverse("admin:omnichannel_messagingaccount_add"))
        assert start["Location"] == reverse(WIZARD, args=["channel"])

        step1 = admin_client.get(start["Location"])
        assert step1.status_code == 200
        assert b"Channel details" in step1.content and b'value="line"' in step1.content
        response = admin_client.post(
            reverse(WIZARD, args=["channel"]), {"name": "Bangkok shop", "channel_type": "line"}
        )
        assert response["Location"] == reverse(WIZARD, args=["account"])

        step2 = admin_client.get(response["Location"])
        assert step2.status_code == 200
        for hint in (b"Basic settings", b"Messaging API</b> tab", b"Channel access token (long-lived)"):
            assert hint in step2.content
        response = admin_client.post(
            reverse(WIZARD, args=["account"]),
            {"channel_id": "1657000001", "channel_secret": secret, "channel_access_token": token},
        )
        assert response["Location"] == reverse(WIZARD, args=["callback"])
        assert secret not in str(dict(admin_client.session))
        assert token not in str(dict(admin_client.session))

        account = MessagingAccount.objects.get(name="Bangkok shop")
        step3 = admin_client.get(response["Location"])
        assert step3.status_code == 200
        assert account.line.callback_url.encode() in step3.content
        assert f"/webhooks/line/{account.pk}/".encode() in step3.content
        assert b'data-copy-target="callback-url"' in step3.content
        assert b"navigator.clipboard" in step3.content and b'execCommand("copy")' in step3.content

        step4 = admin_client.get(reverse(WIZARD, args=["done"]))
        assert step4.status_code == 200
        assert b"1657000001" in step4.content
        assert admin_client.session[WIZARD_SESSION_KEY]["account_id"] == str(account.pk)
        for page in (step1, step2, step3, step4):
            assert secret.encode() not in page.content and token.encode() not in page.content

        assert account.channel_type == "line"
        assert account.line.channel_secret == secret
        assert account.line.channel_access_token == token
        stored_secret, stored_token = raw_line_account_row(account)
        assert secret not in stored_secret and token not in stored_token
        assert decrypt(stored_secret) == secret and decrypt(stored_token) == token

    def test_the_account_step_shows_the_services_errors_and_never_renders_the_typed_secrets_back(
        self, admin_client
    ):
        admin_client.post(reverse(WIZARD, args=["channel"]), {"name": "Shop", "channel_type": "line"})
        bad_secret = "not-a-secret-" + "x" * 20
        token = channel_access_token_new()

        response = admin_client.post(
            reverse(WIZARD, args=["account"]),
            {"channel_id": "12ab", "channel_secret": bad_secret, "channel_access_token": token},
        )

        assert response.status_code == 200
        assert b"The Channel ID is the number shown" in response.content
        assert b"32 hexadecimal characters (digits and the letters a to f)" in response.content
        assert bad_secret.encode() not in response.content and token.encode() not in response.content
        assert not MessagingAccount.objects.filter(name="Shop").exists()

    def test_a_channel_id_already_connected_is_refused_on_the_account_step(self, admin_client):
        existing = LineMessagingAccountFactory()
        admin_client.post(reverse(WIZARD, args=["channel"]), {"name": "Second", "channel_type": "line"})

        response = admin_client.post(
            reverse(WIZARD, args=["account"]),
            {
                "channel_id": existing.line.channel_id,
                "channel_secret": channel_secret_new(),
                "channel_access_token": channel_access_token_new(),
            },
        )

        assert b"This LINE channel is connected already." in response.content
        assert MessagingAccount.objects.count() == 1

    def test_a_name_in_use_is_refused_on_the_first_step(self, admin_client):
        LineMessagingAccountFactory(name="Taken")
        response = admin_client.post(
            reverse(WIZARD, args=["channel"]), {"name": "Taken", "channel_type": "line"}
        )
        assert response.status_code == 200
        assert b"exists already" in response.content

    def test_later_steps_without_the_earlier_ones_send_back_to_the_first(self, admin_client):
        assert admin_client.get(reverse(WIZARD, args=["account"]))["Location"] == reverse(
            WIZARD, args=["channel"]
        )
        assert admin_client.get(reverse(WIZARD, args=["callback"]))["Location"] == reverse(
            WIZARD, args=["channel"]
        )
        assert admin_client.get(reverse(WIZARD, args=["done"]))["Location"] == reverse(
            WIZARD, args=["channel"]
        )

    def test_a_supervisor_can_list_accounts_but_not_start_the_wizard(self, client):
        client.force_login(SupervisorFactory())
        changelist = client.get(reverse("admin:omnichannel_messagingaccount_changelist"))
        assert changelist.status_code == 200
        assert b"New account" not in changelist.content
        assert client.get(reverse(WIZARD, args=["channel"])).status_code == 403
        assert client.get(reverse("admin:omnichannel_messagingaccount_add")).status_code == 403


class TestNamesAndSecrets:
    def test_a_name_that_differs_only_in_case_is_refused_on_the_first_step(self, admin_client):
        LineMessagingAccountFactory(name="Bangkok Shop")
        response = admin_client.post(
            reverse(WIZARD, args=["channel"]), {"name": "bangkok SHOP", "channel_type": "line"}
        )
        assert response.status_code == 200
        assert b"names are compared without regard to case" in response.content
        assert WIZARD_SESSION_KEY not in admin_client.session

    def test_a_name_taken_in_another_case_between_the_steps_is_told_on_the_account_step(self, admin_client):
        admin_client.post(reverse(WIZARD, args=["channel"]), {"name": "Phuket shop", "channel_type": "line"})
        LineMessagingAccountFactory(name="PHUKET SHOP")

        response = admin_client.post(
            reverse(WIZARD, args=["account"]),
            {
                "channel_id": "1657000009",
                "channel_secret": channel_secret_new(),
                "channel_access_token": channel_access_token_new(),
            },
        )

        assert response.status_code == 200
        assert b"Name: A messaging account with this name exists already" in response.content
        assert MessagingAccount.objects.count() == 1

    def test_renaming_an_account_to_another_accounts_name_in_another_case_is_refused_on_the_name_field(
        self, admin_client
    ):
        LineMessagingAccountFactory(name="Taken")
        account = LineMessagingAccountFactory(name="Mine")
        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]),
            {"name": "tAKEN", "enabled": "on", "channel_id": account.line.channel_id},
        )
        assert response.status_code == 200
        assert response.context["adminform"].form.errors["name"] == [
            "A messaging account with this name exists already (names are compared without regard to case)."
        ]
        account.refresh_from_db()
        assert account.name == "Mine"

    def test_an_account_can_be_renamed_to_its_own_name_in_another_case(self, admin_client):
        account = LineMessagingAccountFactory(name="quiet shop")
        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]),
            {"name": "Quiet Shop", "enabled": "on", "channel_id": account.line.channel_id},
        )
        assert response.status_code == 302
        account.refresh_from_db()
        assert account.name == "Quiet Shop"

    @pytest.mark.parametrize(
        "secret",
        [
            "g" * 32,  # 32 letters and digits, but not hexadecimal
            "A1B2C3D4E5F60718293A4B5C6D7E8F90",  # hexadecimal, but not as LINE shows it (lowercase)
            "0123456789abcdef0123456789abcde",  # 31 characters
            "0123456789abcdef0123456789abcdef0",  # 33 characters
        ],
    )
    def test_a_channel_secret_that_is_not_32_lowercase_hexadecimal_characters_is_refused_on_its_field(
        self, admin_client, secret
    ):
        admin_client.post(reverse(WIZARD, args=["channel"]), {"name": "Hex shop", "channel_type": "line"})
        response = admin_client.post(
            reverse(WIZARD, args=["account"]),
            {
                "channel_id": "1657000010",
                "channel_secret": secret,
                "channel_access_token": channel_access_token_new(),
            },
        )
        assert response.status_code == 200
        assert response.context["adminform"].form.errors["channel_secret"] == [
            "The Channel secret is 32 hexadecimal characters (digits and the letters a to f), as the LINE "
            "console shows it under Basic settings."
        ]
        assert secret.encode() not in response.content
        assert not MessagingAccount.objects.exists()

    def test_the_change_form_refuses_a_secret_that_is_not_hexadecimal_and_keeps_the_stored_one(
        self, admin_client
    ):
        account = LineMessagingAccountFactory()
        old_secret = account.line.channel_secret
        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]),
            {
                "name": account.name,
                "enabled": "on",
                "channel_id": account.line.channel_id,
                "channel_secret": "z" * 32,
            },
        )
        assert response.status_code == 200
        assert "channel_secret" in response.context["adminform"].form.errors
        assert LineAccount.objects.get(pk=account.pk).channel_secret == old_secret

    def test_a_race_lost_on_the_channel_id_constraint_is_told_like_the_check(self, monkeypatch):
        from django.core.exceptions import ValidationError

        from channels_line.services import accounts

        existing = LineMessagingAccountFactory()
        real_refuse_taken = accounts._refuse_taken
        calls = []

        # Two requests cannot be interleaved here on demand: the first check is made to miss the other
        # account, as it would if that account committed just after it; the database's constraint decides.
        def first_check_misses(**kwargs):
            calls.append(kwargs)
            if len(calls) > 1:
                real_refuse_taken(**kwargs)

        monkeypatch.setattr(accounts, "_refuse_taken", first_check_misses)
        with pytest.raises(ValidationError) as raised:
            accounts.line_account_create(
                name="Racer",
                channel_id=existing.line.channel_id,
                channel_secret=channel_secret_new(),
                channel_access_token=channel_access_token_new(),
            )

        assert raised.value.message_dict == {"channel_id": ["This LINE channel is connected already."]}
        assert len(calls) == 2
        assert not MessagingAccount.objects.filter(name="Racer").exists()


class TestTheAccountList:
    def test_the_list_shows_the_channel_id_and_the_callback_url_on_one_line_with_its_title_and_copy_button(
        self, admin_client
    ):
        account = LineMessagingAccountFactory(channel_id="1657000042")
        response = admin_client.get(reverse("admin:omnichannel_messagingaccount_changelist"))
        content = response.content.decode()

        assert '<td class="field-channel_id_display">1657000042</td>' in content
        url = account.line.callback_url
        assert (
            f'<span class="callback-url" id="callback-url-{account.pk}" title="{url}">{url}</span>' in content
        )
        assert f'data-copy-target="callback-url-{account.pk}"' in content
        assert "text-overflow: ellipsis" in content and "white-space: nowrap" in content
        assert "navigator.clipboard" in content

    def test_the_list_sorts_by_channel_id(self, admin_client):
        LineMessagingAccountFactory(name="B", channel_id="1657000002")
        LineMessagingAccountFactory(name="A", channel_id="1657000003")
        LineMessagingAccountFactory(name="C", channel_id="1657000001")
        changelist = reverse("admin:omnichannel_messagingaccount_changelist")
        column = admin_client.get(changelist).context["cl"].list_display.index("channel_id_display")
        response = admin_client.get(changelist, {"o": str(column)})
        assert [account.name for account in response.context["cl"].result_list] == ["C", "B", "A"]


class TestTheDonePage:
    def make_account_through_the_wizard(self, admin_client, name: str = "Reload shop") -> MessagingAccount:
        admin_client.post(reverse(WIZARD, args=["channel"]), {"name": name, "channel_type": "line"})
        admin_client.post(
            reverse(WIZARD, args=["account"]),
            {
                "channel_id": "1657000077",
                "channel_secret": channel_secret_new(),
                "channel_access_token": channel_access_token_new(),
            },
        )
        return MessagingAccount.objects.get(name=name)

    def test_reloading_the_done_page_shows_the_account_again(self, admin_client):
        account = self.make_account_through_the_wizard(admin_client)
        first = admin_client.get(reverse(WIZARD, args=["done"]))
        again = admin_client.get(reverse(WIZARD, args=["done"]))

        for page in (first, again):
            assert page.status_code == 200
            assert page.context["step"] == "done" and page.context["account"] == account
            assert b"1657000077" in page.content and account.line.callback_url.encode() in page.content

    def test_new_account_after_the_done_page_starts_an_empty_wizard(self, admin_client):
        self.make_account_through_the_wizard(admin_client)
        admin_client.get(reverse(WIZARD, args=["done"]))

        start = admin_client.get(reverse("admin:omnichannel_messagingaccount_add"), follow=True)

        assert start.context["step"] == "channel"
        assert start.context["form"]["name"].value() is None
        assert WIZARD_SESSION_KEY not in admin_client.session

    def test_the_done_page_links_to_the_accounts_conversations_which_lists_them(self, admin_client):
        account = self.make_account_through_the_wizard(admin_client)
        mine = ConversationFactory(
            social_profile=SocialProfileFactory(messaging_account=account, display_name="Mine customer")
        )
        ConversationFactory(social_profile=SocialProfileFactory(display_name="Other customer"))

        done = admin_client.get(reverse(WIZARD, args=["done"]))
        link = done.context["conversations_url"]
        assert f'href="{link}"'.replace("&", "&amp;").encode() in done.content

        listing = admin_client.get(link)
        assert listing.status_code == 200
        assert list(listing.context["cl"].result_list) == [mine]

    def test_with_the_stand_in_the_done_page_says_how_to_chat_with_the_account_there(
        self, admin_client, settings
    ):
        settings.LINE_API_BASE_URL = "http://127.0.0.1:8090"
        account = self.make_account_through_the_wizard(admin_client, name="Stand-in shop")
        done = admin_client.get(reverse(WIZARD, args=["done"])).content.decode()
        assert 'href="http://127.0.0.1:8090/?channel=1657000077"' in done
        assert "python manage.py line_standin_register &#x27;Stand-in shop&#x27;" in done
        assert account.name in done

    def test_without_the_stand_in_the_done_page_does_not_offer_it(self, admin_client, settings):
        settings.LINE_API_BASE_URL = ""
        self.make_account_through_the_wizard(admin_client)
        done = admin_client.get(reverse(WIZARD, args=["done"])).content.decode()
        assert "stand-in" not in done and "line_standin_register" not in done
        assert "Check the credentials" in done


class TestRegisteringAnAccountInTheStandIn:
    def test_the_command_registers_the_accounts_channel_so_a_customer_can_write_to_it(self, standin):
        account = LineMessagingAccountFactory(name="Registered shop")
        control = StandinControl(standin.base_url)
        out = io.StringIO()

        call_command("line_standin_register", "REGISTERED SHOP", stdout=out)

        (channel,) = control.channels()
        assert channel["channel_id"] == account.line.channel_id
        assert channel["channel_secret"] == account.line.channel_secret
        assert channel["channel_access_token"] == account.line.channel_access_token
        assert channel["webhook_url"] == account.line.callback_url
        assert f"{standin.base_url}/?channel={account.line.channel_id}" in out.getvalue()
        # LINE's bot info answers with the account's token: "Check credentials" passes now.
        assert line_account_check_credentials(account=account).ok

    def test_the_command_says_what_is_wrong_without_a_stand_in_or_an_account(self, settings):
        LineMessagingAccountFactory(name="Somewhere")
        settings.LINE_API_BASE_URL = ""
        with pytest.raises(CommandError, match="LINE_API_BASE_URL is not set"):
            call_command("line_standin_register", "Somewhere")
        settings.LINE_API_BASE_URL = "http://127.0.0.1:1"
        with pytest.raises(CommandError, match="No LINE messaging account is named 'Nowhere'"):
            call_command("line_standin_register", "Nowhere")
        with pytest.raises(CommandError, match="did not take the channel"):
            call_command("line_standin_register", "Somewhere")


class TestTheChangeForm:
    def test_secrets_are_shown_masked_with_an_empty_replace_field_and_never_in_the_html(self, admin_client):
        account = LineMessagingAccountFactory()
        response = admin_client.get(reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]))

        assert response.status_code == 200
        assert response.content.count("•••• set".encode()) == 2
        assert response.content.count("Replace with…".encode()) == 2
        assert account.line.channel_secret.encode() not in response.content
        assert account.line.channel_access_token.encode() not in response.content
        assert account.line.callback_url.encode() in response.content

    def test_saving_with_empty_secret_fields_keeps_them_and_a_filled_one_replaces_only_itself(
        self, admin_client
    ):
        account = LineMessagingAccountFactory()
        old_secret, old_token = account.line.channel_secret, account.line.channel_access_token
        url = reverse("admin:omnichannel_messagingaccount_change", args=[account.pk])
        form = {"name": "Renamed", "enabled": "on", "channel_id": account.line.channel_id}

        response = admin_client.post(url, {**form, "channel_secret": "", "channel_access_token": ""})
        assert response.status_code == 302, response.content.decode()[-3000:]
        line = LineAccount.objects.get(pk=account.pk)
        assert line.messaging_account.name == "Renamed"
        assert (line.channel_secret, line.channel_access_token) == (old_secret, old_token)

        new_secret = channel_secret_new()
        response = admin_client.post(url, {**form, "channel_secret": new_secret, "channel_access_token": ""})
        assert response.status_code == 302
        line = LineAccount.objects.get(pk=account.pk)
        assert (line.channel_secret, line.channel_access_token) == (new_secret, old_token)
        stored_secret, _ = raw_line_account_row(account)
        assert new_secret not in stored_secret

    def test_a_service_error_is_shown_on_its_field_and_nothing_changes(self, admin_client):
        account = LineMessagingAccountFactory()
        old_secret = account.line.channel_secret
        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]),
            {"name": "Renamed", "channel_id": account.line.channel_id, "channel_secret": "short"},
        )
        assert response.status_code == 200
        assert b"32 hexadecimal characters" in response.content
        assert b'value="short"' not in response.content
        account.refresh_from_db()
        assert account.name != "Renamed" and account.line.channel_secret == old_secret

    def test_a_supervisor_sees_the_account_read_only_with_masked_secrets(self, client):
        account = LineMessagingAccountFactory()
        client.force_login(SupervisorFactory())
        response = client.get(reverse("admin:omnichannel_messagingaccount_change", args=[account.pk]))
        assert response.status_code == 200
        assert b'name="channel_secret"' not in response.content
        assert "•••• set".encode() in response.content
        assert account.line.channel_id.encode() in response.content
        assert account.line.channel_access_token.encode() not in response.content
        assert b"Check credentials" not in response.content

    def test_deleting_an_account_removes_it_with_its_line_details(self, admin_client):
        account = LineMessagingAccountFactory()
        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_delete", args=[account.pk]), {"post": "yes"}
        )
        assert response.status_code == 302
        assert not MessagingAccount.objects.filter(pk=account.pk).exists()
        assert not LineAccount.objects.filter(pk=account.pk).exists()

    def test_deleting_an_account_takes_its_webhook_events_although_their_pages_are_read_only(
        self, admin_client
    ):
        event = LineWebhookEventFactory()
        url = reverse("admin:omnichannel_messagingaccount_delete", args=[event.messaging_account_id])
        assert b"your account doesn't have permission" not in admin_client.get(url).content
        assert admin_client.post(url, {"post": "yes"}).status_code == 302
        assert not MessagingAccount.objects.filter(pk=event.messaging_account_id).exists()
        assert not LineWebhookEvent.objects.filter(pk=event.pk).exists()

    def test_deleting_an_account_with_conversations_deletes_them_too(self, admin_client):
        conversation = MessageFactory().conversation
        url = reverse("admin:omnichannel_messagingaccount_delete", args=[conversation.messaging_account_id])
        admin_client.post(url, {"post": "yes"})
        assert not MessagingAccount.objects.filter(pk=conversation.messaging_account_id).exists()


class TestCheckCredentials:
    def test_the_action_reports_success_with_the_bot_name_from_line(self, admin_client, standin):
        account = LineMessagingAccountFactory()
        StandinControl(standin.base_url).channel_register(
            channel_id=account.line.channel_id,
            channel_secret=account.line.channel_secret,
            channel_access_token=account.line.channel_access_token,
            bot_display_name="Bangkok Shop Bot",
        )

        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_changelist"),
            {"action": "check_credentials", "_selected_action": [str(account.pk)]},
            follow=True,
        )

        assert "Connected to LINE bot “Bangkok Shop Bot”" in response.content.decode()
        line = LineAccount.objects.get(pk=account.pk)
        assert line.last_check_ok is True and line.bot_display_name == "Bangkok Shop Bot"
        listing = admin_client.get(reverse("admin:omnichannel_messagingaccount_changelist"))
        assert b"icon-yes.svg" in listing.content

    def test_the_button_reports_lines_refusal_of_an_unknown_token_in_plain_words(self, admin_client, standin):
        account = LineMessagingAccountFactory()
        change_url = reverse("admin:omnichannel_messagingaccount_change", args=[account.pk])
        button_url = reverse("admin:omnichannel_messagingaccount_check_credentials", args=[account.pk])
        assert button_url.encode() in admin_client.get(change_url).content

        response = admin_client.post(button_url, follow=True)

        assert response.redirect_chain[-1][0] == change_url
        text = response.content.decode()
        assert "LINE answered 401" in text and "the channel access token was refused" in text
        assert LineAccount.objects.get(pk=account.pk).last_check_ok is False

    def test_an_unreachable_line_is_reported_as_could_not_be_reached(self, admin_client, settings):
        settings.LINE_API_BASE_URL = settings.LINE_API_DATA_BASE_URL = "http://127.0.0.1:1"
        settings.LINE_API_TIMEOUT = 2
        account = LineMessagingAccountFactory()

        response = admin_client.post(
            reverse("admin:omnichannel_messagingaccount_check_credentials", args=[account.pk]), follow=True
        )

        assert "LINE could not be reached" in response.content.decode()

    def test_the_button_only_answers_post(self, admin_client):
        account = LineMessagingAccountFactory()
        url = reverse("admin:omnichannel_messagingaccount_check_credentials", args=[account.pk])
        assert admin_client.get(url).status_code == 405


class TestListPages:
    @pytest.mark.parametrize(
        ("url_name", "make_row"),
        [
            ("admin:omnichannel_messagingaccount_changelist", lambda: LineMessagingAccountFactory()),
            ("admin:omnichannel_conversation_changelist", lambda: MessageFactory().conversation),
            (
                "admin:omnichannel_message_changelist",
                lambda: MessageFactory(failed=True, author=AdministratorFactory()),
            ),
            ("admin:omnichannel_socialprofile_changelist", lambda: SocialProfileFactory()),
            ("admin:channels_line_linewebhookevent_changelist", lambda: LineWebhookEventFactory()),
        ],
    )
    def test_a_changelist_makes_the_same_number_of_queries_for_one_row_and_for_five(
        self, admin_client, url_name, make_row
    ):
        make_row()
        admin_client.get(reverse(url_name))  # warms the content type cache
        one = page_queries(admin_client, reverse(url_name))
        for _ in range(4):
            make_row()
        five = page_queries(admin_client, reverse(url_name))
        assert five == one

    def test_the_conversation_list_shows_customer_account_state_and_last_message(self, admin_client):
        message = MessageFactory(text="Where is my parcel?")
        conversation = message.conversation
        response = admin_client.get(reverse("admin:omnichannel_conversation_changelist"))
        content = response.content.decode()
        assert conversation.social_profile.display_name in content
        assert conversation.messaging_account.name in content
        assert "Where is my parcel?" in content and "Open" in content

    def test_the_social_profile_list_shows_who_is_reachable(self, admin_client):
        SocialProfileFactory(display_name="Blocked customer", is_reachable=False)
        response = admin_client.get(reverse("admin:omnichannel_socialprofile_changelist"))
        assert b"Blocked customer" in response.content
        assert b"icon-no.svg" in response.content

    def test_conversations_and_messages_cannot_be_added_or_edited_in_forms(self, admin_client):
        message = MessageFactory()
        assert admin_client.get(reverse("admin:omnichannel_conversation_add")).status_code == 403
        page = admin_client.get(
            reverse("admin:omnichannel_conversation_change", args=[message.conversation_id])
        )
        assert page.status_code == 200 and b'name="_save"' not in page.content
        assert message.text.encode() in page.content


class TestMessageRetry:
    def test_the_retry_action_queues_failed_outbound_messages_again_and_skips_the_others(self, admin_client):
        failed = MessageFactory(failed=True)
        delivered = MessageFactory(outbound=True)

        response = admin_client.post(
            reverse("admin:omnichannel_message_changelist"),
            {"action": "retry_delivery", "_selected_action": [failed.pk, delivered.pk]},
            follow=True,
        )

        failed.refresh_from_db()
        delivered.refresh_from_db()
        assert failed.delivery_state == DeliveryState.PENDING and failed.delivery_error == ""
        assert delivered.delivery_state == DeliveryState.DELIVERED
        content = response.content.decode()
        assert "1 message(s) queued for delivery again." in content
        assert "1 message(s) skipped" in content


class TestWebhookEventPages:
    def test_events_are_read_only_show_the_raw_json_and_filter_by_state_and_type(self, admin_client):
        failed = LineWebhookEventFactory(state=EventState.FAILED, event_type="follow", last_error="boom")
        LineWebhookEventFactory(state=EventState.PROCESSED, event_type="message")

        listing = admin_client.get(
            reverse("admin:channels_line_linewebhookevent_changelist"),
            {"state": "failed", "event_type": "follow"},
        )
        assert listing.status_code == 200
        assert listing.context["cl"].result_count == 1

        page = admin_client.get(reverse("admin:channels_line_linewebhookevent_change", args=[failed.pk]))
        assert page.status_code == 200
        assert b"&quot;webhookEventId&quot;: &quot;" + failed.webhook_event_id.encode() in page.content
        assert b'name="_save"' not in page.content
        assert admin_client.get(reverse("admin:channels_line_linewebhookevent_add")).status_code == 403

    def test_rejected_bodies_are_shown_as_received_and_cannot_be_changed(self, admin_client):
        account = LineMessagingAccountFactory()
        rejected = LineWebhookRejectedBody.objects.create(
            messaging_account=account, body='{"events": [oops', reason="Malformed JSON"
        )
        page = admin_client.get(
            reverse("admin:channels_line_linewebhookrejectedbody_change", args=[rejected.pk])
        )
        assert page.status_code == 200
        assert b"{&quot;events&quot;: [oops" in page.content
        assert b'name="_save"' not in page.content


def test_a_conversation_page_lists_its_messages_in_order(admin_client):
    conversation = ConversationFactory()
    first = MessageFactory(conversation=conversation, text="First words")
    second = MessageFactory(conversation=conversation, text="Second words", sent_at=first.sent_at)
    page = admin_client.get(reverse("admin:omnichannel_conversation_change", args=[conversation.pk]))
    content = page.content.decode()
    assert content.index(first.text) < content.index(second.text)


@pytest.mark.parametrize(
    ("url_name", "make_parent", "add_child"),
    [
        (
            "admin:omnichannel_conversation_change",
            lambda: ConversationFactory(),
            lambda conversation: MessageFactory(
                conversation=conversation, failed=True, author=AdministratorFactory()
            ),
        ),
        (
            "admin:omnichannel_message_change",
            lambda: MessageFactory(kind="image", text=""),
            lambda message: AttachmentFactory(message=message),
        ),
        (
            "admin:omnichannel_contact_change",
            lambda: ContactFactory(),
            lambda contact: SocialProfileFactory(contact=contact),
        ),
    ],
)
def test_a_change_page_with_inlines_makes_the_same_number_of_queries_for_one_child_and_for_five(
    admin_client, url_name, make_parent, add_child
):
    parent = make_parent()
    add_child(parent)
    admin_client.get(reverse(url_name, args=[parent.pk]))  # warms the content type cache
    one = page_queries(admin_client, reverse(url_name, args=[parent.pk]))
    for _ in range(4):
        add_child(parent)
    five = page_queries(admin_client, reverse(url_name, args=[parent.pk]))
    assert five == one
