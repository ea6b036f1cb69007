"""A channel instance's user features are enforced: a customer may send files iff the instance has file
attachments on and customers can send; an agent iff file attachments are on and agents can send. A
customer's refused file is kept as a refused attachment (never downloaded) and its message flagged; an
agent's refused file is a 400 with the reason. An account in no channel instance accepts files."""

from __future__ import annotations

import base64
import json
import os

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from channels_line.models import LineWebhookEvent
from channels_line.services import line_event_process, line_webhook_receive
from omnichannel.admin import attachment_preview
from omnichannel.models import AttachmentState, Direction, Message
from omnichannel.services import message_send
from routing.models import ChannelInstance
from routing.selectors import channel_instance_attachment_policy
from routing.services import channel_instance_save
from tests.channels_line.conftest import (  # noqa: F401 (fixtures of the processing tests below)
    _fresh_webhook_account_cache,
    enqueued,
    line_account,
    line_credentials,
    no_line,
)
from tests.channels_line.payloads import body_bytes, load_payload, sign
from tests.conftest import wait_for
from tests.factories import ConversationFactory, SupervisorFactory
from tests.routing.conftest import workstream_make

CUSTOMERS_REFUSED = "This channel does not accept customers' files (channel instance '{name}': user features)"
AGENTS_REFUSED = "This channel does not let agents send files (channel instance '{name}': user features)."


def instance_for(account, **user_features: bool) -> ChannelInstance:
    return channel_instance_save(
        instance=ChannelInstance(messaging_account=account, workstream=workstream_make(), **user_features)
    )


class TestThePolicy:
    @pytest.mark.django_db
    @pytest.mark.parametrize(
        ("features", "customers", "agents"),
        [
            ({}, True, True),
            ({"file_attachments": False}, False, False),
            ({"customers_can_send_attachments": False}, False, True),
            ({"agents_can_send_attachments": False}, True, False),
            ({"file_attachments": False, "customers_can_send_attachments": True}, False, False),
        ],
    )
    def test_each_side_may_send_files_only_with_file_attachments_on_and_its_own_box_checked(
        self,
        line_account,  # noqa: F811
        features,
        customers,
        agents,
    ):
        instance_for(line_account, **features)

        policy = channel_instance_attachment_policy(messaging_account_id=line_account.pk)

        assert (policy.customers_can_send, policy.agents_can_send) == (customers, agents)
        assert policy.instance_name == line_account.name

    @pytest.mark.django_db
    def test_an_account_in_no_channel_instance_accepts_files_both_ways(self, line_account):  # noqa: F811
        policy = channel_instance_attachment_policy(messaging_account_id=line_account.pk)

        assert (policy.customers_can_send, policy.agents_can_send) == (True, True)
        assert policy.customers_refusal == policy.agents_refusal == ""


# --- Customers: processing a LINE message with content --------------------------------------------------


@pytest.fixture
def downloads(monkeypatch, enqueued) -> list[int]:  # noqa: F811
    """The media downloads queued after processing's commits, kept here instead of sent."""
    from channels_line.tasks import line_message_content_fetch

    queued: list[int] = []
    monkeypatch.setattr(line_message_content_fetch, "delay", queued.append)
    return queued


