"""Outbound delivery to LINE: the real line-bot-sdk calls the LINE stand-in over HTTP, and the stand-in
checks every request against messaging-api.yml (it answers 400 otherwise). Most tests run the delivery
task in this process (`apply()`: retries run at once); the last ones go through the real worker."""

from __future__ import annotations

import datetime
import time
import urllib.error
import urllib.request

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import F
from django.test import Client
from django.urls import reverse
from linebot.v3.messaging import ReplyMessageRequest, TextMessage

from channels_line import tasks
from channels_line.client import line_client
from channels_line.models import LineWebhookEvent
from channels_line.services import line_event_process, outbound
from channels_line.standin.webhook import encode_body
from omnichannel.models import (
    Attachment,
    AttachmentState,
    Conversation,
    DeliveryState,
    Message,
    MessageKind,
)
from omnichannel.services import message_retry, message_send
from tests.conftest import LineShop, wait_for
from tests.factories import ConversationFactory, MessageFactory, SocialProfileFactory

pytestmark = pytest.mark.django_db

# Signed links are fetched on loopback: an http_proxy from the environment must not get in the way.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def customer_does(shop: LineShop, **action) -> LineWebhookEvent:
    """The customer acts in LINE; the stand-in's signed webhook body is posted to the webhook view and
    the stored event processed here, as the worker would."""
    result = shop.act(deliver=False, **action)
    response = Client().post(
        reverse("line-webhook", args=[shop.account.pk]),
        data=encode_body(result["body"]),
        content_type="application/json; charset=utf-8",
        HTTP_X_LINE_SIGNATURE=result["signature"],
    )
    assert response.status_code == 200, response.content
    event = LineWebhookEvent.objects.get(webhook_event_id=result["webhook_event_ids"][0])
    return line_event_process(event_pk=event.pk)


def customer_writes(shop: LineShop, text: str = "Where is my order?") -> Message:
    return customer_does(shop, type="text", text=text).message


def quiet_conversation(shop: LineShop) -> Conversation:
    """A conversation with the shop's LINE user in which no reply token is at hand."""
    profile = SocialProfileFactory(messaging_account=shop.account, external_id=shop.user_id)
    return ConversationFactory(social_profile=profile)


def deliver(message: Message) -> Message:
    """Run the delivery task here; its retries run at once, without the countdown."""
    result = tasks.line_message_deliver.apply(args=[message.pk])
    assert result.successful(), result.traceback
    message.refresh_from_db()
    return message


def send_text(conversation: Conversation, text: str = "Your parcel left the warehouse today.", **payload):
    return message_send(conversation=conversation, author=None, text=text, payload=payload)


