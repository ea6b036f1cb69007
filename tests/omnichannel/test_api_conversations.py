"""/api/v1/conversations/ and /api/v1/conversations/{id}/messages/: filters, order, fixed query counts,
sending through message_send, retrying through message_retry, and the OpenAPI schema.

The caller here is a supervisor, who sees and works every conversation; what an agent sees and may do
(their own conversations only) is tests/omnichannel/test_access_policy.py."""

from __future__ import annotations

import datetime
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from omnichannel.models import (
    AttachmentState,
    ConversationState,
    DeliveryState,
    Direction,
    Message,
    MessageKind,
    ThreadType,
)
from tests.factories import (
    AgentFactory,
    AttachmentFactory,
    ContactFactory,
    ConversationFactory,
    LineMessagingAccountFactory,
    MessageFactory,
    SocialProfileFactory,
    SupervisorFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/api/v1/conversations/"


def messages_url(conversation) -> str:
    return f"{CONVERSATIONS}{conversation.pk}/messages/"


@pytest.fixture
def supervisor():
    return SupervisorFactory(first_name="Mei", last_name="Tan")


@pytest.fixture
def api(supervisor) -> APIClient:
    client = APIClient()
    client.force_authenticate(supervisor)
    return client


@pytest.fixture
def token_api(supervisor) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=supervisor).key}")
    return client


def minutes_ago(minutes: int) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(minutes=minutes)


class TestConversationList:
    def test_conversations_come_latest_activity_first_with_their_customer_and_contact(self, api):
        contact = ContactFactory(name="Somchai P.")
        old = ConversationFactory(last_message_at=minutes_ago(30))
        recent = ConversationFactory(
            last_message_at=minutes_ago(1),
            social_profile=SocialProfileFactory(contact=contact, language="th"),
        )
        middle = ConversationFactory(last_message_at=None)  # no message yet: created just now

        response = api.get(CONVERSATIONS)

        assert response.status_code == 200
        results = response.json()["results"]
        assert [c["id"] for c in results] == [middle.pk, recent.pk, old.pk]
        first = results[1]
        assert first["state"] == "open" and first["thread_type"] == "user"
        assert first["messaging_account"] == str(recent.messaging_account_id)
        assert first["customer"]["display_name"] == recent.social_profile.display_name
        assert first["customer"]["picture_url"] == recent.social_profile.picture_url
        assert first["customer"]["language"] == "th" and first["customer"]["is_reachable"] is True
        assert first["customer"]["contact"] == {
            "id": contact.pk,
            "name": "Somchai P.",
            "email": contact.email,
            "phone": contact.phone,
        }
        assert results[2]["customer"]["contact"] is None

    def test_the_list_takes_a_fixed_number_of_queries(self, token_api, django_assert_num_queries):
        for _ in range(3):
            ConversationFactory(social_profile=SocialProfileFactory(contact=ContactFactory()))
        ConversationFactory(
            thread_type=ThreadType.GROUP,
            thread_id="C" + "0" * 32,
            social_profile=None,
            messaging_account=LineMessagingAccountFactory(),
        )

        # Token and user, the user's permissions (two), count, page.
        with django_assert_num_queries(5):
            response = token_api.get(CONVERSATIONS)
        assert response.json()["count"] == 4

        for _ in range(5):
            ConversationFactory(social_profile=SocialProfileFactory(contact=ContactFactory()))
        with django_assert_num_queries(5):
            assert token_api.get(CONVERSATIONS).json()["count"] == 9

    def test_filters_by_state_account_thread_type_external_id_and_activity_since(self, api):
        account = LineMessagingAccountFactory()
        open_one = ConversationFactory(social_profile=SocialProfileFactory(messaging_account=account))
        active = ConversationFactory(state=ConversationState.ACTIVE, last_message_at=minutes_ago(90))
        group = ConversationFactory(
            thread_type=ThreadType.GROUP,
            thread_id="C" + "1" * 32,
            social_profile=None,
            messaging_account=account,
        )

        def ids(**params):
            response = api.get(CONVERSATIONS, params)
            assert response.status_code == 200, response.content
            return {c["id"] for c in response.json()["results"]}

        assert ids(state="active") == {active.pk}
        assert ids(state=["active", "open"]) == {open_one.pk, active.pk, group.pk}
        assert ids(messaging_account=str(account.pk)) == {open_one.pk, group.pk}
        assert ids(thread_type="group") == {group.pk}
        assert ids(social_profile_external_id=active.social_profile.external_id) == {active.pk}
        assert ids(updated_since=minutes_ago(30).isoformat()) == {open_one.pk, group.pk}

    def test_a_bad_filter_value_is_a_400_naming_it(self, api):
        response = api.get(CONVERSATIONS, {"state": "lost", "updated_since": "yesterday"})
        assert response.status_code == 400
        assert set(response.json()) == {"state", "updated_since"}

    def test_retrieve_gives_state_and_customer(self, api):
        conversation = ConversationFactory(state=ConversationState.WAITING)
        response = api.get(f"{CONVERSATIONS}{conversation.pk}/")
        assert response.status_code == 200
        assert response.json()["state"] == "waiting"
        assert response.json()["customer"]["external_id"] == conversation.social_profile.external_id

    def test_a_user_without_a_role_gets_403_and_an_anonymous_client_401(self):
        ConversationFactory()
        nobody = APIClient()
        nobody.force_authenticate(UserFactory())
        assert nobody.get(CONVERSATIONS).status_code == 403
        assert APIClient().get(CONVERSATIONS).status_code == 401


