"""The LINE stand-in behaves like the LINE Platform, as seen through the real line-bot-sdk over HTTP.

No database: the stand-in is a plain HTTP server and these tests only talk to it (and to a stdlib
webhook receiver) on loopback.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import urllib3
from django.conf import settings
from linebot.v3 import SignatureValidator, WebhookParser
from linebot.v3.messaging import (
    ApiClient,
    Configuration,
    MarkMessagesAsReadByTokenRequest,
    MessagingApi,
    PushMessageRequest,
    ReplyMessageRequest,
    ShowLoadingAnimationRequest,
    TextMessage,
)
from linebot.v3.messaging.exceptions import (
    ApiException,
    NotFoundException,
    ServiceException,
    UnauthorizedException,
)
from linebot.v3.webhooks import (
    FollowEvent,
    JoinEvent,
    LeaveEvent,
    MemberJoinedEvent,
    MemberLeftEvent,
    MessageEvent,
    PostbackEvent,
    UnfollowEvent,
    UnsendEvent,
)

from channels_line.openapi import (
    OpenAPIUnavailable,
    openapi_dir_available,
    validate_messaging_request,
    validate_webhook_body,
)
from channels_line.sdk_validation import sdk_webhook_body_problems
from channels_line.standin import StandinControl, StandinControlError, StandinServer
from channels_line.standin.protocol import StandinRequest
from channels_line.standin.server import _is_loopback
from tests.channels_line.standin_fixtures import (
    SDK_TIMEOUT,
    LineApis,
    LineChannel,
    WebhookReceiver,
    control,
    line_apis,
    line_channel,
    raw_call,
    standin,
    webhook_receiver,
)
from tests.conftest import wait_for

# Imported fixtures are used by name; listing them keeps linters from calling the imports unused.
__all__ = ["control", "line_apis", "line_channel", "standin", "webhook_receiver"]

BASE_DIR = Path(__file__).resolve().parents[2]
# For checks of the OpenAPI path itself (its helpers, its exact messages); the rest of the stand-in's
# validation also runs without the folder, on line-bot-sdk's models (test_sdk_validation.py).
needs_openapi = pytest.mark.skipif(
    not openapi_dir_available(),
    reason=(
        "checks the OpenAPI path itself, and LINE's OpenAPI descriptions are not in LINE_OPENAPI_DIR "
        f"({settings.LINE_OPENAPI_DIR}); the line-bot-sdk fallback is tested in test_sdk_validation.py"
    ),
)


def text_push(user_id: str, text: str = "Your order has shipped") -> PushMessageRequest:
    return PushMessageRequest(to=user_id, messages=[TextMessage(text=text)])


def error_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def customer_says(control: StandinControl, channel: LineChannel, text: str = "Hello") -> dict[str, Any]:
    return control.act(channel.channel_id, {"type": "text", "user_id": channel.user_id, "text": text})


# --- push, retry key and quota -------------------------------------------------------------------------


def test_a_push_with_a_retry_key_is_sent_once_and_the_same_key_again_answers_409(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    retry_key = str(uuid.uuid4())
    first = line_apis.messaging.push_message_with_http_info(
        text_push(line_channel.user_id), x_line_retry_key=retry_key, _request_timeout=SDK_TIMEOUT
    )
    assert first.status_code == 200
    [sent_message] = first.data.sent_messages

    with pytest.raises(ApiException) as raised:
        line_apis.messaging.push_message(
            text_push(line_channel.user_id), x_line_retry_key=retry_key, _request_timeout=SDK_TIMEOUT
        )

    # The SDK has no subclass for 409: it raises the plain ApiException.
    assert type(raised.value) is ApiException
    assert raised.value.status == 409
    assert raised.value.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    assert error_body(raised.value) == {
        "message": "The retry key is already accepted",
        "sentMessages": [{"id": sent_message.id, "quoteToken": sent_message.quote_token}],
    }
    sent = control.sent(line_channel.channel_id, chat_id=line_channel.user_id)
    assert [(s["method"], s["retry_key"], s["message"]["text"]) for s in sent] == [
        ("push", retry_key, "Your order has shipped")
    ]
    assert line_apis.messaging.get_message_quota_consumption(_request_timeout=SDK_TIMEOUT).total_usage == 1


def test_pushes_count_down_the_monthly_quota_until_line_answers_429(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    control.channel_register(channel_id=line_channel.channel_id, monthly_quota=2)
    quota = line_apis.messaging.get_message_quota(_request_timeout=SDK_TIMEOUT)
    assert (quota.type, quota.value) == ("limited", 2)

    for text in ("one", "two"):
        line_apis.messaging.push_message(text_push(line_channel.user_id, text), _request_timeout=SDK_TIMEOUT)
    assert line_apis.messaging.get_message_quota_consumption(_request_timeout=SDK_TIMEOUT).total_usage == 2

    with pytest.raises(ApiException) as raised:
        line_apis.messaging.push_message(
            text_push(line_channel.user_id, "three"), _request_timeout=SDK_TIMEOUT
        )
    assert raised.value.status == 429
    assert error_body(raised.value) == {"message": "You have reached your monthly limit."}
    assert [s["message"]["text"] for s in control.sent(line_channel.channel_id)] == ["one", "two"]


# --- reply tokens --------------------------------------------------------------------------------------


def test_a_reply_token_answers_once_without_using_the_quota_and_is_then_invalid(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    [reply_token] = customer_says(control, line_channel)["reply_tokens"]
    reply = ReplyMessageRequest(reply_token=reply_token, messages=[TextMessage(text="Hi, how can we help?")])

    answer = line_apis.messaging.reply_message(reply, _request_timeout=SDK_TIMEOUT)
    assert len(answer.sent_messages) == 1
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.reply_message(reply, _request_timeout=SDK_TIMEOUT)

    assert raised.value.status == 400
    assert error_body(raised.value) == {"message": "Invalid reply token"}
    sent = control.sent(line_channel.channel_id, chat_id=line_channel.user_id)
    assert [(s["method"], s["reply_token"]) for s in sent] == [("reply", reply_token)]
    assert line_apis.messaging.get_message_quota_consumption(_request_timeout=SDK_TIMEOUT).total_usage == 0


def test_a_reply_token_expires_sixty_seconds_after_the_event(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    [fresh] = customer_says(control, line_channel, "first")["reply_tokens"]
    [stale] = customer_says(control, line_channel, "second")["reply_tokens"]

    control.advance_clock(59)
    line_apis.messaging.reply_message(
        ReplyMessageRequest(reply_token=fresh, messages=[TextMessage(text="in time")]),
        _request_timeout=SDK_TIMEOUT,
    )
    control.advance_clock(2)
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.reply_message(
            ReplyMessageRequest(reply_token=stale, messages=[TextMessage(text="too late")]),
            _request_timeout=SDK_TIMEOUT,
        )

    assert raised.value.status == 400
    assert error_body(raised.value)["message"] == "Invalid reply token"
    assert [s["message"]["text"] for s in control.sent(line_channel.channel_id)] == ["in time"]


def test_the_reply_token_lifetime_can_be_shortened_for_a_test(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    control.settings(reply_token_ttl_seconds=5)
    [reply_token] = customer_says(control, line_channel)["reply_tokens"]

    control.advance_clock(6)
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.reply_message(
            ReplyMessageRequest(reply_token=reply_token, messages=[TextMessage(text="late")]),
            _request_timeout=SDK_TIMEOUT,
        )

    assert error_body(raised.value) == {"message": "Invalid reply token"}


# --- profile, bot, loading, mark as read --------------------------------------------------------------


def test_a_profile_answers_for_a_friend_and_404_for_an_unknown_user(
    line_apis: LineApis, line_channel: LineChannel
):
    profile = line_apis.messaging.get_profile(line_channel.user_id, _request_timeout=SDK_TIMEOUT)
    assert (profile.user_id, profile.display_name, profile.language) == (
        line_channel.user_id,
        "Aiko Tanaka",
        "ja",
    )

    with pytest.raises(NotFoundException) as raised:
        line_apis.messaging.get_profile("U" + "0" * 32, _request_timeout=SDK_TIMEOUT)
    assert error_body(raised.value) == {"message": "Not found"}


def test_a_user_who_blocked_the_account_has_no_profile(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    control.act(line_channel.channel_id, {"type": "unfollow", "user_id": line_channel.user_id})

    with pytest.raises(NotFoundException):
        line_apis.messaging.get_profile(line_channel.user_id, _request_timeout=SDK_TIMEOUT)


def test_bot_info_describes_the_channel_account(line_apis: LineApis, line_channel: LineChannel):
    info = line_apis.messaging.get_bot_info(_request_timeout=SDK_TIMEOUT)

    assert (info.user_id, info.display_name, info.chat_mode) == (
        line_channel.bot_user_id,
        "Test Shop",
        "chat",
    )


def test_loading_animation_and_mark_as_read_are_recorded_for_the_chat(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    [event] = customer_says(control, line_channel)["events"]

    line_apis.messaging.show_loading_animation(
        ShowLoadingAnimationRequest(chat_id=line_channel.user_id, loading_seconds=10),
        _request_timeout=SDK_TIMEOUT,
    )
    line_apis.messaging.mark_messages_as_read_by_token(
        MarkMessagesAsReadByTokenRequest(mark_as_read_token=event["message"]["markAsReadToken"]),
        _request_timeout=SDK_TIMEOUT,
    )

    loading = control.loading_calls(line_channel.channel_id)
    assert [(call["chat_id"], call["loading_seconds"]) for call in loading] == [(line_channel.user_id, 10)]
    marks = control.read_marks(line_channel.channel_id)
    assert [(mark["chat_id"], mark["message_id"]) for mark in marks] == [
        (line_channel.user_id, event["message"]["id"])
    ]
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.mark_messages_as_read_by_token(
            MarkMessagesAsReadByTokenRequest(mark_as_read_token="not-a-token"), _request_timeout=SDK_TIMEOUT
        )
    assert raised.value.status == 400


def test_a_loading_time_that_is_not_a_multiple_of_five_is_refused(
    line_apis: LineApis, line_channel: LineChannel
):
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.show_loading_animation(
            ShowLoadingAnimationRequest(chat_id=line_channel.user_id, loading_seconds=7),
            _request_timeout=SDK_TIMEOUT,
        )

    assert raised.value.status == 400
    assert error_body(raised.value)["details"][0]["property"] == "loadingSeconds"


# --- content (api-data.line.me) -----------------------------------------------------------------------


def test_video_content_answers_202_until_transcoded_then_200_with_the_bytes(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256))
    result = control.act(
        line_channel.channel_id,
        {
            "type": "video",
            "user_id": line_channel.user_id,
            "content_base64": base64.b64encode(video).decode(),
            "ready_after": 30,
        },
    )
    [message_id] = result["message_ids"]

    not_ready = line_apis.blob.get_message_content_with_http_info(message_id, _request_timeout=SDK_TIMEOUT)
    assert not_ready.status_code == 202
    # The SDK trap PRODUCT.md names: on 202 the plain call returns None instead of bytes.
    assert line_apis.blob.get_message_content(message_id, _request_timeout=SDK_TIMEOUT) is None
    status = line_apis.blob.get_message_content_transcoding_by_message_id(
        message_id, _request_timeout=SDK_TIMEOUT
    )
    assert status.status == "processing"

    control.advance_clock(31)
    ready = line_apis.blob.get_message_content_with_http_info(message_id, _request_timeout=SDK_TIMEOUT)
    assert ready.status_code == 200
    assert bytes(ready.data) == video
    assert ready.headers["Content-Type"] == "video/mp4"
    status = line_apis.blob.get_message_content_transcoding_by_message_id(
        message_id, _request_timeout=SDK_TIMEOUT
    )
    assert status.status == "succeeded"


def test_a_file_uploaded_as_multipart_is_served_with_its_name_size_and_content_type(
    standin: StandinServer, line_apis: LineApis, line_channel: LineChannel
):
    data = b"%PDF-1.4 invoice"
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="action"\r\n\r\n'
            f"{json.dumps({'type': 'file', 'user_id': line_channel.user_id})}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="invoice.pdf"\r\n'
            f"Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(  # noqa: S310 - loopback http URL of the stand-in
        f"{standin.base_url}/_standin/channels/{line_channel.channel_id}/actions",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=SDK_TIMEOUT) as response:
        [event] = json.loads(response.read())["events"]

    assert (event["message"]["fileName"], event["message"]["fileSize"]) == ("invoice.pdf", len(data))
    content = line_apis.blob.get_message_content_with_http_info(
        event["message"]["id"], _request_timeout=SDK_TIMEOUT
    )
    assert bytes(content.data) == data
    assert content.headers["Content-Type"] == "application/pdf"


# --- validation -----------------------------------------------------------------------------------------


AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."


def test_a_request_without_a_valid_channel_access_token_answers_401(
    standin: StandinServer, line_channel: LineChannel
):
    configuration = Configuration(host=standin.base_url, access_token="not-" + line_channel.access_token)
    with ApiClient(configuration) as api_client, pytest.raises(UnauthorizedException) as raised:
        MessagingApi(api_client).get_bot_info(_request_timeout=SDK_TIMEOUT)

    assert raised.value.status == 401
    assert error_body(raised.value) == {"message": AUTH_FAILED}


@needs_openapi
def test_a_request_that_breaks_messaging_api_yml_is_answered_400_listing_the_problems(
    standin: StandinServer, line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    status, body = raw_call(
        standin,
        "POST",
        "/v2/bot/message/push",
        token=line_channel.access_token,
        body={
            "to": line_channel.user_id,
            "messages": [{"type": "image", "originalContentUrl": "https://x/a.jpg"}],
        },
    )
    assert status == 400
    assert body["message"] == "The request body has 1 error(s)"
    assert body["details"] == [{"message": "Must be specified", "property": "messages[0].previewImageUrl"}]

    with pytest.raises(ApiException) as raised:
        line_apis.messaging.push_message(
            text_push(line_channel.user_id), x_line_retry_key="not-a-uuid", _request_timeout=SDK_TIMEOUT
        )
    assert raised.value.status == 400
    assert error_body(raised.value)["message"] == "The value for the 'X-Line-Retry-Key' header is invalid"
    assert control.sent(line_channel.channel_id) == []


def test_line_limits_beyond_the_spec_are_enforced(
    standin: StandinServer, line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.push_message(
            text_push(line_channel.user_id, "x" * 5001), _request_timeout=SDK_TIMEOUT
        )
    assert raised.value.status == 400
    assert {"message": "Length must be between 0 and 5000", "property": "messages[0].text"} in error_body(
        raised.value
    )["details"]

    items = [
        {"type": "action", "action": {"type": "message", "label": str(n), "text": str(n)}} for n in range(14)
    ]
    status, body = raw_call(
        standin,
        "POST",
        "/v2/bot/message/push",
        token=line_channel.access_token,
        body={
            "to": line_channel.user_id,
            "messages": [{"type": "text", "text": "Rate us", "quickReply": {"items": items}}],
        },
    )
    assert status == 400
    assert body["details"] == [
        {"message": "Size must be between 0 and 13", "property": "messages[0].quickReply.items"}
    ]
    assert control.sent(line_channel.channel_id) == []


@needs_openapi
def test_the_openapi_helpers_report_what_breaks_the_spec():
    user = "U" + "a" * 32
    sticker_event = {
        "type": "message",
        "mode": "active",
        "timestamp": 1700000000000,
        "source": {"type": "user", "userId": user},
        "webhookEventId": "01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "deliveryContext": {"isRedelivery": False},
        "replyToken": "x",
        "message": {
            "type": "sticker",
            "id": "1",
            "quoteToken": "q",
            "packageId": "446",
            "stickerId": "1988",
            "stickerResourceType": "STATIC",
        },
    }
    assert validate_webhook_body({"destination": user, "events": [sticker_event]}) == []

    sticker_event["message"]["stickerResourceType"] = "HOLOGRAM"
    [problem] = validate_webhook_body({"destination": user, "events": [sticker_event]})
    assert problem.startswith("events[0].message.stickerResourceType: 'HOLOGRAM' is not one of")
    [problem] = validate_webhook_body(
        {"destination": user, "events": [{**sticker_event, "type": "reaction"}]}
    )
    assert problem.startswith("events[0].type: 'reaction' is not one of")

    headers = {"Authorization": "Bearer t", "Content-Type": "application/json"}
    valid = json.dumps({"chatId": user, "loadingSeconds": 20}).encode()
    assert validate_messaging_request("POST", "/v2/bot/chat/loading/start", {}, headers, valid) == []
    too_long = json.dumps({"chatId": user, "loadingSeconds": 90}).encode()
    assert validate_messaging_request("POST", "/v2/bot/chat/loading/start", {}, headers, too_long) == [
        "loadingSeconds: 90 is greater than the maximum of 60"
    ]


def test_without_the_openapi_folder_the_stand_in_validates_with_the_sdk_models_and_warns_once(
    settings, tmp_path, caplog
):
    settings.LINE_OPENAPI_DIR = tmp_path / "no-line-openapi"

    with caplog.at_level(logging.WARNING, logger="channels_line.standin"):
        server = StandinServer(port=0).start()
    try:
        control = StandinControl(server.base_url)
        channel = control.channel_register()
        user = control.user_create(channel["channel_id"])
        status, body = raw_call(
            server,
            "POST",
            "/v2/bot/message/push",
            token=channel["channel_access_token"],
            body={"to": user["user_id"], "messages": [{"type": "text", "text": "still works"}]},
        )
        bad_status, bad_body = raw_call(
            server,
            "POST",
            "/v2/bot/message/push",
            token=channel["channel_access_token"],
            body={"to": user["user_id"], "messages": [{"type": "sticker", "packageId": "446"}]},
        )
        health = control.health()
    finally:
        server.stop()

    assert status == 200
    assert len(body["sentMessages"]) == 1
    assert (bad_status, bad_body["details"]) == (
        400,
        [{"message": "Must be specified", "property": "messages[0].stickerId"}],
    )
    assert (server.validates, server.validation, health["validation"]) == (
        True,
        "line-bot-sdk",
        "line-bot-sdk",
    )
    warnings = [record for record in caplog.records if "OpenAPI" in record.getMessage()]
    assert len(warnings) == 1
    assert str(tmp_path / "no-line-openapi") in warnings[0].getMessage()
    assert not openapi_dir_available()
    with pytest.raises(OpenAPIUnavailable):
        validate_webhook_body({"destination": "U", "events": []})


# --- faults ----------------------------------------------------------------------------------------------


def test_injected_429_and_500_answer_the_matching_requests_then_line_works_again(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    control.fault_add("/v2/bot/message/push", status=429)
    control.fault_add(r"^/v2/bot/profile/U[0-9a-f]{32}$", regex=True, status=500, times=2)

    with pytest.raises(ApiException) as rate_limited:
        line_apis.messaging.push_message(text_push(line_channel.user_id), _request_timeout=SDK_TIMEOUT)
    line_apis.messaging.push_message(text_push(line_channel.user_id), _request_timeout=SDK_TIMEOUT)
    for _ in range(2):
        with pytest.raises(ServiceException) as server_error:
            line_apis.messaging.get_profile(line_channel.user_id, _request_timeout=SDK_TIMEOUT)
        assert server_error.value.status == 500
    profile = line_apis.messaging.get_profile(line_channel.user_id, _request_timeout=SDK_TIMEOUT)

    assert rate_limited.value.status == 429
    assert (
        error_body(rate_limited.value)["message"] == "The API rate limit has been exceeded. Try again later."
    )
    assert len(control.sent(line_channel.channel_id)) == 1
    assert profile.user_id == line_channel.user_id
    assert control.faults() == []


def test_a_hang_makes_the_sdk_timeout_fire_and_the_push_still_lands_once(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    # Without the fault the same push answers well within the timeout.
    line_apis.messaging.push_message(text_push(line_channel.user_id, "before"), _request_timeout=0.5)
    control.fault_add("/v2/bot/message/push", delay_seconds=2.0)
    retry_key = str(uuid.uuid4())

    with pytest.raises(urllib3.exceptions.ReadTimeoutError):  # the client gave up before the answer
        line_apis.messaging.push_message(
            text_push(line_channel.user_id), x_line_retry_key=retry_key, _request_timeout=0.5
        )

    # LINE may still accept a request whose answer never arrived: the retry key keeps it single.
    wait_for(
        lambda: len(control.sent(line_channel.channel_id)) == 2, timeout=5, message="the hung push to land"
    )
    with pytest.raises(ApiException) as raised:
        line_apis.messaging.push_message(
            text_push(line_channel.user_id), x_line_retry_key=retry_key, _request_timeout=SDK_TIMEOUT
        )
    assert raised.value.status == 409
    assert [s["retry_key"] for s in control.sent(line_channel.channel_id)] == [None, retry_key]


def test_an_unknown_path_answers_404_in_lines_shape(standin: StandinServer, line_channel: LineChannel):
    status, body = raw_call(standin, "GET", "/v2/bot/no-such-thing", token=line_channel.access_token)

    assert (status, body) == (404, {"message": "Not found"})


# --- webhooks ----------------------------------------------------------------------------------------------


@pytest.fixture
def webhook_channel(control: StandinControl, line_channel: LineChannel, webhook_receiver: WebhookReceiver):
    control.channel_register(channel_id=line_channel.channel_id, webhook_url=webhook_receiver.url)
    return line_channel


def test_a_customer_message_reaches_the_webhook_signed_with_the_channel_secret(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    result = customer_says(control, webhook_channel, "Where is my parcel?")

    [received] = webhook_receiver.wait_for(1)
    assert received.headers["content-type"] == "application/json; charset=utf-8"
    assert received.headers["user-agent"] == "LineBotWebhook/2.0"
    signature = received.headers["x-line-signature"]
    assert SignatureValidator(webhook_channel.channel_secret).validate(received.raw_body.decode(), signature)
    assert not SignatureValidator("0" * 32).validate(received.raw_body.decode(), signature)
    assert received.json() == result["body"]
    assert result["delivery"]["status"] == 200
    assert result["delivery"]["latency_ms"] >= 0

    [event] = WebhookParser(webhook_channel.channel_secret).parse(received.raw_body.decode(), signature)
    assert isinstance(event, MessageEvent)
    assert (event.source.user_id, event.message.text) == (webhook_channel.user_id, "Where is my parcel?")
    assert received.json()["destination"] == webhook_channel.bot_user_id


@needs_openapi
def test_a_webhook_body_the_stand_in_sends_is_valid_against_webhook_yml(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    customer_says(control, webhook_channel)

    [received] = webhook_receiver.wait_for(1)
    assert validate_webhook_body(received.json()) == []


def test_a_redelivered_event_keeps_its_webhook_event_id_and_says_it_is_a_redelivery(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    [event_id] = customer_says(control, webhook_channel)["webhook_event_ids"]

    control.redeliver(webhook_channel.channel_id, event_id)

    first, again = (received.json()["events"][0] for received in webhook_receiver.wait_for(2))
    assert again["webhookEventId"] == first["webhookEventId"] == event_id
    assert (first["deliveryContext"], again["deliveryContext"]) == (
        {"isRedelivery": False},
        {"isRedelivery": True},
    )
    assert again["timestamp"] == first["timestamp"]


def test_the_console_verify_request_is_a_signed_body_without_events(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    control.verify(webhook_channel.channel_id)

    [received] = webhook_receiver.wait_for(1)
    assert received.json() == {"destination": webhook_channel.bot_user_id, "events": []}
    assert SignatureValidator(webhook_channel.channel_secret).validate(
        received.raw_body.decode(), received.headers["x-line-signature"]
    )


def test_several_actions_go_out_in_one_webhook_body(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    user = webhook_channel.user_id
    control.act(
        webhook_channel.channel_id,
        {"type": "text", "user_id": user, "text": "one"},
        {"type": "sticker", "user_id": user, "packageId": "446", "stickerId": "1988"},
    )

    [received] = webhook_receiver.wait_for(1)
    assert [event["message"]["type"] for event in received.json()["events"]] == ["text", "sticker"]


def test_a_webhook_that_answers_an_error_is_reported_to_the_caller(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    webhook_receiver.status = 500

    result = customer_says(control, webhook_channel)

    assert result["delivery"]["status"] == 500
    assert control.deliveries(webhook_channel.channel_id)[-1]["status"] == 500


GROUP_ID = "C" + "1" * 32
ROOM_ID = "R" + "2" * 32
PNG_BYTES = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
ACTIONS = {
    "text_with_emoji": (
        {
            "type": "text",
            "text": "$ hi",
            "emojis": [{"index": 0, "length": 1, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}],
        },
        MessageEvent,
    ),
    "sticker": ({"type": "sticker", "package_id": "446", "sticker_id": "1988"}, MessageEvent),
    "image": ({"type": "image", "content_base64": PNG_BYTES}, MessageEvent),
    "image_external": (
        {
            "type": "image",
            "external": {
                "originalContentUrl": "https://example.com/a.jpg",
                "previewImageUrl": "https://example.com/p.jpg",
            },
        },
        MessageEvent,
    ),
    "video": ({"type": "video", "content_base64": PNG_BYTES, "duration": 5000}, MessageEvent),
    "audio": ({"type": "audio", "content_base64": PNG_BYTES}, MessageEvent),
    "file": ({"type": "file", "content_base64": PNG_BYTES, "file_name": "a.png"}, MessageEvent),
    "location": (
        {"type": "location", "title": "Shop", "address": "1-1 Ginza", "latitude": 35.67, "longitude": 139.76},
        MessageEvent,
    ),
    "postback": (
        {"type": "postback", "data": "action=rate&score=5", "params": {"datetime": "2025-01-31T10:00"}},
        PostbackEvent,
    ),
    "follow": ({"type": "follow"}, FollowEvent),
    "unfollow": ({"type": "unfollow"}, UnfollowEvent),
    "unsend": ({"type": "unsend", "message_id": "400000000000000001"}, UnsendEvent),
    "group_text": ({"type": "text", "text": "hi all", "group_id": GROUP_ID}, MessageEvent),
    "room_text": ({"type": "text", "text": "hi room", "room_id": ROOM_ID}, MessageEvent),
    "standby_text": ({"type": "text", "text": "hi", "mode": "standby"}, MessageEvent),
    "join": ({"type": "join", "group_id": GROUP_ID}, JoinEvent),
    "leave": ({"type": "leave", "room_id": ROOM_ID}, LeaveEvent),
    "member_joined": ({"type": "memberJoined", "group_id": GROUP_ID}, MemberJoinedEvent),
    "member_left": ({"type": "member_left", "group_id": GROUP_ID}, MemberLeftEvent),
}
# Where LINE gives a reply token (PRODUCT.md; none in standby mode).
REPLYABLE = {
    "text_with_emoji",
    "sticker",
    "image",
    "image_external",
    "video",
    "audio",
    "file",
    "location",
    "postback",
    "follow",
    "group_text",
    "room_text",
    "join",
    "member_joined",
}


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_each_customer_action_becomes_the_event_line_sends_and_the_sdk_parses(
    name: str, control: StandinControl, line_channel: LineChannel
):
    action, event_class = ACTIONS[name]
    if name not in ("join", "leave"):
        action = {**action, "user_id": line_channel.user_id}

    result = control.act(line_channel.channel_id, action, deliver=False)

    [event] = result["body"]["events"]
    raw = json.dumps(result["body"])
    [parsed] = WebhookParser(line_channel.channel_secret).parse(raw, _sign(line_channel.channel_secret, raw))
    assert type(parsed) is event_class
    assert ("replyToken" in event) == (name in REPLYABLE)
    assert len(event["webhookEventId"]) == 26
    assert event["mode"] == ("standby" if name == "standby_text" else "active")
    assert sdk_webhook_body_problems(result["body"]) == []
    if openapi_dir_available():
        assert validate_webhook_body(result["body"]) == []


def test_a_group_message_names_the_group_and_the_user_in_its_source(
    control: StandinControl, line_channel: LineChannel, line_apis: LineApis
):
    result = control.act(
        line_channel.channel_id,
        {"type": "text", "user_id": line_channel.user_id, "text": "hi", "group_id": GROUP_ID},
        deliver=False,
    )

    [event] = result["events"]
    assert event["source"] == {"type": "group", "groupId": GROUP_ID, "userId": line_channel.user_id}
    # A group message has no markAsReadToken: mark-as-read is for one-on-one chats.
    assert "markAsReadToken" not in event["message"]
    line_apis.messaging.push_message(text_push(GROUP_ID, "to the group"), _request_timeout=SDK_TIMEOUT)
    assert [s["chat_id"] for s in control.sent(line_channel.channel_id)] == [GROUP_ID]


def test_an_action_for_an_unknown_user_is_refused_and_sends_nothing(
    control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
):
    with pytest.raises(StandinControlError) as raised:
        control.act(webhook_channel.channel_id, {"type": "text", "user_id": "U" + "f" * 32, "text": "hi"})

    assert raised.value.status == 400
    assert webhook_receiver.received == []


# --- the stand-in itself ------------------------------------------------------------------------------


def test_reset_forgets_channels_and_what_the_business_sent(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    line_apis.messaging.push_message(text_push(line_channel.user_id), _request_timeout=SDK_TIMEOUT)

    control.reset()

    assert control.channels() == []
    with pytest.raises(UnauthorizedException):
        line_apis.messaging.push_message(text_push(line_channel.user_id), _request_timeout=SDK_TIMEOUT)


def test_a_reset_that_keeps_channels_keeps_their_credentials_only(
    line_apis: LineApis, line_channel: LineChannel, control: StandinControl
):
    line_apis.messaging.push_message(text_push(line_channel.user_id), _request_timeout=SDK_TIMEOUT)

    control.reset(keep_channels=True)

    assert line_apis.messaging.get_bot_info(_request_timeout=SDK_TIMEOUT).user_id == line_channel.bot_user_id
    assert control.sent(line_channel.channel_id) == []
    assert control.users(line_channel.channel_id) == []


def test_the_phone_page_is_one_self_contained_html_document(standin: StandinServer):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(standin.base_url + "/", timeout=SDK_TIMEOUT) as response:
        content_type = response.headers["Content-Type"]
        page = response.read().decode()

    assert content_type == "text/html; charset=utf-8"
    assert "/_standin/channels" in page
    for external in ('src="http', "src='http", 'href="http', "@import", "//cdn"):
        assert external not in page


def test_the_control_api_answers_only_on_loopback(standin: StandinServer):
    def from_host(host: str) -> int:
        headers = Message()
        request = StandinRequest("GET", "/_standin/health", {}, headers, b"", host)
        return standin.handle(request).status

    assert from_host("192.0.2.10") == 403
    assert from_host("127.0.0.1") == 200
    assert from_host("::1") == 200
    assert _is_loopback("::ffff:127.0.0.1")


def test_the_management_command_serves_until_interrupted():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "manage.py", "line_standin", "--port", str(port)],
        cwd=BASE_DIR,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        control = StandinControl(f"http://127.0.0.1:{port}", timeout=1)

        def healthy() -> bool:
            try:
                return control.health()["ok"]
            except OSError:
                return False

        wait_for(healthy, timeout=30, message="manage.py line_standin to answer")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert f"LINE stand-in on http://127.0.0.1:{port}" in output
    checked_against = "LINE's OpenAPI files" if openapi_dir_available() else "line-bot-sdk's models"
    assert f"validating against {checked_against}" in output


def _sign(secret: str, raw: str) -> str:
    from channels_line.standin import signature

    return signature(secret, raw.encode())


# --- the state file (manage.py line_standin --state-file) ---------------------------------------------


def test_with_a_state_file_channels_users_chats_and_content_outlive_a_restart(tmp_path: Path):
    state_path = tmp_path / "standin-state.json"
    with StandinServer(host="127.0.0.1", port=0, state_file=state_path) as first:
        control = StandinControl(first.base_url)
        channel = control.channel_register(bot_display_name="Kept Shop")
        user = control.user_create(channel["channel_id"], display_name="Aiko Tanaka", language="ja")
        said = control.act(
            channel["channel_id"],
            {"type": "text", "user_id": user["user_id"], "text": "Still there?"},
            {"type": "image", "user_id": user["user_id"]},
            deliver=False,
        )
        configuration = Configuration(host=first.base_url, access_token=channel["channel_access_token"])
        with ApiClient(configuration) as api_client:
            MessagingApi(api_client).push_message(
                text_push(user["user_id"], "Yes, we are"), _request_timeout=SDK_TIMEOUT
            )
        before = control.timeline(channel["channel_id"], chat_id=user["user_id"])
    assert [entry["side"] for entry in before] == ["customer", "customer", "business"]

    with StandinServer(host="127.0.0.1", port=0, state_file=state_path) as second:
        control = StandinControl(second.base_url)
        assert [u["display_name"] for u in control.users(channel["channel_id"])] == ["Aiko Tanaka"]
        assert control.timeline(channel["channel_id"], chat_id=user["user_id"]) == before
        image_id = said["message_ids"][1]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"{second.base_url}/_standin/channels/{channel['channel_id']}/content/{image_id}"
        with opener.open(url, timeout=SDK_TIMEOUT) as response:
            assert response.read().startswith(b"\x89PNG")
        # The same credentials still work, and the phone page's polling (?after=<seq>) sees what is new.
        configuration = Configuration(host=second.base_url, access_token=channel["channel_access_token"])
        with ApiClient(configuration) as api_client:
            bot = MessagingApi(api_client).get_bot_info(_request_timeout=SDK_TIMEOUT)
        assert bot.display_name == "Kept Shop"
        control.act(
            channel["channel_id"],
            {"type": "text", "user_id": user["user_id"], "text": "Great"},
            deliver=False,
        )
        fresh = control.timeline(channel["channel_id"], chat_id=user["user_id"], after=before[-1]["seq"])
        assert [entry["event"]["message"]["text"] for entry in fresh] == ["Great"]

    assert state_path.stat().st_mode & 0o777 == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["standin-state.json"]


def test_a_reset_is_kept_in_the_state_file_too(tmp_path: Path):
    state_path = tmp_path / "standin-state.json"
    with StandinServer(host="127.0.0.1", port=0, state_file=state_path) as first:
        StandinControl(first.base_url).channel_register(bot_display_name="Forgotten Shop")
        StandinControl(first.base_url).reset()
    with StandinServer(host="127.0.0.1", port=0, state_file=state_path) as second:
        assert StandinControl(second.base_url).channels() == []


def test_without_a_state_file_a_restarted_stand_in_knows_nothing(tmp_path: Path):
    with StandinServer(host="127.0.0.1", port=0) as first:
        StandinControl(first.base_url).channel_register(bot_display_name="Memory Shop")
    with StandinServer(host="127.0.0.1", port=0) as second:
        assert StandinControl(second.base_url).channels() == []


def test_the_state_file_is_replaced_whole_so_a_failed_write_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from channels_line.standin import persistence

    state_path = tmp_path / "standin-state.json"
    with StandinServer(host="127.0.0.1", port=0, state_file=state_path) as server:
        control = StandinControl(server.base_url)
        channel = control.channel_register(bot_display_name="Whole Shop")
        kept = state_path.read_bytes()

        # A disk that fails mid-write cannot be had here on demand: os.fsync is made to fail instead.
        def failing_fsync(descriptor: int) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(persistence.os, "fsync", failing_fsync)
        control.user_create(channel["channel_id"], display_name="Not kept")

    assert state_path.read_bytes() == kept
    assert [path.name for path in tmp_path.iterdir()] == ["standin-state.json"]


def test_the_management_command_keeps_its_channels_in_the_state_file_across_restarts(tmp_path: Path):
    state_path = tmp_path / "standin-state.json"

    def run_once(action) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "line_standin",
                "--port",
                str(port),
                "--state-file",
                str(state_path),
            ],
            cwd=BASE_DIR,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            control = StandinControl(f"http://127.0.0.1:{port}", timeout=5)

            def healthy() -> bool:
                try:
                    return control.health()["ok"]
                except OSError:
                    return False

            wait_for(healthy, timeout=30, message="manage.py line_standin to answer")
            action(control)
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, output
        return output

    registered: dict[str, Any] = {}

    def register(control: StandinControl) -> None:
        registered.update(control.channel_register(bot_display_name="Restarted Shop"))
        control.user_create(registered["channel_id"], display_name="Somchai")

    def look(control: StandinControl) -> None:
        registered["after"] = control.channels()
        registered["users"] = control.users(registered["channel_id"])

    run_once(register)
    output = run_once(look)

    assert f"kept in {state_path} (1 channel(s) restored)" in output
    assert [channel["channel_id"] for channel in registered["after"]] == [registered["channel_id"]]
    assert [user["display_name"] for user in registered["users"]] == ["Somchai"]


def test_a_channel_registered_without_credentials_gets_a_secret_shaped_as_line_issues_them(
    control: StandinControl,
):
    from channels_line.services.accounts import channel_secret_validator

    channel = control.channel_register(bot_display_name="Made-up Shop")

    channel_secret_validator(channel["channel_secret"])  # 32 lowercase hexadecimal characters
    assert channel["channel_id"].isdigit()


def test_a_state_file_that_cannot_be_read_stops_the_start_with_a_message_naming_it(tmp_path: Path):
    from channels_line.standin.persistence import StateFileUnreadable

    state_path = tmp_path / "standin-state.json"
    state_path.write_text('{"version": 1, "channels": [{"channel_id": "1"')

    with pytest.raises(StateFileUnreadable, match=f"{state_path} cannot be read .*delete it to start afresh"):
        StandinServer(host="127.0.0.1", port=0, state_file=state_path)
