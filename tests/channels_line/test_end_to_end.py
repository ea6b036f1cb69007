"""A customer's LINE events travel the whole way: the LINE stand-in signs each event and POSTs it to the
product's webhook served by a live server; a real Celery worker process processes it, fetching the
customer's profile and media from the stand-in over HTTP with the real line-bot-sdk."""

from __future__ import annotations

import base64
import json
import os

import pytest
from django.core.exceptions import ValidationError

from channels_line.models import EventState, LineWebhookEvent
from omnichannel.models import (
    AttachmentState,
    Conversation,
    Direction,
    Message,
    MessageKind,
    SocialProfile,
)
from omnichannel.services import message_send
from tests.conftest import LINE_USER_PROFILE, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop(line_shop_online, celery_worker):
    return line_shop_online


def customer_does(shop, **action) -> dict:
    """The customer acts in LINE; the webhook must have taken the event within LINE's 2 seconds."""
    result = shop.act(**action)
    delivery = result["delivery"]
    assert delivery["status"] == 200, delivery
    assert not delivery["slower_than_line_allows"], delivery
    return result


def inbound_message(line_message_id: str, timeout: float = 20.0) -> Message:
    return wait_for(
        lambda: (
            Message.objects.select_related("sender_profile", "conversation")
            .filter(external_id=line_message_id, direction=Direction.INBOUND)
            .first()
        ),
        timeout=timeout,
        message=f"the worker to store LINE message {line_message_id}",
    )


def test_a_text_message_arrives_in_a_conversation_with_the_profile_fetched_from_line(shop):
    result = customer_does(shop, type="text", text="こんにちは、注文 #1042 はいつ届きますか")

    message = inbound_message(result["message_ids"][0])

    assert message.kind == MessageKind.TEXT
    assert message.text == "こんにちは、注文 #1042 はいつ届きますか"
    profile = message.sender_profile
    assert profile.external_id == shop.user_id
    assert profile.display_name == LINE_USER_PROFILE["display_name"]
    assert profile.picture_url == LINE_USER_PROFILE["picture_url"]
    assert profile.status_message == LINE_USER_PROFILE["status_message"]
    assert profile.language == LINE_USER_PROFILE["language"]
    assert profile.profile_fetched_at is not None
    assert message.conversation.social_profile == profile
    assert message.conversation.messaging_account == shop.account
    event = LineWebhookEvent.objects.get(webhook_event_id=result["webhook_event_ids"][0])
    assert event.state == EventState.PROCESSED
    assert event.message == message


def test_when_line_cannot_give_the_profile_messages_still_arrive_and_line_is_not_asked_on_each(shop):
    shop.control.fault_add("/v2/bot/profile/", status=500, times=2)

    first = inbound_message(customer_does(shop, type="text", text="Hello?")["message_ids"][0])
    second = inbound_message(customer_does(shop, type="text", text="Anyone there?")["message_ids"][0])

    profile = SocialProfile.objects.get(external_id=shop.user_id)
    assert first.sender_profile == second.sender_profile == profile
    assert profile.display_name == "" and profile.profile_fetched_at is None
    assert profile.profile_attempted_at is not None
    # One failed fetch for the first message; the second message did not wait on LINE again.
    assert [(fault["hits"], fault["remaining"]) for fault in shop.control.faults()] == [(1, 1)]


def test_an_image_sent_through_line_is_downloaded_into_storage_byte_for_byte(shop):
    photo = os.urandom(48_000)

    result = customer_does(
        shop, type="image", content_base64=base64.b64encode(photo).decode(), content_type="image/jpeg"
    )

    message = inbound_message(result["message_ids"][0])
    attachment = wait_for(
        lambda: message.attachments.filter(state=AttachmentState.READY).first(),
        message="the image to be downloaded",
    )
    assert message.kind == MessageKind.IMAGE
    assert attachment.content_type == "image/jpeg"
    assert attachment.size == len(photo)
    with attachment.file.open("rb") as stored:
        assert stored.read() == photo


def test_a_video_still_being_transcoded_is_fetched_again_later_and_stored(shop):
    clip = os.urandom(30_000)

    result = customer_does(
        shop,
        type="video",
        content_base64=base64.b64encode(clip).decode(),
        content_type="video/mp4",
        duration=4000,
        ready_after=60,  # LINE is transcoding it until the test moves the stand-in's clock on
    )

    message = inbound_message(result["message_ids"][0])
    # LINE answered 202 (not ready) to the first download: the attachment waits for the retry.
    waiting = wait_for(
        lambda: message.attachments.filter(
            state=AttachmentState.PENDING, error="LINE is still preparing the content"
        ).first(),
        timeout=10,
        message="the first download to be answered 202",
    )
    assert waiting.fetch_attempts == 1
    shop.control.advance_clock(60)
    # The task's own retry (5 s later) downloads it.
    attachment = wait_for(
        lambda: message.attachments.filter(state=AttachmentState.READY).first(),
        timeout=15,
        message="the retried download to store the video",
    )
    assert attachment.fetch_attempts == 2
    assert attachment.error == ""
    assert attachment.duration_ms == 4000
    with attachment.file.open("rb") as stored:
        assert stored.read() == clip


def test_a_redelivered_event_is_stored_and_processed_once(shop):
    first = customer_does(shop, type="text", text="Is my order shipped?")
    event_id = first["webhook_event_ids"][0]
    inbound_message(first["message_ids"][0])

    again = customer_does_redelivery(shop, event_id)

    assert again["events"][0]["deliveryContext"] == {"isRedelivery": True}
    assert again["events"][0]["webhookEventId"] == event_id
    assert json.loads(again["delivery"]["response_body"]) == {"status": "ok", "stored": 0, "duplicates": 1}
    assert LineWebhookEvent.objects.filter(webhook_event_id=event_id).count() == 1
    assert Message.objects.filter(direction=Direction.INBOUND).count() == 1
    assert Conversation.objects.count() == 1


def customer_does_redelivery(shop, event_id: str) -> dict:
    result = shop.control.redeliver(shop.channel_id, event_id)
    assert result["delivery"]["status"] == 200, result["delivery"]
    return result


def test_unfollowing_marks_the_customer_unreachable_and_sending_is_refused(shop):
    followed = customer_does(shop, type="follow")
    wait_for(
        lambda: LineWebhookEvent.objects.filter(
            webhook_event_id=followed["webhook_event_ids"][0], state=EventState.PROCESSED
        ).exists(),
        message="the follow event to be processed",
    )
    profile = SocialProfile.objects.get(external_id=shop.user_id)
    assert profile.is_reachable
    conversation = Conversation.objects.get(social_profile=profile)

    customer_does(shop, type="unfollow")

    wait_for(
        lambda: not SocialProfile.objects.get(pk=profile.pk).is_reachable,
        message="the unfollow event to mark the profile unreachable",
    )
    assert conversation.messages.filter(
        kind=MessageKind.EVENT, text="Blocked the account: messages can no longer reach them"
    ).exists()
    conversation.social_profile.refresh_from_db()
    with pytest.raises(ValidationError, match="blocked"):
        message_send(conversation=conversation, author=None, text="Are you still there?")