class TestMessageList:
    def test_every_message_comes_in_order_with_attachments_markers_and_author(
        self, api, supervisor, settings, tmp_path
    ):
        settings.MEDIA_ROOT = tmp_path
        conversation = ConversationFactory()
        start = minutes_ago(10)
        inbound = MessageFactory(conversation=conversation, text="Hello", sent_at=start)
        external = AttachmentFactory(
            message=MessageFactory(conversation=conversation, kind=MessageKind.IMAGE, text="", sent_at=start)
        )
        stored = AttachmentFactory(
            message=MessageFactory(
                conversation=conversation,
                outbound=True,
                author=supervisor,
                kind=MessageKind.DOCUMENT,
                text="",
                sent_at=start + datetime.timedelta(minutes=1),
            ),
            file=SimpleUploadedFile("invoice.pdf", b"%PDF-1.4 test", content_type="application/pdf"),
            file_name="invoice.pdf",
            content_type="application/pdf",
            external_url="",
            state=AttachmentState.READY,
        )
        unsent = MessageFactory(
            conversation=conversation,
            text="",
            sent_at=start + datetime.timedelta(minutes=2),
            unsent_at=timezone.now(),
        )
        edited = MessageFactory(
            conversation=conversation,
            text="Fixed typo",
            sent_at=start + datetime.timedelta(minutes=3),
            edited_at=timezone.now(),
        )
        MessageFactory(text="Someone else's conversation")

        response = api.get(messages_url(conversation))

        assert response.status_code == 200
        results = response.json()["results"]
        expected = [inbound, external.message, stored.message, unsent, edited]
        assert [m["uuid"] for m in results] == [str(m.uuid) for m in expected]
        assert (
            results[0]["direction"] == "in" and results[0]["text"] == "Hello" and results[0]["author"] is None
        )
        assert results[1]["attachments"][0]["url"] == "https://cdn.example.com/photo.jpg"
        document = results[2]
        # Served by the signed-in attachment view, never from MEDIA_URL.
        assert document["attachments"][0]["url"] == f"http://testserver/attachments/{stored.pk}/"
        assert document["author"] == {
            "id": supervisor.pk,
            "username": supervisor.username,
            "name": "Mei Tan",
        }
        assert document["delivery_state"] == "delivered"
        assert results[3]["unsent"] is True and results[0]["unsent"] is False
        assert results[4]["edited"] is True and results[4]["text"] == "Fixed typo"
        assert set(results[0]) >= {
            "payload",
            "is_flagged",
            "delivery_error",
            "sent_at",
            "kind",
            "unsent_at",
            "edited_at",
        }

    def test_the_message_list_takes_a_fixed_number_of_queries(self, token_api, django_assert_num_queries):
        conversation = ConversationFactory()
        for _ in range(3):
            AttachmentFactory(message=MessageFactory(conversation=conversation, kind=MessageKind.IMAGE))
        MessageFactory(conversation=conversation, outbound=True, author=AgentFactory())
        # Token and user, the user's permissions (two), the conversation, count, page, attachments.
        with django_assert_num_queries(7):
            assert token_api.get(messages_url(conversation)).json()["count"] == 4
        for _ in range(4):
            AttachmentFactory(message=MessageFactory(conversation=conversation, kind=MessageKind.IMAGE))
        MessageFactory(conversation=conversation, outbound=True, author=AgentFactory())
        with django_assert_num_queries(7):
            assert token_api.get(messages_url(conversation)).json()["count"] == 9

    def test_an_unknown_conversation_is_a_404(self, api):
        assert api.get(f"{CONVERSATIONS}999999/messages/").status_code == 404


