"""The stored LINE webhook payloads are what LINE sends, and the helpers that send them work.

Each payload is checked independently: against LINE's own OpenAPI description (`webhook.yml`, when
LINE_OPENAPI_DIR has it), against line-bot-sdk's webhook models (generated from that description, so the
check also runs on a clone without the folder), and by parsing it with the official SDK, the way the
webhook reads it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from linebot.v3 import SignatureValidator
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.models.events import UnknownEvent
from linebot.v3.webhook import WebhookParser
from linebot.v3.webhooks import (
    AccountLinkEvent,
    AudioMessageContent,
    BeaconEvent,
    FileMessageContent,
    FollowEvent,
    ImageMessageContent,
    JoinEvent,
    LeaveEvent,
    LocationMessageContent,
    MemberJoinedEvent,
    MemberLeftEvent,
    MessageEditedEvent,
    MessageEvent,
    PostbackEvent,
    StickerMessageContent,
    TextMessageContent,
    UnfollowEvent,
    UnsendEvent,
    VideoMessageContent,
    VideoPlayCompleteEvent,
)

from tests.channels_line.payloads import (
    NOT_IN_SDK_MODELS,
    NOT_IN_SPEC,
    PAYLOADS_DIR,
    body_bytes,
    load_payload,
    payload_names,
    sign,
    validate_against_sdk_webhook_models,
    validate_against_webhook_spec,
    webhook_spec_path,
)

CHANNEL_SECRET = "8c5a0f1e2b3d4c5e6f708192a3b4c5d6"

EVENT_CLASSES = {
    "message": MessageEvent,
    "messageEdited": MessageEditedEvent,
    "unsend": UnsendEvent,
    "follow": FollowEvent,
    "unfollow": UnfollowEvent,
    "postback": PostbackEvent,
    "join": JoinEvent,
    "leave": LeaveEvent,
    "memberJoined": MemberJoinedEvent,
    "memberLeft": MemberLeftEvent,
    "beacon": BeaconEvent,
    "accountLink": AccountLinkEvent,
    "videoPlayComplete": VideoPlayCompleteEvent,
}
MESSAGE_CONTENT_CLASSES = {
    "text": TextMessageContent,
    "image": ImageMessageContent,
    "video": VideoMessageContent,
    "audio": AudioMessageContent,
    "file": FileMessageContent,
    "location": LocationMessageContent,
    "sticker": StickerMessageContent,
}

IN_SPEC = [name for name in payload_names() if name not in NOT_IN_SPEC]
IN_SDK_MODELS = [name for name in payload_names() if name not in NOT_IN_SDK_MODELS]
SINGLE_EVENT = [
    name for name in payload_names() if name not in {"verify__empty", "batch__two_messages_same_user"}
]

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
START_OF_2026_MS = 1_767_225_600_000
START_OF_2027_MS = 1_798_761_600_000


def expected_sdk_classes(name: str) -> list[tuple[type, type | None]]:
    """(event class, message content class) the SDK should produce for each event of a payload."""
    event_kind = name.split("__")[0]
    if event_kind == "verify":
        return []
    if event_kind == "batch":
        return [(MessageEvent, TextMessageContent)] * 2
    if event_kind == "unknown":
        return [(UnknownEvent, None)]
    if event_kind.startswith("message_"):
        return [(MessageEvent, MESSAGE_CONTENT_CLASSES[event_kind.removeprefix("message_")])]
    if event_kind == "messageEdited":
        return [(MessageEditedEvent, TextMessageContent)]
    return [(EVENT_CLASSES[event_kind], None)]


def parse_with_sdk(payload: dict) -> list:
    body = body_bytes(payload)
    return WebhookParser(CHANNEL_SECRET).parse(body.decode("utf-8"), sign(body, CHANNEL_SECRET))


@pytest.fixture
def webhook_spec() -> Path:
    path = webhook_spec_path()
    if path is None:
        pytest.skip(
            f"webhook.yml is not in LINE_OPENAPI_DIR ({settings.LINE_OPENAPI_DIR}): this check is against "
            "LINE's own description; the same payloads are checked against line-bot-sdk's webhook models"
        )
    return path


def test_payloads_cover_every_event_type_the_product_handles():
    event_kinds = {name.split("__")[0].split("_")[0] for name in payload_names()}

    assert set(EVENT_CLASSES) <= event_kinds


@pytest.mark.parametrize("name", IN_SPEC)
def test_payload_is_valid_against_lines_webhook_description(webhook_spec, name):
    assert validate_against_webhook_spec(load_payload(name)) == []


@pytest.mark.parametrize("name", sorted(NOT_IN_SPEC))
def test_payload_outside_the_description_is_rejected_by_the_validator(webhook_spec, name):
    errors = validate_against_webhook_spec(load_payload(name))

    assert len(errors) == 1
    assert errors[0].startswith("events/0: type ")


def test_validator_checks_each_event_against_its_own_type(webhook_spec):
    """webhook.yml's discriminators are enforced: a text message without its required quoteToken fails,
    which checking only the base `Event`/`MessageContent` schemas would let through."""
    payload = load_payload("message_text__user")
    del payload["events"][0]["message"]["quoteToken"]

    assert validate_against_webhook_spec(payload) == ["events/0/message: 'quoteToken' is a required property"]


@pytest.mark.parametrize("name", IN_SDK_MODELS)
def test_payload_is_valid_against_the_sdks_webhook_models(name):
    assert validate_against_sdk_webhook_models(load_payload(name)) == []


@pytest.mark.parametrize("name", sorted(NOT_IN_SDK_MODELS))
def test_payload_outside_the_sdks_webhook_models_is_rejected_by_them(name):
    [problem] = validate_against_sdk_webhook_models(load_payload(name))

    assert problem.startswith("events[0].type: 'reaction' is not one of ")


def test_sdk_models_check_each_event_against_its_own_type():
    """As with webhook.yml: a text message without its required quoteToken fails, which checking only
    the base `Event`/`MessageContent` models would let through."""
    payload = load_payload("message_text__user")
    del payload["events"][0]["message"]["quoteToken"]

    assert validate_against_sdk_webhook_models(payload) == ["events[0].message.quoteToken: Must be specified"]


@pytest.mark.parametrize("name", payload_names())
def test_sdk_parses_payload_into_the_expected_events(name):
    payload = load_payload(name)

    events = parse_with_sdk(payload)

    assert [type(event) for event in events] == [event_class for event_class, _ in expected_sdk_classes(name)]
    for event, raw, (_, content_class) in zip(
        events, payload["events"], expected_sdk_classes(name), strict=True
    ):
        if content_class is not None:
            assert type(event.message) is content_class
        if not isinstance(event, UnknownEvent):
            assert event.webhook_event_id == raw["webhookEventId"]
            assert getattr(event.source, "user_id", None) == raw["source"].get("userId")


@pytest.mark.parametrize("name", payload_names())
def test_payload_ids_look_like_lines(name):
    payload = load_payload(name)

    assert re.fullmatch(r"U[0-9a-f]{32}", payload["destination"])
    for event in payload["events"]:
        assert ULID.fullmatch(event["webhookEventId"])
        assert START_OF_2026_MS <= event["timestamp"] < START_OF_2027_MS
        assert event["mode"] in {"active", "standby"}
        assert isinstance(event["deliveryContext"]["isRedelivery"], bool)
        if "replyToken" in event:
            assert re.fullmatch(r"[0-9a-f]{32}", event["replyToken"])
        source = event["source"]
        assert re.fullmatch(r"U[0-9a-f]{32}", source.get("userId", "U" + "0" * 32))
        assert re.fullmatch(r"C[0-9a-f]{32}", source.get("groupId", "C" + "0" * 32))
        assert re.fullmatch(r"R[0-9a-f]{32}", source.get("roomId", "R" + "0" * 32))
        if "message" in event:
            assert re.fullmatch(r"[0-9]{18}", event["message"]["id"])


def test_references_between_payloads_point_at_earlier_messages():
    original = load_payload("message_text__user")["events"][0]
    group_message = load_payload("message_text__group")["events"][0]
    unsend = load_payload("unsend__user")["events"][0]
    quoted = load_payload("message_text__quoted")["events"][0]
    edited = load_payload("messageEdited__text")["events"][0]

    assert unsend["unsend"]["messageId"] == original["message"]["id"]
    assert quoted["message"]["quotedMessageId"] == original["message"]["id"]
    assert edited["message"]["id"] == group_message["message"]["id"]
    assert edited["message"]["text"] != group_message["message"]["text"]
    assert original["timestamp"] < min(unsend["timestamp"], quoted["timestamp"])
    assert group_message["timestamp"] < edited["timestamp"]


def test_standby_message_has_no_reply_token_and_the_sdk_says_so():
    (event,) = parse_with_sdk(load_payload("message_text__standby_mode"))

    assert event.mode.value == "standby"
    assert event.reply_token is None


def test_redelivered_message_is_marked_as_redelivery():
    (event,) = parse_with_sdk(load_payload("message_text__redelivery"))

    assert event.delivery_context.is_redelivery is True


def test_sdk_loses_the_user_of_an_event_it_cannot_validate():
    """The trap the webhook must guard against by keeping the raw JSON: a message LINE's SDK cannot fit
    into its model becomes an UnknownEvent, and the user ID is gone from it."""
    payload = load_payload("message_text__user")
    del payload["events"][0]["message"]["quoteToken"]

    (event,) = parse_with_sdk(payload)

    assert isinstance(event, UnknownEvent)
    assert getattr(event.source, "user_id", None) is None


class TestLoadPayload:
    def test_fresh_payloads_are_new_events_each_time(self):
        first = load_payload("message_text__user", fresh=True)["events"][0]
        second = load_payload("message_text__user", fresh=True)["events"][0]

        assert first["webhookEventId"] != second["webhookEventId"]
        assert first["message"]["id"] != second["message"]["id"]
        assert first["replyToken"] != second["replyToken"]
        assert abs(first["timestamp"] - time.time() * 1000) < 60_000

    def test_fresh_events_in_one_body_differ_from_each_other(self):
        first, second = load_payload("batch__two_messages_same_user", fresh=True)["events"]

        assert first["webhookEventId"] != second["webhookEventId"]
        assert first["message"]["id"] != second["message"]["id"]
        assert first["timestamp"] < second["timestamp"]

    def test_fresh_payload_is_still_valid_against_the_description(self, webhook_spec):
        assert validate_against_webhook_spec(load_payload("message_sticker__animated", fresh=True)) == []

    def test_fresh_payload_is_still_valid_against_the_sdk_models(self):
        assert (
            validate_against_sdk_webhook_models(load_payload("message_sticker__animated", fresh=True)) == []
        )

    def test_stored_payload_is_the_same_without_fresh(self):
        stored = json.loads((PAYLOADS_DIR / "message_text__user.json").read_text(encoding="utf-8"))

        assert load_payload("message_text__user") == stored

    def test_user_id_replaces_the_source_user_of_every_event(self):
        customer = "U" + "ab" * 16

        events = load_payload("batch__two_messages_same_user", user_id=customer)["events"]

        assert [event["source"]["userId"] for event in events] == [customer, customer]

    def test_user_id_is_not_added_to_sources_without_a_user(self):
        (event,) = load_payload("join__group", user_id="U" + "ab" * 16)["events"]

        assert "userId" not in event["source"]

    def test_overrides_are_merged_into_every_event(self):
        events = load_payload(
            "batch__two_messages_same_user", mode="standby", deliveryContext={"isRedelivery": True}
        )["events"]

        assert [event["mode"] for event in events] == ["standby", "standby"]
        assert [event["deliveryContext"]["isRedelivery"] for event in events] == [True, True]
        assert all("message" in event for event in events)

    def test_changing_a_loaded_payload_does_not_change_the_next_one(self):
        load_payload("message_text__user")["events"][0]["message"]["text"] = "changed"

        assert load_payload("message_text__user")["events"][0]["message"]["text"] != "changed"

    def test_unknown_name_says_which_names_exist(self):
        with pytest.raises(FileNotFoundError, match="message_text__user"):
            load_payload("message_text__nope")


class TestSignature:
    def test_sdk_accepts_the_signature(self):
        body = body_bytes(load_payload("message_text__user"))

        assert SignatureValidator(CHANNEL_SECRET).validate(body.decode("utf-8"), sign(body, CHANNEL_SECRET))

    def test_sdk_rejects_a_tampered_body(self):
        body = body_bytes(load_payload("message_text__user"))
        signature = sign(body, CHANNEL_SECRET)
        tampered = body.replace(b"kettle", b"toaster")

        assert tampered != body
        assert not SignatureValidator(CHANNEL_SECRET).validate(tampered.decode("utf-8"), signature)
        with pytest.raises(InvalidSignatureError):
            WebhookParser(CHANNEL_SECRET).parse(tampered.decode("utf-8"), signature)

    def test_sdk_rejects_a_signature_made_with_another_secret(self):
        body = body_bytes(load_payload("message_text__user"))

        assert not SignatureValidator(CHANNEL_SECRET).validate(
            body.decode("utf-8"), sign(body, "other-secret")
        )

    def test_body_is_compact_utf8_json_as_line_sends_it(self):
        payload = load_payload("message_text__user")

        body = body_bytes(payload)

        assert json.loads(body) == payload
        assert "こんにちは".encode() in body
        assert b'": ' not in body
        assert b'", "' not in body
