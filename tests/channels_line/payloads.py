"""LINE webhook request bodies as LINE sends them, and helpers to send them in tests.

Each file in `payloads/` is a complete request body, `{"destination": "U...", "events": [...]}`, named
`<event>__<variant>.json`, with one event unless the name says otherwise (`verify__empty` has none,
`batch__two_messages_same_user` has two). Every payload except those in `NOT_IN_SPEC` is valid against
LINE's `webhook.yml`, and every one except those in `NOT_IN_SDK_MODELS` against line-bot-sdk's webhook
models (generated from a later webhook.yml, so they know `messageEdited`), which `test_payloads.py`
checks; the second check needs no `LINE_OPENAPI_DIR`.

All fixtures share one bot (`destination`), one customer, one group and one room, so a test can chain
them and they read as one customer's story. References point at other fixtures: `unsend__user` unsends
and `message_text__quoted` quotes the message of `message_text__user`; `messageEdited__text` edits the
message of `message_text__group`. Each referring event is later than the one it refers to.

Where LINE leaves things out, so do the fixtures: no `replyToken` in standby mode, on unsend, unfollow,
leave and memberLeft events; no `quoteToken` on audio, file and location messages; `markAsReadToken` only
on active one-on-one messages; no `userId` in the source of join, leave and member events.

Assumed shape of `messageEdited` (not in the `webhook.yml` this project pins; LINE added it later, and
line-bot-sdk >= 3.25 parses it as `MessageEditedEvent`): the envelope of a message event (`type`,
`webhookEventId`, `deliveryContext`, `timestamp`, `source`, `mode`, optional `replyToken`) with
`type: "messageEdited"` and a `message` object that is a text message content whose `id` is the ID of the
message that was edited (the ID it had in the original `message` event) and whose `text` is the new
text; it carries its own `quoteToken`. LINE currently sends it only from group chats (editing is not
available in one-on-one chats with an official account), and several edits of one message may arrive
out of order: the largest `timestamp` is the latest text.

`unknown__future_type` is a `reaction` event, a type LINE does not send today: the validator must reject
it and the SDK turns it into an `UnknownEvent`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
from functools import cache
from pathlib import Path
from typing import Any

PAYLOADS_DIR = Path(__file__).resolve().parent / "payloads"

NOT_IN_SPEC = {"messageEdited__text", "unknown__future_type"}
NOT_IN_SDK_MODELS = {"unknown__future_type"}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_issued_message_ids: set[str] = set()


def payload_names() -> list[str]:
    """Names of every stored payload (file names without `.json`), sorted."""
    return sorted(path.stem for path in PAYLOADS_DIR.glob("*.json"))


@cache
def _read_payload(name: str) -> dict[str, Any]:
    path = PAYLOADS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No webhook payload {name!r} in {PAYLOADS_DIR}; known: {payload_names()}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_payload(
    name: str, *, fresh: bool = False, user_id: str | None = None, **event_overrides: Any
) -> dict[str, Any]:
    """A deep copy of the stored payload `name`, changed as asked.

    - `fresh=True`: every event gets a new `webhookEventId` (a ULID of now), a current `timestamp`
      (one millisecond apart, in file order), a new `replyToken` where it has one, and a new message
      `id`, `quoteToken` and `markAsReadToken` where it has a message, so the same kind of event can be
      sent again without being taken for a redelivery. References to other messages (`unsend.messageId`,
      `quotedMessageId`) are kept; for `messageEdited`, set `message.id` to the edited message's ID.
    - `user_id`: replaces `source.userId` in every event whose source has one.
    - `event_overrides`: merged into every event (shallow, after the above), e.g. `mode="standby"` or
      `deliveryContext={"isRedelivery": True}`.
    """
    payload = copy.deepcopy(_read_payload(name))
    now_ms = int(time.time() * 1000)
    for position, event in enumerate(payload["events"]):
        if fresh:
            event["timestamp"] = now_ms + position
            event["webhookEventId"] = new_webhook_event_id(event["timestamp"])
            if "replyToken" in event:
                event["replyToken"] = new_reply_token()
            message = event.get("message")
            if isinstance(message, dict):
                message["id"] = new_message_id()
                if "quoteToken" in message:
                    message["quoteToken"] = _token(176)
                if "markAsReadToken" in message:
                    message["markAsReadToken"] = _token(64)
        source = event.get("source")
        if user_id is not None and isinstance(source, dict) and "userId" in source:
            source["userId"] = user_id
        event.update(copy.deepcopy(event_overrides))
    return payload


def new_webhook_event_id(timestamp_ms: int | None = None) -> str:
    """A ULID (26 Crockford base32 characters: 48 bits of milliseconds, 80 random bits), as LINE uses."""
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    value = (timestamp_ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * shift)) & 31] for shift in reversed(range(26)))


def new_message_id() -> str:
    """An 18-digit numeric message ID, never the same twice in this process."""
    while True:
        message_id = str(590_000_000_000_000_000 + secrets.randbelow(10_000_000_000_000_000))
        if message_id not in _issued_message_ids:
            _issued_message_ids.add(message_id)
            return message_id


def new_reply_token() -> str:
    """A reply token as LINE sends it: 32 hexadecimal characters."""
    return secrets.token_hex(16)


def _token(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The request body as LINE sends it: compact JSON, UTF-8, non-ASCII characters unescaped."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, channel_secret: str) -> str:
    """The `x-line-signature` header for `body`: base64 of HMAC-SHA256 keyed with the channel secret."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def webhook_spec_path() -> Path | None:
    """LINE's `webhook.yml` under `settings.LINE_OPENAPI_DIR`, or None when it is not there."""
    from django.conf import settings

    path = Path(settings.LINE_OPENAPI_DIR) / "webhook.yml"
    return path if path.is_file() else None