def process(account, name: str) -> LineWebhookEvent:
    payload = load_payload(name, fresh=True)
    body = body_bytes(payload)
    line_webhook_receive(account=account, body=body, signature=sign(body, account.line.channel_secret))
    event = LineWebhookEvent.objects.get(webhook_event_id=payload["events"][0]["webhookEventId"])
    return line_event_process(event_pk=event.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_line")
class TestCustomersFiles:
    @pytest.mark.parametrize(
        "features", [{"customers_can_send_attachments": False}, {"file_attachments": False}]
    )
    @pytest.mark.parametrize("payload", ["message_image__line_provider", "message_file__pdf"])
    def test_a_file_to_a_refusing_instance_is_kept_refused_and_flagged_and_never_downloaded(
        self,
        line_account,  # noqa: F811
        downloads,
        features,
        payload,
    ):
        instance_for(line_account, **features)

        process(line_account, payload)

        message = Message.objects.get()
        assert message.direction == Direction.INBOUND
        assert message.is_flagged is True
        attachment = message.attachments.get()
        assert attachment.state == AttachmentState.REFUSED
        assert attachment.error.startswith(CUSTOMERS_REFUSED.format(name=line_account.name))
        assert attachment.fetch_due_at is None  # the sweep never takes it up
        assert not attachment.file
        assert downloads == []

    def test_an_externally_hosted_file_to_a_refusing_instance_is_refused_without_its_link(
        self,
        line_account,  # noqa: F811
        downloads,
    ):
        instance_for(line_account, customers_can_send_attachments=False)

        process(line_account, "message_image__external_provider")

        attachment = Message.objects.get().attachments.get()
        assert attachment.state == AttachmentState.REFUSED
        assert attachment.external_url == ""

    @pytest.mark.parametrize("with_instance", [True, False])
    def test_a_file_to_an_allowing_instance_or_to_an_account_in_none_waits_for_download_as_before(
        self,
        line_account,  # noqa: F811
        downloads,
        with_instance,
    ):
        if with_instance:
            instance_for(line_account, agents_can_send_attachments=False)

        process(line_account, "message_image__line_provider")

        message = Message.objects.get()
        attachment = message.attachments.get()
        assert attachment.state == AttachmentState.PENDING
        assert message.is_flagged is False
        assert downloads == [attachment.pk]

    def test_the_policy_costs_one_query_for_a_message_with_content_and_none_for_text(
        self,
        line_account,  # noqa: F811
        downloads,
    ):
        instance_for(line_account, customers_can_send_attachments=False)
        process(line_account, "message_text__user")  # the conversation exists from here on

        with CaptureQueriesContext(connection) as text:
            process(line_account, "message_text__user")
        with CaptureQueriesContext(connection) as image:
            process(line_account, "message_image__line_provider")

        def policy_reads(queries) -> list[str]:
            column = ChannelInstance._meta.get_field("customers_can_send_attachments").column
            return [query["sql"] for query in queries if column in query["sql"]]

        assert policy_reads(text) == []
        assert len(policy_reads(image)) == 1
        assert len(image) - len(text) <= 3  # the policy, the attachment and its messages' check


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_through_the_stand_in_a_refused_image_is_never_fetched_and_an_allowed_one_is_downloaded(
    line_shop_online, celery_worker
):
    """The whole way: the stand-in signs and posts the customer's images to the live server's webhook,
    a real worker processes them. Every content request the product makes is counted by the stand-in."""
    shop = line_shop_online
    instance = instance_for(shop.account, customers_can_send_attachments=False)
    # A pass-through "fault" (a hundredth of a second late) that counts the content requests.
    fetches = shop.control.fault_add(
        r"^/v2/bot/message/[^/]+/content$", regex=True, times=100, delay_seconds=0.01
    )

    def customer_sends_image(photo: bytes) -> Message:
        result = shop.act(
            type="image", content_base64=base64.b64encode(photo).decode(), content_type="image/jpeg"
        )
        assert result["delivery"]["status"] == 200, result["delivery"]
        return wait_for(
            lambda: Message.objects.filter(external_id=result["message_ids"][0]).first(),
            message="the worker to store the image message",
        )

    refused = customer_sends_image(os.urandom(2_000))
    assert refused.is_flagged is True
    assert refused.attachments.get().state == AttachmentState.REFUSED

    instance.customers_can_send_attachments = True
    channel_instance_save(instance=instance)
    photo = os.urandom(3_000)
    allowed = customer_sends_image(photo)
    attachment = wait_for(
        lambda: allowed.attachments.filter(state=AttachmentState.READY).first(),
        message="the allowed image to be downloaded",
    )
    with attachment.file.open("rb") as stored:
        assert stored.read() == photo
    assert allowed.is_flagged is False
    assert refused.attachments.get().state == AttachmentState.REFUSED
    (counted,) = [fault for fault in shop.control.faults() if fault["fault_id"] == fetches["fault_id"]]
    assert counted["hits"] == 1  # the allowed image's content only


# --- Agents: message_send and the API ----------------------------------------------------------------------


def pdf(name: str = "menu.pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"%PDF-1.4 menu", content_type="application/pdf")


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.force_authenticate(SupervisorFactory())
    return client


def send_document(api: APIClient, conversation) -> object:
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"kind": "document", "file": pdf()},
        format="multipart",
    )


@pytest.mark.django_db
class TestAgentsFiles:
    @pytest.mark.parametrize(
        "features", [{"agents_can_send_attachments": False}, {"file_attachments": False}]
    )
    def test_an_agents_file_to_a_refusing_instance_is_a_400_with_the_reason_and_nothing_is_stored(
        self, api, features
    ):
        conversation = ConversationFactory()
        instance_for(conversation.messaging_account, **features)

        response = send_document(api, conversation)

        assert response.status_code == 400, response.content
        assert response.json() == {"file": [AGENTS_REFUSED.format(name=conversation.messaging_account.name)]}
        assert not Message.objects.exists()

    def test_text_still_goes_through_a_refusing_instance(self, api):
        conversation = ConversationFactory()
        instance_for(conversation.messaging_account, file_attachments=False)

        response = api.post(
            f"/api/v1/conversations/{conversation.pk}/messages/", {"text": "Hello"}, format="json"
        )

        assert response.status_code == 202, response.content

    @pytest.mark.parametrize("with_instance", [True, False])
    def test_an_agents_file_is_sent_when_the_instance_allows_it_or_there_is_none(
        self, api, settings, tmp_path, with_instance
    ):
        settings.MEDIA_ROOT = tmp_path
        conversation = ConversationFactory()
        if with_instance:
            instance_for(conversation.messaging_account, customers_can_send_attachments=False)

        response = send_document(api, conversation)

        assert response.status_code == 202, response.content
        assert response.json()["attachments"][0]["state"] == "ready"

    def test_message_send_raises_the_reason_on_the_file_field(self):
        conversation = ConversationFactory()
        instance_for(conversation.messaging_account, agents_can_send_attachments=False)

        with pytest.raises(ValidationError) as refused:
            message_send(conversation=conversation, author=None, kind="document", file=pdf())

        assert refused.value.message_dict == {
            "file": [AGENTS_REFUSED.format(name=conversation.messaging_account.name)]
        }


# --- How a refused file shows ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_line")
def test_a_refused_file_shows_its_reason_without_a_link_in_the_admin_and_the_api(
    line_account,  # noqa: F811
    downloads,
    client,
):
    instance_for(line_account, customers_can_send_attachments=False)
    process(line_account, "message_file__pdf")
    message = Message.objects.select_related("conversation").get()
    attachment = message.attachments.get()

    shown = attachment_preview(attachment)
    api = APIClient()
    api.force_authenticate(SupervisorFactory())
    listed = api.get(f"/api/v1/conversations/{message.conversation_id}/messages/").json()

    assert shown == f"{attachment.file_name} refused: {attachment.error}"
    assert "<a" not in shown
    (represented,) = [a for m in json.loads(json.dumps(listed))["results"] for a in m["attachments"]]
    assert represented["state"] == "refused"
    assert represented["url"] == ""
