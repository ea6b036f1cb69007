"""/api/v1/messaging-accounts/: roles, write-only secrets, service errors as 400, check credentials."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from channels_line.models import LineAccount
from channels_line.services.accounts import CHANNEL_SECRET_INVALID, NAME_TAKEN
from channels_line.standin.client import StandinControl
from omnichannel.models import Conversation, MessagingAccount
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    LineMessagingAccountFactory,
    MessageFactory,
    SupervisorFactory,
    channel_access_token_new,
    channel_secret_new,
)

pytestmark = pytest.mark.django_db

ACCOUNTS = "/api/v1/messaging-accounts/"


def detail(account: MessagingAccount) -> str:
    return f"{ACCOUNTS}{account.pk}/"


def new_account_body(**overrides: object) -> dict:
    return {
        "name": "Chiang Mai shop",
        "channel_type": "line",
        "channel_id": "1657123456",
        "channel_secret": channel_secret_new(),
        "channel_access_token": channel_access_token_new(),
        **overrides,
    }


def api_client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def admin_api() -> APIClient:
    return api_client_for(AdministratorFactory())


@pytest.fixture
def agent_api() -> APIClient:
    return api_client_for(AgentFactory())


def assert_no_secrets(response, *secrets: str) -> None:
    body = response.content.decode()
    for secret in secrets:
        assert secret not in body
    records = response.json()
    records = records.get("results", [records]) if isinstance(records, dict) else records
    for record in records:
        assert "channel_secret" not in record and "channel_access_token" not in record


class TestRoles:
    def test_an_administrator_creates_an_account_and_gets_201_without_the_secrets(self, admin_api):
        body = new_account_body()
        response = admin_api.post(ACCOUNTS, body, format="json")

        assert response.status_code == 201, response.content
        data = response.json()
        account = MessagingAccount.objects.get(pk=data["id"])
        assert (
            data["name"] == "Chiang Mai shop" and data["channel_type"] == "line" and data["enabled"] is True
        )
        assert data["channel_id"] == "1657123456"
        assert data["callback_url"] == account.line.callback_url
        assert data["callback_url"].endswith(f"/webhooks/line/{account.pk}/")
        assert data["credentials_checked_at"] is None and data["credentials_ok"] is None
        assert_no_secrets(response, body["channel_secret"], body["channel_access_token"])
        assert account.line.channel_secret == body["channel_secret"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT channel_secret, channel_access_token FROM channels_line_lineaccount")
            stored = cursor.fetchone()
        assert body["channel_secret"] not in stored[0] and body["channel_access_token"] not in stored[1]

    def test_an_agent_may_list_accounts_but_gets_403_creating_changing_or_deleting_one(self, agent_api):
        account = LineMessagingAccountFactory()
        assert agent_api.get(ACCOUNTS).status_code == 200
        assert agent_api.post(ACCOUNTS, new_account_body(), format="json").status_code == 403
        assert agent_api.patch(detail(account), {"name": "Mine"}, format="json").status_code == 403
        assert agent_api.delete(detail(account)).status_code == 403
        assert agent_api.post(f"{detail(account)}check-credentials/").status_code == 403
        assert not MessagingAccount.objects.filter(name__in=["Chiang Mai shop", "Mine"]).exists()

    def test_a_supervisor_cannot_create_an_account_either(self):
        response = api_client_for(SupervisorFactory()).post(ACCOUNTS, new_account_body(), format="json")
        assert response.status_code == 403

    def test_an_anonymous_client_gets_401(self):
        LineMessagingAccountFactory()
        client = APIClient()
        assert client.get(ACCOUNTS).status_code == 401
        assert client.post(ACCOUNTS, new_account_body(), format="json").status_code == 401

    def test_a_token_authenticates_and_a_wrong_token_is_refused(self):
        token = Token.objects.create(user=AdministratorFactory())
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        assert client.post(ACCOUNTS, new_account_body(), format="json").status_code == 201

        client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
        assert client.get(ACCOUNTS).status_code == 401

    def test_session_authentication_works_too(self, client):
        client.force_login(AdministratorFactory())
        assert client.get(ACCOUNTS).status_code == 200


class TestWriteOnlySecrets:
    def test_secrets_are_required_on_create(self, admin_api):
        response = admin_api.post(ACCOUNTS, {"name": "Shop", "channel_id": "1657000000"}, format="json")
        assert response.status_code == 400
        assert set(response.json()) == {"channel_secret", "channel_access_token"}

    def test_secrets_never_appear_in_list_or_detail(self, admin_api):
        account = LineMessagingAccountFactory()
        secret, token = account.line.channel_secret, account.line.channel_access_token
        assert_no_secrets(admin_api.get(ACCOUNTS), secret, token)
        assert_no_secrets(admin_api.get(detail(account)), secret, token)
        assert_no_secrets(admin_api.options(ACCOUNTS), secret, token)

    def test_an_update_without_secrets_keeps_them_and_a_given_one_replaces_only_itself(self, admin_api):
        account = LineMessagingAccountFactory()
        old_secret, old_token = account.line.channel_secret, account.line.channel_access_token

        response = admin_api.patch(detail(account), {"name": "Renamed", "enabled": False}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["name"] == "Renamed" and response.json()["enabled"] is False
        line = LineAccount.objects.get(pk=account.pk)
        assert (line.channel_secret, line.channel_access_token) == (old_secret, old_token)

        response = admin_api.patch(detail(account), {"channel_secret": ""}, format="json")
        assert response.status_code == 200
        assert LineAccount.objects.get(pk=account.pk).channel_secret == old_secret

        new_token = channel_access_token_new()
        response = admin_api.put(
            detail(account),
            {"name": "Renamed", "channel_id": line.channel_id, "channel_access_token": new_token},
            format="json",
        )
        assert response.status_code == 200, response.content
        assert_no_secrets(response, new_token, old_secret)
        line = LineAccount.objects.get(pk=account.pk)
        assert (line.channel_secret, line.channel_access_token) == (old_secret, new_token)


class TestServiceErrors:
    def test_a_malformed_secret_and_channel_id_come_back_as_field_errors(self, admin_api):
        body = new_account_body(channel_id="12ab", channel_secret="too-short")
        response = admin_api.post(ACCOUNTS, body, format="json")
        assert response.status_code == 400
        errors = response.json()
        assert "number shown in the console" in errors["channel_id"][0]
        assert "32 hexadecimal characters" in errors["channel_secret"][0]
        assert "too-short" not in response.content.decode()
        assert not MessagingAccount.objects.exists()

    def test_a_channel_already_connected_and_a_name_in_use_are_refused(self, admin_api):
        existing = LineMessagingAccountFactory(name="Taken")
        response = admin_api.post(
            ACCOUNTS, new_account_body(channel_id=existing.line.channel_id), format="json"
        )
        assert response.status_code == 400
        assert response.json() == {"channel_id": ["This LINE channel is connected already."]}

        other = LineMessagingAccountFactory()
        response = admin_api.patch(detail(other), {"name": "Taken"}, format="json")
        assert response.status_code == 400
        assert response.json() == {"name": [NAME_TAKEN]}

    def test_a_name_that_differs_only_in_case_is_a_400_on_create_and_on_update(self, admin_api):
        LineMessagingAccountFactory(name="Bangkok Shop")
        response = admin_api.post(ACCOUNTS, new_account_body(name="BANGKOK shop"), format="json")
        assert response.status_code == 400
        assert response.json() == {
            "name": [
                "A messaging account with this name exists already (names are compared without regard "
                "to case)."
            ]
        }

        other = LineMessagingAccountFactory(name="Other")
        response = admin_api.patch(detail(other), {"name": "bangkok shop"}, format="json")
        assert response.status_code == 400 and response.json() == {"name": [NAME_TAKEN]}
        response = admin_api.patch(detail(other), {"name": "OTHER"}, format="json")
        assert response.status_code == 200 and response.json()["name"] == "OTHER"

    @pytest.mark.parametrize(
        "secret",
        ["g" * 32, "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", "0123456789abcdef" * 3],
    )
    def test_a_channel_secret_that_is_not_32_lowercase_hexadecimal_characters_is_a_400(
        self, admin_api, secret
    ):
        response = admin_api.post(ACCOUNTS, new_account_body(channel_secret=secret), format="json")
        assert response.status_code == 400
        assert response.json() == {"channel_secret": [CHANNEL_SECRET_INVALID]}
        assert secret not in response.content.decode()

        account = LineMessagingAccountFactory()
        response = admin_api.patch(detail(account), {"channel_secret": secret}, format="json")
        assert response.status_code == 400
        assert response.json() == {"channel_secret": [CHANNEL_SECRET_INVALID]}
        assert not MessagingAccount.objects.filter(line__channel_id="1657123456").exists()

    def test_an_unknown_channel_type_is_refused(self, admin_api):
        response = admin_api.post(ACCOUNTS, new_account_body(channel_type="whatsapp"), format="json")
        assert response.status_code == 400 and "channel_type" in response.json()


class TestDeleteAndCheck:
    def test_an_administrator_deletes_an_account_with_its_line_details(self, admin_api):
        account = LineMessagingAccountFactory()
        assert admin_api.delete(detail(account)).status_code == 204
        assert not MessagingAccount.objects.filter(pk=account.pk).exists()
        assert not LineAccount.objects.filter(pk=account.pk).exists()

    def test_deleting_an_account_with_conversations_deletes_them_too(self, admin_api):
        conversation = MessageFactory().conversation
        response = admin_api.delete(detail(conversation.messaging_account))
        assert response.status_code == 204, response.content
        assert not Conversation.objects.filter(pk=conversation.pk).exists()

    def test_an_account_attached_to_a_workstream_is_not_deleted_and_the_answer_says_why(self, admin_api):
        from tests.routing.conftest import instance_make, workstream_make

        account = LineMessagingAccountFactory()
        instance_make(workstream_make(), account)
        response = admin_api.delete(detail(account))
        assert response.status_code == 409
        assert "remove the channel instance first" in response.json()["detail"]
        assert MessagingAccount.objects.filter(pk=account.pk).exists()

    def test_check_credentials_records_lines_answer(self, admin_api, standin):
        account = LineMessagingAccountFactory()
        StandinControl(standin.base_url).channel_register(
            channel_id=account.line.channel_id,
            channel_secret=account.line.channel_secret,
            channel_access_token=account.line.channel_access_token,
            bot_display_name="Chiang Mai Bot",
        )

        response = admin_api.post(f"{detail(account)}check-credentials/")

        assert response.status_code == 200, response.content
        data = response.json()
        assert data["credentials_ok"] is True
        assert "Chiang Mai Bot" in data["credentials_message"]
        assert data["credentials_checked_at"] is not None
        assert_no_secrets(response, account.line.channel_secret, account.line.channel_access_token)

    def test_check_credentials_with_a_token_line_does_not_know_says_so(self, admin_api, standin):
        account = LineMessagingAccountFactory()
        response = admin_api.post(f"{detail(account)}check-credentials/")
        assert response.status_code == 200
        assert response.json()["credentials_ok"] is False
        assert "the channel access token was refused" in response.json()["credentials_message"]

    def test_check_credentials_when_line_cannot_be_reached_says_so(self, admin_api, settings):
        settings.LINE_API_BASE_URL = settings.LINE_API_DATA_BASE_URL = "http://127.0.0.1:1"
        settings.LINE_API_TIMEOUT = 2
        account = LineMessagingAccountFactory()
        response = admin_api.post(f"{detail(account)}check-credentials/")
        assert response.status_code == 200
        assert "LINE could not be reached" in response.json()["credentials_message"]


def test_the_schema_describes_the_account_endpoints_with_write_only_secrets(admin_api):
    response = admin_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/v1/messaging-accounts/" in schema["paths"]
    assert "/api/v1/messaging-accounts/{id}/check-credentials/" in schema["paths"]
    properties = schema["components"]["schemas"]["MessagingAccount"]["properties"]
    assert properties["channel_secret"]["writeOnly"] is True
    assert properties["channel_access_token"]["writeOnly"] is True
    assert properties["callback_url"]["readOnly"] is True
