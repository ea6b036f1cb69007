"""Without LINE's OpenAPI files (a fresh clone has no LINE_OPENAPI_DIR), line-bot-sdk's generated models
check what the LINE stand-in receives and sends, and catch what the files would.

No database: the validators are plain functions, and the stand-in is a plain HTTP server on loopback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from linebot.v3.messaging import PushMessageRequest, TextMessage

from channels_line.openapi import (
    SpecProblem,
    messaging_request_problems,
    openapi_dir_available,
    webhook_body_problems,
)
from channels_line.sdk_validation import sdk_messaging_request_problems, sdk_webhook_body_problems
from channels_line.standin import StandinControl, StandinControlError, StandinServer
from tests.channels_line.payloads import load_payload
from tests.channels_line.standin_fixtures import (
    SDK_TIMEOUT,
    LineApis,
    LineChannel,
    WebhookReceiver,
    control,
    line_apis,
    line_channel,
    raw_call,
    webhook_receiver,
)

# Imported fixtures are used by name; listing them keeps linters from calling the imports unused.
__all__ = ["control", "line_apis", "line_channel", "webhook_receiver"]

USER = "U" + "a" * 32
JSON = {"Content-Type": "application/json", "Authorization": "Bearer token"}
PUSH = "/v2/bot/message/push"


def push_problems(body: Any) -> list[SpecProblem]:
    return sdk_messaging_request_problems("POST", PUSH, JSON, json.dumps(body).encode())


def push_of(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"to": USER, "messages": list(messages)}


# --- requests the stand-in receives --------------------------------------------------------------------


class TestMessagingRequests:
    def test_a_good_push_passes(self):
        body = push_of(
            {
                "type": "text",
                "text": "Your order has shipped",
                "quickReply": {
                    "items": [{"type": "action", "action": {"type": "message", "label": "OK", "text": "OK"}}]
                },
            },
            {"type": "sticker", "packageId": "446", "stickerId": "1988"},
        )

        assert push_problems(body) == []

    def test_a_text_message_without_text_is_named_by_its_property(self):
        assert push_problems(push_of({"type": "text"})) == [
            SpecProblem("messages[0].text", "Must be specified")
        ]

    def test_each_message_is_checked_as_the_type_it_names(self):
        image = {"type": "image", "originalContentUrl": "https://example.com/a.jpg"}

        assert push_problems(push_of({"type": "text", "text": "hi"}, image)) == [
            SpecProblem("messages[1].previewImageUrl", "Must be specified")
        ]

    def test_a_message_type_line_does_not_know_is_a_problem(self):
        [problem] = push_problems(push_of({"type": "hologram"}))

        assert problem.property == "messages[0].type"
        assert problem.message.startswith("'hologram' is not one of ['audio', ")

    def test_nested_objects_are_checked_down_to_their_enums(self):
        flex = {
            "type": "flex",
            "altText": "Receipt",
            "contents": {"type": "bubble", "body": {"type": "box", "layout": "diagonal", "contents": []}},
        }

        [problem] = push_problems(push_of(flex))

        assert problem.property == "messages[0].contents.body.layout"

    def test_types_and_sizes_are_checked(self):
        problems = push_problems({"to": 42, "messages": [], "notificationDisabled": "yes"})

        assert [problem.property for problem in problems] == ["to", "messages", "notificationDisabled"]
        assert problems[1].message == "Size must be between 1 and 5"

    def test_the_other_operations_the_stand_in_serves_are_checked_too(self):
        loading = json.dumps({"chatId": USER, "loadingSeconds": 90}).encode()
        mark_as_read = json.dumps({"chat": {}}).encode()

        assert [
            problem.property
            for problem in sdk_messaging_request_problems("POST", "/v2/bot/chat/loading/start", JSON, loading)
        ] == ["loadingSeconds"]
        assert sdk_messaging_request_problems("POST", "/v2/bot/message/markAsRead", JSON, mark_as_read) == [
            SpecProblem("chat.userId", "Must be specified")
        ]

    def test_a_body_that_is_not_json_is_a_problem(self):
        [problem] = sdk_messaging_request_problems("POST", PUSH, JSON, b"{not json")

        assert problem.message.startswith("The request body could not be read")

    def test_a_body_for_an_operation_without_a_model_is_a_problem_not_a_pass(self):
        body = json.dumps({"messages": []}).encode()

        assert sdk_messaging_request_problems("POST", "/v2/bot/message/someday", JSON, body) != []
        assert sdk_messaging_request_problems("GET", "/v2/bot/info", JSON, b"") == []


# --- webhook bodies the stand-in sends -----------------------------------------------------------------


class TestWebhookBodies:
    def test_a_stored_payload_passes(self):
        assert sdk_webhook_body_problems(load_payload("message_text__user")) == []

    def test_a_text_message_without_its_quote_token_is_a_problem(self):
        body = load_payload("message_text__user")
        del body["events"][0]["message"]["quoteToken"]

        assert sdk_webhook_body_problems(body) == [
            SpecProblem("events[0].message.quoteToken", "Must be specified")
        ]

    def test_an_event_type_the_sdk_does_not_know_is_a_problem(self):
        [problem] = sdk_webhook_body_problems(load_payload("unknown__future_type"))

        assert problem.property == "events[0].type"

    def test_the_destination_must_be_a_bot_user_id(self):
        body = load_payload("verify__empty")
        body["destination"] = "C" + "0" * 32

        [problem] = sdk_webhook_body_problems(body)

        assert problem.property == "destination"

    def test_a_subtype_named_directly_still_checks_its_type(self):
        """`joined.members` is a list of `UserSource`, whose generated `type` would take any string."""
        body = load_payload("memberJoined__group")
        body["events"][0]["joined"]["members"][0]["type"] = "group"

        assert [problem.property for problem in sdk_webhook_body_problems(body)] == [
            "events[0].joined.members[0].type"
        ]


# --- the SDK models flag what LINE's OpenAPI files flag ----------------------------------------------------

needs_openapi = pytest.mark.skipif(
    not openapi_dir_available(),
    reason=(
        "compares the line-bot-sdk fallback with LINE's OpenAPI descriptions, which are not in "
        f"LINE_OPENAPI_DIR ({settings.LINE_OPENAPI_DIR})"
    ),
)

BAD_PUSHES = {
    "text_without_text": push_of({"type": "text"}),
    "image_without_preview": push_of({"type": "image", "originalContentUrl": "https://example.com/a.jpg"}),
    "unknown_type": push_of({"type": "hologram"}),
    "sticker_with_a_number": push_of({"type": "sticker", "packageId": 446, "stickerId": "1988"}),
    "no_messages": push_of(),
    "six_messages": push_of(*[{"type": "text", "text": "hi"}] * 6),
    "action_of_unknown_type": push_of(
        {
            "type": "text",
            "text": "hi",
            "quickReply": {"items": [{"type": "action", "action": {"type": "teleport"}}]},
        }
    ),
}


def _webhook_body_broken(change: str) -> dict[str, Any]:
    body = copy.deepcopy(load_payload("message_text__user"))
    event = body["events"][0]
    if change == "no_webhook_event_id":
        del event["webhookEventId"]
    elif change == "mode_unknown":
        event["mode"] = "sleeping"
    elif change == "source_unknown":
        event["source"]["type"] = "channel"
    elif change == "timestamp_text":
        event["timestamp"] = "yesterday"
    elif change == "redelivery_missing":
        event["deliveryContext"] = {}
    return body


BAD_WEBHOOK_CHANGES = [
    "no_webhook_event_id",
    "mode_unknown",
    "source_unknown",
    "timestamp_text",
    "redelivery_missing",
]


@needs_openapi
@pytest.mark.parametrize("name", sorted(BAD_PUSHES))
def test_the_sdk_models_flag_the_same_push_properties_as_messaging_api_yml(name):
    raw = json.dumps(BAD_PUSHES[name]).encode()

    from_spec = {problem.property for problem in messaging_request_problems("POST", PUSH, {}, JSON, raw)}
    from_sdk = {problem.property for problem in sdk_messaging_request_problems("POST", PUSH, JSON, raw)}

    assert from_spec
    assert from_sdk == from_spec


@needs_openapi
@pytest.mark.parametrize("change", BAD_WEBHOOK_CHANGES)
def test_the_sdk_models_flag_the_same_webhook_properties_as_webhook_yml(change):
    body = _webhook_body_broken(change)

    from_spec = {problem.property for problem in webhook_body_problems(body)}
    from_sdk = {problem.property for problem in sdk_webhook_body_problems(body)}

    assert from_spec
    assert from_sdk == from_spec


# --- the stand-in without the OpenAPI folder ---------------------------------------------------------------


@pytest.fixture
def standin(tmp_path) -> Iterator[StandinServer]:
    """The stand-in as it runs on a fresh clone: no OpenAPI folder, so line-bot-sdk's models check."""
    server = StandinServer(host="127.0.0.1", port=0, openapi_dir=tmp_path / "no-line-openapi").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webhook_channel(control: StandinControl, line_channel: LineChannel, webhook_receiver: WebhookReceiver):
    control.channel_register(channel_id=line_channel.channel_id, webhook_url=webhook_receiver.url)
    return line_channel