def validate_against_webhook_spec(payload: dict[str, Any]) -> list[str]:
    """Errors found validating `payload` as the request body of `POST /callback` in `webhook.yml`.

    An empty list means valid. Raises FileNotFoundError when `webhook.yml` is not available.
    """
    from openapi_core.exceptions import OpenAPIError
    from openapi_core.testing import MockRequest

    path = webhook_spec_path()
    if path is None:
        raise FileNotFoundError("webhook.yml not found under settings.LINE_OPENAPI_DIR")
    openapi = _webhook_openapi(str(path))
    request = MockRequest(
        "https://example.com",
        "post",
        "/callback",
        data=body_bytes(payload),
        content_type="application/json",
    )
    try:
        openapi.validate_request(request)
    except OpenAPIError as error:
        return _error_messages(error)
    return []


def validate_against_sdk_webhook_models(payload: dict[str, Any]) -> list[str]:
    """Problems of `payload` against line-bot-sdk's webhook models (`CallbackRequest` and the event
    types it maps), as `property: message` strings ([] = valid). Needs no OpenAPI file."""
    from channels_line.sdk_validation import sdk_webhook_body_problems

    return [str(problem) for problem in sdk_webhook_body_problems(payload)]


def _error_messages(error: BaseException) -> list[str]:
    schema_errors = getattr(error.__cause__, "schema_errors", None) or getattr(error, "schema_errors", None)
    if not schema_errors:
        cause = f": {error.__cause__}" if error.__cause__ else ""
        return [f"{error}{cause}"]
    messages = []
    for schema_error in schema_errors:
        leaves = _leaf_errors(schema_error)
        for leaf in leaves:
            location = "/".join(str(part) for part in leaf.absolute_path) or "(body)"
            messages.append(f"{location}: {_describe(leaf)}")
    return messages


def _describe(error: Any) -> str:
    discriminator = error.schema.get("discriminator") if isinstance(error.schema, dict) else None
    if discriminator and isinstance(error.instance, dict):
        # The validator's own message quotes the whole event and an unresolved $ref; say what is wrong.
        field = discriminator["propertyName"]
        if not error.instance.get(field):
            return f"has no {field!r}"
        known = ", ".join(sorted(discriminator.get("mapping", {})))
        return (
            f"{field} {error.instance.get(field)!r} is not one of the types webhook.yml describes ({known})"
        )
    return error.message


def _leaf_errors(error: Any) -> list[Any]:
    """The innermost errors of a jsonschema error tree: they name the wrong field, not only the event."""
    if not error.context:
        return [error]
    return [leaf for child in error.context for leaf in _leaf_errors(child)]


@cache
def _webhook_openapi(path: str) -> Any:
    import yaml
    from openapi_core import OpenAPI

    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return OpenAPI.from_dict(_with_enforced_discriminators(spec))


def _with_enforced_discriminators(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec, rewritten so that its discriminators are enforced by the validator.

    webhook.yml declares polymorphism the generator-friendly way: a base schema (`Event`, `Source`,
    `MessageContent`, ...) carries a `discriminator` mapping and each subtype is `allOf: [base, ...]`.
    JSON Schema validators (openapi-core's included) only act on a discriminator next to `oneOf`/`anyOf`,
    so as written every event is checked against the bare `Event` schema: a message without `message`,
    or a type LINE never sends, would pass. Here each use of a base schema (other than a subtype's
    `allOf` reference to its parent) points instead to a copy that is `oneOf` the mapped subtypes with the
    same discriminator, so an event is validated against its own subtype and an unmapped type fails.
    """
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    dispatching = {}
    for name, schema in list(schemas.items()):
        discriminator = schema.get("discriminator")
        if discriminator and not any(key in schema for key in ("oneOf", "anyOf", "allOf")):
            dispatch_name = f"{name}ByDiscriminator"
            schemas[dispatch_name] = {
                "oneOf": [{"$ref": ref} for ref in discriminator["mapping"].values()],
                "discriminator": copy.deepcopy(discriminator),
            }
            dispatching[f"#/components/schemas/{name}"] = f"#/components/schemas/{dispatch_name}"

    def redirect(node: Any, *, in_all_of: bool = False) -> None:
        if isinstance(node, dict):
            if not in_all_of and node.get("$ref") in dispatching:
                node["$ref"] = dispatching[node["$ref"]]
            for key, value in node.items():
                if key == "discriminator":
                    continue
                if key == "allOf":
                    for item in value:
                        redirect(item, in_all_of=True)
                else:
                    redirect(value)
        elif isinstance(node, list):
            for item in node:
                redirect(item)

    for name, schema in schemas.items():
        if not name.endswith("ByDiscriminator"):
            redirect(schema)
    redirect(spec["paths"])
    return spec