class TestSendingMessages:
    def test_a_text_with_quick_replies_creates_a_pending_outbound_message_by_the_user(self, api, supervisor):
        conversation = ConversationFactory(last_message_at=minutes_ago(60))
        quick_replies = [{"label": "Yes", "text": "Yes please"}, {"label": "No", "text": "No thanks"}]

        response = api.post(
            messages_url(conversation),
            {"text": "Shall I book it?", "payload": {"quick_replies": quick_replies}},
            format="json",
        )

        assert response.status_code == 202, response.content
        data = response.json()
        message = Message.objects.get(uuid=data["uuid"])
        assert message.conversation == conversation and message.author == supervisor
        assert message.direction == Direction.OUTBOUND and message.kind == MessageKind.TEXT
        assert message.delivery_state == DeliveryState.PENDING
        assert message.payload["quick_replies"] == quick_replies
        assert data["delivery_state"] == "pending" and data["direction"] == "out"
        assert data["author"]["id"] == supervisor.pk
        conversation.refresh_from_db()
        assert conversation.last_message_at == message.sent_at

    def test_a_sticker_and_a_location_are_sent_as_json(self, api):
        conversation = ConversationFactory()
        sticker = api.post(
            messages_url(conversation),
            {"kind": "sticker", "payload": {"package_id": "446", "sticker_id": "1988"}},
            format="json",
        )
        location = api.post(
            messages_url(conversation),
            {
                "kind": "location",
                "payload": {"title": "Shop", "address": "1 Silom Rd", "latitude": 13.72, "longitude": 100.52},
            },
            format="json",
        )
        assert sticker.status_code == 202 and sticker.json()["kind"] == "sticker"
        assert location.status_code == 202 and location.json()["payload"]["latitude"] == 13.72

    def test_a_document_is_sent_as_multipart_with_its_file(self, api, settings, tmp_path):
        settings.MEDIA_ROOT = tmp_path
        conversation = ConversationFactory()
        upload = SimpleUploadedFile("menu.pdf", b"%PDF-1.4 menu", content_type="application/pdf")

        response = api.post(
            messages_url(conversation),
            {
                "kind": "document",
                "file": upload,
                "payload": json.dumps({"quick_replies": [{"label": "Thanks"}]}),
            },
            format="multipart",
        )

        assert response.status_code == 202, response.content
        attachment = response.json()["attachments"][0]
        assert attachment["file_name"] == "menu.pdf" and attachment["state"] == "ready"
        assert attachment["url"] == f"http://testserver/attachments/{attachment['id']}/"
        message = Message.objects.get(uuid=response.json()["uuid"])
        assert message.attachments.get().file.read() == b"%PDF-1.4 menu"
        assert message.payload == {"quick_replies": [{"label": "Thanks"}]}

    def test_the_services_refusals_come_back_as_400(self, api):
        conversation = ConversationFactory()
        empty = api.post(messages_url(conversation), {"text": "   "}, format="json")
        assert empty.status_code == 400 and "text" in empty.json()
        no_file = api.post(messages_url(conversation), {"kind": "image"}, format="json")
        assert no_file.status_code == 400 and "file" in no_file.json()
        too_many = api.post(
            messages_url(conversation),
            {"text": "Pick", "payload": {"quick_replies": [{"label": str(n)} for n in range(14)]}},
            format="json",
        )
        assert too_many.status_code == 400 and "payload" in too_many.json()

        closed = ConversationFactory(state=ConversationState.CLOSED, closed_at=timezone.now())
        response = api.post(messages_url(closed), {"text": "Hello?"}, format="json")
        assert response.status_code == 400
        assert response.json() == {"non_field_errors": ["The conversation is closed."]}

        blocked = ConversationFactory(social_profile=SocialProfileFactory(is_reachable=False))
        response = api.post(messages_url(blocked), {"text": "Hello?"}, format="json")
        assert response.status_code == 400 and "blocked" in response.json()["non_field_errors"][0]
        assert not Message.objects.exists()

    def test_a_kind_that_cannot_be_sent_is_refused(self, api):
        response = api.post(messages_url(ConversationFactory()), {"kind": "postback"}, format="json")
        assert response.status_code == 400 and "kind" in response.json()

    def test_a_user_without_a_role_cannot_send(self):
        conversation = ConversationFactory()
        client = APIClient()
        client.force_authenticate(UserFactory())
        assert client.post(messages_url(conversation), {"text": "Hi"}, format="json").status_code == 403