class TestStandinWithoutTheOpenAPIFolder:
    def test_it_says_it_validates_with_the_sdk_models(self, standin: StandinServer, control: StandinControl):
        assert (standin.validates, standin.validation) == (True, "line-bot-sdk")
        assert control.health()["validation"] == "line-bot-sdk"

    def test_a_push_the_sdk_builds_is_accepted(
        self, line_apis: LineApis, line_channel: LineChannel, control: StandinControl
    ):
        push = PushMessageRequest(
            to=line_channel.user_id, messages=[TextMessage(text="Your order has shipped")]
        )

        line_apis.messaging.push_message(push, _request_timeout=SDK_TIMEOUT)

        assert [sent["message"]["text"] for sent in control.sent(line_channel.channel_id)] == [
            "Your order has shipped"
        ]

    def test_a_push_that_breaks_the_sdk_models_is_answered_400_in_lines_shape_and_not_sent(
        self, standin: StandinServer, line_channel: LineChannel, control: StandinControl
    ):
        status, body = raw_call(
            standin,
            "POST",
            PUSH,
            token=line_channel.access_token,
            body={
                "to": line_channel.user_id,
                "messages": [{"type": "image", "originalContentUrl": "https://example.com/a.jpg"}],
            },
        )

        assert (status, body) == (
            400,
            {
                "message": "The request body has 1 error(s)",
                "details": [{"message": "Must be specified", "property": "messages[0].previewImageUrl"}],
            },
        )
        assert control.sent(line_channel.channel_id) == []

    def test_a_webhook_body_that_breaks_the_sdk_models_is_refused_and_not_sent(
        self, control: StandinControl, webhook_channel: LineChannel, webhook_receiver: WebhookReceiver
    ):
        text = {"type": "text", "user_id": webhook_channel.user_id, "text": "$ thanks"}
        emoji = {"index": 0, "length": 1, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
        without_emoji_id = {key: value for key, value in emoji.items() if key != "emojiId"}

        with pytest.raises(StandinControlError) as raised:
            control.act(webhook_channel.channel_id, {**text, "emojis": [without_emoji_id]})
        control.act(webhook_channel.channel_id, {**text, "emojis": [emoji]})

        assert raised.value.status == 400
        assert (
            raised.value.payload["error"] == "the webhook body does not match line-bot-sdk's webhook models"
        )
        assert raised.value.payload["problems"] == ["events[0].message.emojis[0].emojiId: Must be specified"]
        [received] = webhook_receiver.wait_for(1)
        assert received.json()["events"][0]["message"]["emojis"] == [emoji]
