"""Read marks and the typing indicator, through the real SDK to the LINE stand-in over HTTP."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from channels_line.models import LineWebhookEvent
from channels_line.services import (
    line_conversation_mark_read,
    line_conversation_typing,
    line_event_process,
    line_webhook_receive,
)
from channels_line.standin import StandinControl
from omnichannel.models import Conversation
from tests.channels_line.payloads import sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def channel(standin, line_account, line_credentials):
    control = StandinControl(standin.base_url)
    control.channel_register(**line_credentials)
    user = control.user_create(line_credentials["channel_id"], display_name="Yui")
    return control, line_credentials["channel_id"], user["user_id"]


def customer_says(account, control, channel_id, action) -> Conversation:
    """The stand-in builds the event as LINE would; it is received and processed here, in-process."""
    sent = control.act(channel_id, action, deliver=False)
    body = json.dumps(sent["body"], ensure_ascii=False, separators=(",", ":")).encode()
    line_webhook_receive(account=account, body=body, signature=sign(body, account.line.channel_secret))
    for event in LineWebhookEvent.objects.filter(webhook_event_id__in=sent["webhook_event_ids"]):
        line_event_process(event_pk=event.pk)
    return Conversation.objects.get(
        messaging_account=account, thread_id=action.get("group_id") or action["user_id"]
    )


def test_marking_a_conversation_read_sends_the_newest_messages_token(line_account, channel):
    control, channel_id, user_id = channel
    customer_says(line_account, control, channel_id, {"type": "text", "user_id": user_id, "text": "first"})
    conversation = customer_says(
        line_account, control, channel_id, {"type": "text", "user_id": user_id, "text": "second"}
    )
    newest = conversation.messages.order_by("-sent_at").first()

    assert line_conversation_mark_read(conversation_pk=conversation.pk) is True

    marks = control.read_marks(channel_id)
    assert [m["mark_as_read_token"] for m in marks][-1:] == [newest.payload["markAsReadToken"]]


def test_typing_shows_the_loading_animation_in_a_one_to_one_chat(line_account, channel):
    control, channel_id, user_id = channel
    conversation = customer_says(
        line_account, control, channel_id, {"type": "text", "user_id": user_id, "text": "hi"}
    )

    assert line_conversation_typing(conversation_pk=conversation.pk, seconds=12) is True

    calls = control.loading_calls(channel_id)
    assert calls[-1]["chat_id"] == user_id
    assert calls[-1]["loading_seconds"] == 10  # LINE accepts multiples of 5


def test_typing_is_not_sent_for_a_group_where_line_has_no_indicator(line_account, channel):
    control, channel_id, user_id = channel
    conversation = customer_says(
        line_account,
        control,
        channel_id,
        {"type": "text", "user_id": user_id, "group_id": "C" + "0" * 32, "text": "hi all"},
    )
    assert line_conversation_typing(conversation_pk=conversation.pk) is False
    assert control.loading_calls(channel_id) == []


def test_agents_can_mark_read_and_show_typing_through_the_api(
    line_account, channel, django_capture_on_commit_callbacks
):
    from tests.factories import AgentFactory

    control, channel_id, user_id = channel
    conversation = customer_says(
        line_account, control, channel_id, {"type": "text", "user_id": user_id, "text": "hi"}
    )
    from omnichannel.lifecycle import ASSIGN, conversation_transition

    agent = AgentFactory()
    conversation_transition(conversation=conversation, action=ASSIGN, agent=agent)  # only its agent may
    api = APIClient()
    api.force_authenticate(agent)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        read = api.post(reverse("conversation-read", args=[conversation.pk]))
        typing = api.post(
            reverse("conversation-typing", args=[conversation.pk]), {"seconds": 30}, format="json"
        )
    assert (read.status_code, typing.status_code) == (202, 202)
    assert len(callbacks) == 2
    assert (
        api.post(
            reverse("conversation-typing", args=[conversation.pk]), {"seconds": 99}, format="json"
        ).status_code
        == 400
    )