def http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with _opener.open(url, timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


@pytest.fixture
def shop(line_shop: LineShop) -> LineShop:
    return line_shop


class TestReplyToken:
    def test_an_answer_to_a_fresh_message_is_a_free_reply_with_its_token(self, shop):
        inbound = customer_writes(shop)
        event = LineWebhookEvent.objects.get(message=inbound)

        answer = deliver(send_text(inbound.conversation))

        assert answer.delivery_state == DeliveryState.DELIVERED
        assert answer.delivery_method == "reply"
        assert answer.delivered_at is not None
        (sent,) = shop.sent()
        assert sent["method"] == "reply"
        assert sent["reply_token"] == event.reply_token
        assert sent["message"] == {"type": "text", "text": "Your parcel left the warehouse today."}
        assert shop.quota_used() == 0

    def test_a_reply_token_serves_once_and_the_next_answer_is_pushed_with_the_message_uuid(self, shop):
        conversation = customer_writes(shop).conversation

        first = deliver(send_text(conversation, "Thank you for waiting."))
        second = deliver(send_text(conversation, "Your parcel arrives tomorrow."))

        assert (first.delivery_method, second.delivery_method) == ("reply", "push")
        assert [(s["method"], s["retry_key"]) for s in shop.sent()] == [
            ("reply", None),
            ("push", str(second.uuid)),
        ]
        assert shop.quota_used() == 1

    def test_a_token_older_than_fifty_seconds_is_left_alone_and_the_answer_pushed(self, shop):
        inbound = customer_writes(shop)
        event = LineWebhookEvent.objects.get(message=inbound)
        # The answer comes 51 s after the customer wrote: LINE's "about one minute" is too close.
        LineWebhookEvent.objects.filter(pk=event.pk).update(
            line_timestamp=F("line_timestamp") - datetime.timedelta(seconds=51)
        )

        answer = deliver(send_text(inbound.conversation))

        assert answer.delivery_method == "push"
        assert [(s["method"], s["retry_key"]) for s in shop.sent()] == [("push", str(answer.uuid))]
        # The token was never spent: LINE still takes it.
        with line_client(shop.account.line.channel_access_token) as client:
            client.api.reply_message(
                ReplyMessageRequest(
                    reply_token=event.reply_token, messages=[TextMessage(text="Still valid")]
                ),
                _request_timeout=5,
            )
        assert [s["method"] for s in shop.sent()] == ["push", "reply"]

    def test_a_token_that_line_no_longer_accepts_falls_back_to_a_push(self, shop):
        inbound = customer_writes(shop)
        shop.control.advance_clock(61)

        answer = deliver(send_text(inbound.conversation))

        assert answer.delivery_state == DeliveryState.DELIVERED
        assert answer.delivery_method == "push"
        assert [(s["method"], s["retry_key"]) for s in shop.sent()] == [("push", str(answer.uuid))]
        assert LineWebhookEvent.objects.get(message=inbound).reply_token_used_at is not None


class TestRetriesAndFailures:
    def test_delivering_a_message_twice_is_answered_409_and_the_customer_gets_it_once(self, shop):
        answer = deliver(send_text(quiet_conversation(shop)))
        # As if the task ran again after LINE had accepted the push (a worker lost before its ack).
        Message.objects.filter(pk=answer.pk).update(delivery_state=DeliveryState.PENDING)

        again = deliver(answer)

        assert again.delivery_state == DeliveryState.DELIVERED
        assert again.delivery_attempts == 2
        assert [(s["method"], s["retry_key"]) for s in shop.sent()] == [("push", str(answer.uuid))]
        assert shop.quota_used() == 1

    def test_a_rate_limit_and_a_server_error_are_retried_and_then_delivered(self, shop):
        shop.control.fault_add("/v2/bot/message/push", status=429)
        shop.control.fault_add("/v2/bot/message/push", status=500)

        answer = deliver(send_text(quiet_conversation(shop)))

        assert answer.delivery_state == DeliveryState.DELIVERED
        assert answer.delivery_attempts == 3
        assert answer.delivery_error == ""
        assert shop.control.faults() == []
        assert [s["retry_key"] for s in shop.sent()] == [str(answer.uuid)]

    def test_after_the_last_try_the_message_is_failed_with_lines_reason_and_can_be_sent_again(
        self, shop, django_capture_on_commit_callbacks
    ):
        shop.control.fault_add("/v2/bot/message/push", status=500, times=tasks.DELIVERY_MAX_RETRIES + 1)

        answer = deliver(send_text(quiet_conversation(shop)))

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_error == "LINE answered 500: Internal server error"
        assert answer.delivery_attempts == tasks.DELIVERY_MAX_RETRIES + 1
        assert shop.sent() == []

        with django_capture_on_commit_callbacks() as scheduled:
            message_retry(message=answer)
        answer.refresh_from_db()
        assert (answer.delivery_state, answer.delivery_error) == (DeliveryState.PENDING, "")
        assert len(scheduled) == 1
        assert deliver(answer).delivery_state == DeliveryState.DELIVERED
        assert [s["retry_key"] for s in shop.sent()] == [str(answer.uuid)]

    def test_a_hang_longer_than_the_timeout_is_retried_and_the_customer_gets_the_message_once(
        self, shop, settings
    ):
        settings.LINE_API_TIMEOUT = 0.3
        hang = 1.0
        shop.control.fault_add("/v2/bot/message/push", delay_seconds=hang)
        started = time.monotonic()

        answer = deliver(send_text(quiet_conversation(shop)))

        assert answer.delivery_state == DeliveryState.DELIVERED
        assert answer.delivery_attempts == 2
        # The hung request reaches LINE after all; its retry key keeps the message single.
        time.sleep(max(0.0, started + hang + 0.3 - time.monotonic()))
        assert [s["retry_key"] for s in shop.sent()] == [str(answer.uuid)]

    def test_a_reply_line_did_not_answer_in_time_is_not_pushed_again_behind_the_agents_back(
        self, shop, settings, django_capture_on_commit_callbacks
    ):
        settings.LINE_API_TIMEOUT = 0.3
        hang = 1.0
        inbound = customer_writes(shop)
        shop.control.fault_add("/v2/bot/message/reply", delay_seconds=hang)
        started = time.monotonic()

        answer = deliver(send_text(inbound.conversation))

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_attempts == 1
        assert "may have reached the customer" in answer.delivery_error
        # The hung reply reaches LINE after all: the customer has the message once, not twice.
        time.sleep(max(0.0, started + hang + 0.3 - time.monotonic()))
        assert [s["method"] for s in shop.sent()] == ["reply"]

        # The agent, having checked, sends it again: a push with the message's retry key.
        with django_capture_on_commit_callbacks() as scheduled:
            message_retry(message=answer)
        assert len(scheduled) == 1
        answer = deliver(answer)
        assert (answer.delivery_state, answer.delivery_method) == (DeliveryState.DELIVERED, "push")
        assert [(s["method"], s["retry_key"]) for s in shop.sent()] == [
            ("reply", None),
            ("push", str(answer.uuid)),
        ]

    def test_a_reply_line_answered_with_a_server_error_is_not_pushed_behind_the_agents_back(self, shop):
        """LINE says a request answered 5xx may still have been carried out, and a reply has no retry
        key: pushing it now could give the customer the message twice."""
        inbound = customer_writes(shop)
        shop.control.fault_add("/v2/bot/message/reply", status=500)

        answer = deliver(send_text(inbound.conversation))

        assert answer.delivery_state == DeliveryState.FAILED
        assert "may have reached the customer" in answer.delivery_error
        assert [s["method"] for s in shop.sent()] == []  # nothing pushed after the doubtful reply

    def test_a_delivery_that_never_ends_is_given_up_after_its_last_attempt(self, shop):
        answer = send_text(quiet_conversation(shop))
        Message.objects.filter(pk=answer.pk).update(delivery_attempts=outbound.DELIVERY_MAX_ATTEMPTS)

        answer = deliver(answer)

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_error == f"Gave up after {outbound.DELIVERY_MAX_ATTEMPTS} attempts."
        assert shop.sent() == []

    def test_a_reply_that_could_not_connect_is_retried_as_a_push(self, shop, settings):
        inbound = customer_writes(shop)
        settings.LINE_API_BASE_URL = "http://127.0.0.1:1"  # refused: nothing was sent
        message = send_text(inbound.conversation)
        result = tasks.line_message_deliver.apply(args=[message.pk], retries=tasks.DELIVERY_MAX_RETRIES)
        assert result.successful(), result.traceback
        message.refresh_from_db()

        assert message.delivery_state == DeliveryState.FAILED  # out of tries, but not "may have arrived"
        assert "may have reached" not in message.delivery_error
        assert "connection failed" in message.delivery_error

    def test_a_push_line_refuses_fails_at_once_with_lines_reason(self, shop):
        stranger = ConversationFactory(social_profile=SocialProfileFactory(messaging_account=shop.account))

        answer = deliver(send_text(stranger))

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_attempts == 1
        assert answer.delivery_error.startswith("LINE answered 400: Failed to send messages")
        assert stranger.thread_id in answer.delivery_error

    def test_a_message_lines_models_refuse_fails_with_the_reason_instead_of_staying_sending(self, shop):
        # Stored by another path than message_send, which allows at most 13 quick replies.
        message = MessageFactory(
            conversation=quiet_conversation(shop),
            outbound=True,
            delivery_state=DeliveryState.PENDING,
            text="Pick a time",
            payload={"quick_replies": [{"label": f"{hour}:00"} for hour in range(8, 22)]},
        )

        answer = deliver(message)

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_error.startswith("The message cannot be sent to LINE")
        assert "QuickReply" in answer.delivery_error and "at most 13 items" in answer.delivery_error
        assert shop.sent() == []

    def test_a_customer_who_blocked_the_account_is_not_sent_anything(self, shop):
        conversation = customer_writes(shop).conversation
        answer = send_text(conversation)
        customer_does(shop, type="unfollow")

        answer = deliver(answer)

        assert answer.delivery_state == DeliveryState.FAILED
        assert answer.delivery_error == "The customer has blocked the account."
        assert answer.delivery_attempts == 0
        # LINE accepts (and records) a push to a user who blocked the account: nothing was pushed.
        assert shop.sent() == []


class TestMessageShapes:
    def test_a_text_over_5000_characters_goes_as_several_line_messages(self, shop):
        words = " ".join(f"w{n:08d}" for n in range(1300))  # 12,999 characters

        answer = deliver(send_text(quiet_conversation(shop), words))

        sent = shop.sent()
        assert len(sent) == 3
        assert all(s["message"]["type"] == "text" and len(s["message"]["text"]) <= 5000 for s in sent)
        assert "".join(s["message"]["text"] for s in sent) == words
        assert {s["retry_key"] for s in sent} == {str(answer.uuid)}

    def test_more_than_five_pieces_go_in_two_requests_with_quick_replies_on_the_very_last(self, shop):
        text = " ".join(f"w{n:08d}" for n in range(2700))  # 26,999 characters: six pieces
        quick_replies = [{"label": "Yes"}, {"label": "No", "text": "No, thank you"}]

        answer = deliver(send_text(quiet_conversation(shop), text, quick_replies=quick_replies))

        sent = shop.sent()
        assert len(sent) == 6
        request_ids = [s["request_id"] for s in sent]
        assert request_ids[:5] == [request_ids[0]] * 5 and request_ids[5] != request_ids[0]
        assert sent[0]["retry_key"] == str(answer.uuid) and sent[5]["retry_key"] != str(answer.uuid)
        assert [("quickReply" in s["message"]) for s in sent] == [False] * 5 + [True]
        assert sent[-1]["message"]["quickReply"] == {
            "items": [
                {"type": "action", "action": {"type": "message", "label": "Yes", "text": "Yes"}},
                {"type": "action", "action": {"type": "message", "label": "No", "text": "No, thank you"}},
            ]
        }

    def test_quick_replies_arrive_on_the_last_message_of_a_split_text(self, shop):
        text = "A" * 4000 + "\n" + "B" * 4000

        deliver(send_text(quiet_conversation(shop), text, quick_replies=[{"label": "Thanks!"}]))

        first, last = shop.sent()
        assert (first["message"]["text"], last["message"]["text"]) == ("A" * 4000, "B" * 4000)
        assert "quickReply" not in first["message"]
        assert [item["action"]["label"] for item in last["message"]["quickReply"]["items"]] == ["Thanks!"]

    def test_a_sticker(self, shop):
        answer = message_send(
            conversation=quiet_conversation(shop),
            author=None,
            kind=MessageKind.STICKER,
            payload={"package_id": 446, "sticker_id": 1988},
        )

        assert deliver(answer).delivery_state == DeliveryState.DELIVERED
        (sent,) = shop.sent()
        assert sent["message"] == {"type": "sticker", "packageId": "446", "stickerId": "1988"}

    def test_a_location(self, shop):
        place = {"title": "Sakura Shop Shibuya", "address": "1-2-3 Jinnan, Shibuya, Tokyo"}
        answer = message_send(
            conversation=quiet_conversation(shop),
            author=None,
            kind=MessageKind.LOCATION,
            payload={**place, "latitude": 35.6618, "longitude": 139.7041},
        )

        assert deliver(answer).delivery_state == DeliveryState.DELIVERED
        (sent,) = shop.sent()
        assert sent["message"] == {"type": "location", **place, "latitude": 35.6618, "longitude": 139.7041}


def outbound_file(
    conversation: Conversation, *, kind: str, name: str, content_type: str, data: bytes, text=""
):
    """An outbound message with a stored file, as message_send stores it, left for this test to deliver
    (message_send would also queue it on the broker for whatever worker runs)."""
    message = MessageFactory(
        conversation=conversation, outbound=True, delivery_state=DeliveryState.PENDING, kind=kind, text=text
    )
    Attachment.objects.create(
        message=message,
        file=SimpleUploadedFile(name, data, content_type=content_type),
        file_name=name,
        content_type=content_type,
        size=len(data),
        state=AttachmentState.READY,
    )
    return message


@pytest.mark.django_db(transaction=True)
class TestSignedLinks:
    """Media and documents reach the customer as signed links to the product, served here by the live
    server (LINE's servers, played by this test, fetch them)."""

    def test_an_image_is_sent_as_a_signed_link_that_serves_its_bytes(self, line_shop_online):
        shop = line_shop_online
        picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
        message = outbound_file(
            quiet_conversation(shop),
            kind=MessageKind.IMAGE,
            name="map.png",
            content_type="image/png",
            data=picture,
        )

        assert deliver(message).delivery_state == DeliveryState.DELIVERED

        (sent,) = shop.sent()
        assert sent["message"]["type"] == "image"
        url = sent["message"]["originalContentUrl"]
        assert sent["message"]["previewImageUrl"] == url
        assert url.startswith(f"{shop.account.line.callback_url.split('/webhooks/')[0]}/files/")
        assert http_get(url) == (200, "image/png", picture)

    def test_an_expired_image_link_answers_410(self, line_shop_online, settings):
        shop = line_shop_online
        message = outbound_file(
            quiet_conversation(shop),
            kind=MessageKind.IMAGE,
            name="map.png",
            content_type="image/png",
            data=b"png",
        )
        deliver(message)
        url = shop.sent()[0]["message"]["originalContentUrl"]

        settings.DOCUMENT_LINK_MAX_AGE_SECONDS = 0

        status, _, body = http_get(url)
        assert (status, body) == (410, b"This link has expired.")

    def test_a_document_becomes_a_text_with_a_signed_link(self, line_shop_online):
        shop = line_shop_online
        invoice = b"%PDF-1.7\n" + b"invoice 1042\n" * 100
        message = outbound_file(
            quiet_conversation(shop),
            kind=MessageKind.DOCUMENT,
            name="invoice-1042.pdf",
            content_type="application/pdf",
            data=invoice,
            text="Here is your invoice.",
        )

        assert deliver(message).delivery_state == DeliveryState.DELIVERED

        (sent,) = shop.sent()
        assert sent["message"]["type"] == "text"
        intro, blank, file_line, url = sent["message"]["text"].split("\n")
        assert (intro, blank, file_line) == ("Here is your invoice.", "", "📄 invoice-1042.pdf")
        assert http_get(url) == (200, "application/pdf", invoice)


class TestOrder:
    def test_a_message_waits_while_an_earlier_one_is_on_its_way_and_is_queued_when_it_has_left(
        self, shop, django_capture_on_commit_callbacks
    ):
        conversation = quiet_conversation(shop)
        first, second = (
            send_text(conversation, "Here is your invoice."),
            send_text(conversation, "Anything else?"),
        )

        assert deliver(second).delivery_state == DeliveryState.PENDING  # not its turn: nothing sent
        assert shop.sent() == []
        with django_capture_on_commit_callbacks() as queued:
            assert deliver(first).delivery_state == DeliveryState.DELIVERED
        assert len(queued) == 1  # the next one's delivery
        assert deliver(second).delivery_state == DeliveryState.DELIVERED

        assert [s["message"]["text"] for s in shop.sent()] == ["Here is your invoice.", "Anything else?"]

    def test_an_earlier_message_that_failed_does_not_hold_up_the_next(self, shop):
        conversation = quiet_conversation(shop)
        first, second = send_text(conversation, "One"), send_text(conversation, "Two")
        shop.control.fault_add("/v2/bot/message/push", status=400)

        assert deliver(first).delivery_state == DeliveryState.FAILED
        assert deliver(second).delivery_state == DeliveryState.DELIVERED

    def test_an_unexpected_error_fails_the_message_instead_of_holding_up_the_next_for_ever(
        self, shop, monkeypatch
    ):
        conversation = quiet_conversation(shop)
        first, second = send_text(conversation, "One"), send_text(conversation, "Two")

        def broken(message):
            raise AttributeError("a bug")

        with monkeypatch.context() as patch:
            patch.setattr(outbound, "line_messages_for", broken)
            failed = deliver(first)

        assert failed.delivery_state == DeliveryState.FAILED
        assert failed.delivery_error == "The message could not be sent: AttributeError: a bug"
        assert deliver(second).delivery_state == DeliveryState.DELIVERED

    def test_other_conversations_do_not_wait(self, shop):
        send_text(ConversationFactory(messaging_account=shop.account), "Still pending")

        assert deliver(send_text(quiet_conversation(shop), "Hello")).delivery_state == DeliveryState.DELIVERED


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
class TestThroughTheWorker:
    """message_send queues the delivery after commit; the real worker delivers it."""

    def delivered(self, message: Message, timeout: float = 20.0) -> Message:
        return wait_for(
            lambda: Message.objects.filter(pk=message.pk, delivery_state=DeliveryState.DELIVERED).first(),
            timeout=timeout,
            message=f"message {message.uuid} to be delivered by the worker",
        )

    def test_an_answer_to_a_message_just_received_is_a_reply(self, line_shop_online, celery_worker):
        shop = line_shop_online
        result = shop.act(type="text", text="Do you ship to Osaka?")
        assert result["delivery"]["status"] == 200
        inbound = wait_for(
            lambda: Message.objects.filter(external_id=result["message_ids"][0]).first(),
            message="the worker to process the customer's message",
        )

        answer = self.delivered(send_text(inbound.conversation, "Yes, in two days."))

        assert answer.delivery_method == "reply"
        (sent,) = shop.sent()
        assert (sent["method"], sent["reply_token"]) == ("reply", result["reply_tokens"][0])
        assert shop.quota_used() == 0

    def test_a_server_error_is_retried_with_backoff_then_delivered(self, shop, celery_worker):
        shop.control.fault_add("/v2/bot/message/push", status=500)
        log_start = len(celery_worker.log())

        answer = self.delivered(send_text(quiet_conversation(shop)), timeout=15)

        assert answer.delivery_attempts == 2
        assert [s["retry_key"] for s in shop.sent()] == [str(answer.uuid)]
        log = celery_worker.log()[log_start:]
        assert "line_message_deliver[" in log and "retry: Retry in 2s" in log

    def test_the_customer_gets_a_conversation_s_messages_in_the_order_they_were_written(
        self, shop, celery_worker
    ):
        # The first push fails once (retried 2 s later); without ordering the other worker process
        # would deliver the second message meanwhile.
        shop.control.fault_add("/v2/bot/message/push", status=500)
        conversation = quiet_conversation(shop)
        messages = [
            send_text(conversation, text) for text in ("Here is your invoice.", "Anything else?", "Bye")
        ]

        for message in messages:
            self.delivered(message, timeout=20)

        assert [s["message"]["text"] for s in shop.sent()] == [
            "Here is your invoice.",
            "Anything else?",
            "Bye",
        ]

    def test_a_failed_message_sent_again_is_delivered(self, shop, celery_worker):
        failed = MessageFactory(
            conversation=quiet_conversation(shop), failed=True, text="Sorry for the wait."
        )

        message_retry(message=failed)

        answer = self.delivered(failed)
        (sent,) = shop.sent()
        assert (sent["method"], sent["retry_key"]) == ("push", str(answer.uuid))
        assert sent["message"] == {"type": "text", "text": "Sorry for the wait."}