class TestRetry:
    def test_a_failed_outbound_message_is_queued_again_with_the_same_uuid(self, api):
        failed = MessageFactory(failed=True)
        response = api.post(f"{messages_url(failed.conversation)}{failed.uuid}/retry/")
        assert response.status_code == 202, response.content
        assert response.json()["uuid"] == str(failed.uuid)
        assert response.json()["delivery_state"] == "pending" and response.json()["delivery_error"] == ""
        failed.refresh_from_db()
        assert failed.delivery_state == DeliveryState.PENDING

    def test_a_delivered_or_inbound_message_cannot_be_retried(self, api):
        delivered = MessageFactory(outbound=True)
        response = api.post(f"{messages_url(delivered.conversation)}{delivered.uuid}/retry/")
        assert response.status_code == 400
        assert "delivered, or its delivery is under way" in response.json()["non_field_errors"][0]

    def test_a_message_of_another_conversation_is_a_404(self, api):
        failed = MessageFactory(failed=True)
        other = ConversationFactory()
        assert api.post(f"{messages_url(other)}{failed.uuid}/retry/").status_code == 404


class TestSchema:
    def test_the_schema_endpoint_answers_with_every_path(self, client):
        client.force_login(AgentFactory())  # the schema is for signed-in users (test_api_docs_access.py)
        response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert response.status_code == 200
        paths = json.loads(response.content)["paths"]
        assert {
            "/api/v1/conversations/",
            "/api/v1/conversations/{id}/",
            "/api/v1/conversations/{conversation_pk}/messages/",
            "/api/v1/conversations/{conversation_pk}/messages/{uuid}/retry/",
            "/api/v1/messaging-accounts/",
            "/api/v1/messaging-accounts/{id}/",
            "/api/v1/messaging-accounts/{id}/check-credentials/",
        } <= set(paths)
        list_parameters = {p["name"] for p in paths["/api/v1/conversations/"]["get"]["parameters"]}
        assert {
            "state",
            "messaging_account",
            "thread_type",
            "social_profile_external_id",
            "updated_since",
        } <= (list_parameters)
        send = paths["/api/v1/conversations/{conversation_pk}/messages/"]["post"]
        assert {"application/json", "multipart/form-data"} <= set(send["requestBody"]["content"])

    def test_the_schema_generates_without_warnings_and_validates(self, tmp_path):
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
        assert "/api/v1/conversations/" in (tmp_path / "schema.yml").read_text()
