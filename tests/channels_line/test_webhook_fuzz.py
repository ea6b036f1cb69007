"""The webhook fuzzed with hypothesis: bodies of any form, each sent unsigned and signed.

Whatever the body: a 200, 400 or 413, never a 500, nor a 503 while the database is up; nothing kept
unless the body is signed. A signed body that holds a list of event objects has every one of them
stored once, as signed (a second delivery stores nothing), and processed to an end; a signed body
that holds none is kept as a rejected body.

Mocked, because no worker runs here: the broker (what the intake and processing queue is captured
instead of sent) and LINE (its hosts point at a closed port: profile fetches fail fast, and are
handled). Each example gets an account of its own, so that examples cannot see each other's events.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import sys
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from channels_line.models import EventState, LineWebhookEvent, LineWebhookRejectedBody
from channels_line.services import line_account_create, line_events_process
from tests.channels_line.conftest import new_secret, post_webhook
from tests.channels_line.payloads import load_payload, payload_names, sign

# The production path: requests outside any test transaction, each commit running for real.
pytestmark = pytest.mark.django_db(transaction=True)

# Small enough that a generated body can cross it (413), large enough for 3000 levels of nesting.
MAX_BODY_BYTES = 16 * 1024
# Nesting the webhook may refuse as too deep to read (400, kept as rejected); LINE's events nest
# about six levels, and anything under this must be read.
READABLE_NESTING = 500

# Hypothesis keeps caches (Unicode tables, constants) besides its example database: under VAR_DIR,
# not in a .hypothesis folder in the tree.
set_hypothesis_home_dir(django_settings.VAR_DIR / "hypothesis")
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same examples on every run, on either database
    database=None,  # and no example database
    # No shrinking: it takes minutes per failure, twice in CI. The explicit @example()s are the
    # minimal inputs of the failures found so far; to shrink a new one, run it with Phase.shrink.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the client and settings serve every example alike
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(autouse=True)
def _queued_for_processing_captured(enqueued):
    """What the intake queues for processing is kept in `enqueued` instead of sent."""


@pytest.fixture(autouse=True)
def _downloads_not_queued(monkeypatch):
    """Processing a media message queues its download after the commit: captured, not sent."""
    from channels_line.tasks import line_message_content_fetch

    monkeypatch.setattr(line_message_content_fetch, "delay", lambda *args, **kwargs: None)


@pytest.fixture(autouse=True)
def _offline_with_a_small_body_cap(settings, no_line):
    settings.LINE_WEBHOOK_MAX_BODY_BYTES = MAX_BODY_BYTES


# --- Strategies -----------------------------------------------------------------------------------

# Any code point: NUL, other controls, lone surrogates, non-characters, astral characters.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
ODD_STRINGS = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff",
        "\udc00\ud800",  # a surrogate pair the wrong way round
        "\ud83d\ude00",  # a surrogate pair the right way round, as two code points
        "\U0001f600",
        "\ufeff",
        "\u2028\u2029",
        "\ufffe\uffff",
        "\ufffd",
        "",
        "NaN",
        "null",
        '"',
        "\\",
        "\\u0000",
    ]
)
STRINGS = ANY_TEXT | ODD_STRINGS
NUMBERS = (
    st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 2**64])
    # Huge: up to 4000 digits, under the 4300 that Python reads.
    | st.builds(lambda digits, sign: sign * (10**digits - 1), st.integers(19, 4000), st.sampled_from([1, -1]))
    | st.floats()  # NaN and the infinities included: json.dumps writes them as NaN, Infinity
)
SCALARS = st.none() | st.booleans() | NUMBERS | STRINGS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(STRINGS, children, max_size=4),
    max_leaves=12,
)

EVENT_TYPES = [
    "message",
    "messageEdited",
    "unsend",
    "follow",
    "unfollow",
    "postback",
    "join",
    "leave",
    "memberJoined",
    "memberLeft",
    "beacon",
    "accountLink",
    "videoPlayComplete",
    "reaction",
]
MESSAGE_TYPES = ["text", "image", "video", "audio", "file", "location", "sticker", "imagemap"]
# A few fixed IDs, so that events of one body, or of a body and its redelivery, share them.
EVENT_IDS = (
    st.sampled_from(
        [
            "01KKNV8CWSBD1CAATZ17HBGVGC",
            "01KKNV8CWSBD1CAATZ17HBGVGD",
            "0",
            " ",
            "\x00",
            "\ud800",
            "\udfff",
            "\ufffd",
            "E" * 64 + "1",  # two IDs alike in their first 64 characters
            "E" * 64 + "2",
        ]
    )
    | st.text(max_size=30)
    | st.text(min_size=65, max_size=200)  # overlong
    | JSON_VALUES  # not a string at all
)
USER_IDS = st.sampled_from(["U39975341f5d17c903d34bd5a3897311a", "U0"]) | STRINGS | JSON_VALUES
LONG_TEXT = st.text(st.characters(exclude_categories=()), min_size=101, max_size=400)


def _merged(known: dict, extra: dict) -> dict:
    return {**extra, **known}


SOURCES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["user", "group", "room"]) | JSON_VALUES,
        "userId": USER_IDS | LONG_TEXT,
        "groupId": USER_IDS | LONG_TEXT,
        "roomId": USER_IDS,
    },
)
MESSAGES = st.builds(
    _merged,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(MESSAGE_TYPES) | JSON_VALUES,
            "id": st.sampled_from(["598728876859726844", "1"]) | STRINGS | LONG_TEXT | JSON_VALUES,
            "text": STRINGS | JSON_VALUES,
            "quotedMessageId": STRINGS | JSON_VALUES,
            "fileName": STRINGS | LONG_TEXT | JSON_VALUES,
            "fileSize": NUMBERS | STRINGS,
            "duration": NUMBERS | STRINGS,
            "contentProvider": st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(["line", "external"]) | JSON_VALUES,
                    "originalContentUrl": STRINGS | JSON_VALUES,
                },
            )
            | JSON_VALUES,
            "packageId": STRINGS | JSON_VALUES,
            "stickerId": STRINGS | JSON_VALUES,
            "latitude": NUMBERS | STRINGS,
            "longitude": NUMBERS | STRINGS,
            "emojis": JSON_VALUES,
            "mention": JSON_VALUES,
        },
    ),
    st.dictionaries(STRINGS, JSON_VALUES, max_size=2),
)
EVENTS = st.builds(
    _merged,
    st.fixed_dictionaries(
        {},
        optional={
            "webhookEventId": EVENT_IDS,
            "type": st.sampled_from(EVENT_TYPES) | JSON_VALUES,
            "timestamp": st.integers() | st.sampled_from([1773480981401, 10**20, -1]) | JSON_VALUES,
            "mode": st.sampled_from(["active", "standby"]) | JSON_VALUES,
            "source": SOURCES | JSON_VALUES,
            "replyToken": STRINGS | LONG_TEXT | JSON_VALUES,
            "deliveryContext": st.fixed_dictionaries({"isRedelivery": JSON_VALUES}) | JSON_VALUES,
            "message": MESSAGES | JSON_VALUES,
            "unsend": st.fixed_dictionaries({"messageId": STRINGS | JSON_VALUES}) | JSON_VALUES,
            "postback": st.fixed_dictionaries({"data": STRINGS | JSON_VALUES}) | JSON_VALUES,
        },
    ),
    st.dictionaries(STRINGS, JSON_VALUES, max_size=2),
)
DOCUMENTS = st.one_of(
    JSON_VALUES,  # any JSON at all: an array, a number, an object without events...
    st.builds(
        _merged,
        st.fixed_dictionaries(
            {"events": st.lists(EVENTS, max_size=4) | JSON_VALUES},
            optional={"destination": STRINGS | JSON_VALUES},
        ),
        st.dictionaries(STRINGS, JSON_VALUES, max_size=2),
    ),
    st.builds(
        lambda events: {"destination": "U0", "events": events}, st.lists(EVENTS, min_size=1, max_size=5)
    ),
)


def _escaped(document: Any) -> bytes:
    # ensure_ascii: lone surrogates and NUL written as \u escapes; NaN and Infinity as such.
    return json.dumps(document).encode()


def _as_line_writes_it(document: Any) -> bytes:
    try:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return _escaped(document)


ENCODINGS = {
    "escaped": _escaped,
    "as LINE writes it": _as_line_writes_it,
    # Lone surrogates as the three bytes each would be: not UTF-8.
    "surrogatepass": lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    "utf-16": lambda d: json.dumps(d).encode("utf-16"),  # json.loads reads it; LINE never sends it
    "indented": lambda d: json.dumps(d, indent=2).encode(),
}
ENCODING_NAMES = st.sampled_from(sorted(ENCODINGS))
UTF8_ENCODING_NAMES = st.sampled_from(["as LINE writes it", "escaped", "indented"])

# A header value as a server hands it over: any Latin-1 text. Never the right signature.
WRONG_SIGNATURES = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda digest: base64.b64encode(digest).decode()),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), min_size=1, max_size=60),
)


def _nested(depth: int, opener: str, closer: str, leaf: str) -> str:
    return opener * depth + leaf + closer * depth


@st.composite
def deep_bodies(draw) -> bytes:
    """Raw JSON text nested up to 3000 levels, in the body, in the events list or in an event;
    closed or not. Also numbers over Python's 4300-digit limit."""
    depth = draw(
        st.integers(min_value=1, max_value=3000)
        | st.integers(min_value=25, max_value=40)  # around the depth where events are stored as text
        | st.integers(min_value=850, max_value=1100)  # around Python's recursion limit
    )
    shape = draw(st.sampled_from(["[", "{", "mixed"]))
    if shape == "[":
        deep = _nested(depth, "[", "]", draw(st.sampled_from(["", "1", '"x"', "NaN", '"\\u0000"'])))
    elif shape == "{":
        deep = _nested(depth, '{"a":', "}", draw(st.sampled_from(["1", "null", "[]", '"\\ud800"'])))
    else:
        deep = _nested(depth, '{"a":[', "]}", "{}")
    if draw(st.booleans()):
        deep = deep[: draw(st.integers(min_value=0, max_value=len(deep)))]  # cut short
    place = draw(st.sampled_from(["body", "events", "event", "event without id", "big number"]))
    if place == "body":
        return deep.encode()
    if place == "events":
        events = deep
    elif place == "event":
        event_id = draw(st.sampled_from(["01KKNV8CWSBD1CAATZ17HBGVGC", "E2"]))
        events = '{"webhookEventId":"' + event_id + '","type":"message","deep":' + deep + "}"
    elif place == "event without id":
        events = '{"type":"message","deep":' + deep + "}"
    else:  # an integer of more digits than Python reads (4300)
        digits = "9" * draw(st.integers(min_value=4200, max_value=4400))
        events = '{"webhookEventId":"E3","timestamp":' + digits + "}"
    return ('{"destination":"U0","events":[' + events + "]}").encode()


def _slots(root: list) -> list[tuple[Any, Any]]:
    """Every (container, key) of a document held as `root[0]`, root included, breadth first."""
    slots: list[tuple[Any, Any]] = [(root, 0)]
    position = 0
    while position < len(slots):
        container, key = slots[position]
        value = container[key]
        if isinstance(value, dict):
            slots += [(value, k) for k in value]
        elif isinstance(value, list):
            slots += [(value, i) for i in range(len(value))]
        position += 1
    return slots


MUTATIONS = [
    "replace",
    "delete",
    "rename key",
    "wrap in a list",
    "object to list",
    "null",
    "overlong",
    "repeat an event",
    "pad past the cap",
]


def _mutate(draw, payload: dict) -> Any:
    """Apply a few mutations at random places of a real payload; returns the document."""
    root = [payload]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        mutation = draw(st.sampled_from(MUTATIONS))
        slots = _slots(root)
        container, key = draw(st.sampled_from(slots))
        value = container[key]
        if mutation == "replace":
            container[key] = draw(JSON_VALUES)
        elif mutation == "delete" and container is not root:
            del container[key]
        elif mutation == "rename key" and isinstance(container, dict):
            container[draw(STRINGS)] = container.pop(key)
        elif mutation == "wrap in a list":
            container[key] = [value]
        elif mutation == "object to list" and isinstance(value, dict):
            container[key] = list(value.values())
        elif mutation == "null":
            container[key] = None
        elif mutation == "overlong":
            container[key] = draw(LONG_TEXT | st.sampled_from(["9" * 70, "U" + "0" * 200]))
        elif mutation == "repeat an event":
            events = root[0].get("events") if isinstance(root[0], dict) else None
            if isinstance(events, list) and events:
                events.append(copy.deepcopy(draw(st.sampled_from(events))))
        elif mutation == "pad past the cap":
            container[key] = "x" * draw(st.integers(MAX_BODY_BYTES - 2000, MAX_BODY_BYTES + 2000))
    return root[0]


# --- What must hold -------------------------------------------------------------------------------


@contextlib.contextmanager
def _deep_recursion():
    """Room for this test's own reading of 3000 levels (never while the webhook runs)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _nesting(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _events_in(body: bytes) -> tuple[list | None, int]:
    """The events a signed body holds, whatever each is (None: it is not UTF-8 JSON text holding
    a list under "events"), and its nesting."""
    with _deep_recursion():
        try:
            # UTF-8 only (a byte order mark allowed): not UTF-16, nor surrogates encoded as bytes,
            # which json.loads(bytes) would take.
            document = json.loads(body.decode("utf-8-sig"))
        except ValueError:
            return None, 0
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        return None, _nesting(document)
    return events, _nesting(document)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (PostgreSQL's jsonb writes 1e+16 as 10000000000000000), NaN
    equal to NaN."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if a != a or b != b:  # NaN
            return a != a and b != b
        return Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _identity(event: Any) -> tuple[str, str]:
    """What makes two events the same event: their webhookEventId when it is a string the column
    holds as it is, else their whole content but for the delivery context (which a redelivery
    changes)."""
    if not isinstance(event, dict):
        return "content", json.dumps({"notAnObject": event}, sort_keys=True)
    event_id = event.get("webhookEventId")
    if isinstance(event_id, str) and event_id and _fits_the_column(event_id):
        return "id", event_id
    content = {key: value for key, value in event.items() if key != "deliveryContext"}
    with _deep_recursion():
        return "content", json.dumps(content, sort_keys=True)


def _fits_the_column(event_id: str) -> bool:
    return len(event_id) <= 64 and not any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in event_id)


def _kept(account) -> tuple[int, int]:
    return (
        LineWebhookEvent.objects.filter(messaging_account=account).count(),
        LineWebhookRejectedBody.objects.filter(messaging_account=account).count(),
    )


def _new_account():
    return line_account_create(
        name=f"Fuzz {secrets.token_hex(6)}",
        channel_id=str(secrets.randbelow(10**9) + 10**9),
        channel_secret=new_secret(),
        channel_access_token=secrets.token_urlsafe(48),
    )


def check_delivery(client, enqueued: list, body: bytes, wrong_signature: str) -> None:
    """Send `body` unsigned, wrongly signed, signed, and signed again; check every answer and what
    was kept; process what was stored."""
    enqueued.clear()
    account = _new_account()
    note(f"body ({len(body)} bytes): {body[:2000]!r}")
    too_large = len(body) > MAX_BODY_BYTES
    assume(wrong_signature != sign(body, account.line.channel_secret))

    for signature in ("", wrong_signature):
        response = post_webhook(client, account, body, signature=signature)
        assert response.status_code == (413 if too_large else 400), response.content
        assert _kept(account) == (0, 0), "an unsigned body was kept"
        assert enqueued == []

    response = post_webhook(client, account, body)
    note(f"signed: {response.status_code} {response.content[:500]!r}")
    hypothesis_event(f"signed: {response.status_code}")
    assert response.status_code in (200, 400, 413), response.content
    if too_large:
        assert response.status_code == 413
        assert _kept(account) == (0, 0)
        return

    events, nesting = _events_in(body)
    if response.status_code == 400:
        assert _kept(account) == (0, 1), "a signed body refused was not kept"
        refused_as_too_deep = "nested too deeply" in response.json()["reason"]
        assert events is None or (refused_as_too_deep and nesting >= READABLE_NESTING), (
            f"signed events refused (nesting {nesting}): {response.json()['reason']}"
        )
        rejected = LineWebhookRejectedBody.objects.get(messaging_account=account)
        with contextlib.suppress(UnicodeDecodeError):
            if "\x00" not in body.decode():
                assert rejected.body == body.decode()
        return

    assert events is not None, "a signed body that is not UTF-8 JSON holding a list of events was accepted"
    check_events_stored(account, events, response.json(), enqueued)

    # The same delivery again: all of it duplicates, nothing stored or queued.
    stored_before = _kept(account)
    queued_before = len(enqueued)
    again = post_webhook(client, account, body)
    assert again.status_code == 200
    assert again.json() == {"status": "ok", "stored": 0, "duplicates": len(events)}
    assert _kept(account) == stored_before
    assert len(enqueued) == queued_before

    check_processing(account)


def check_events_stored(account, events: list[dict], answer: dict, enqueued: list) -> None:
    """Every event of the body is stored once, recoverable exactly as signed, and queued."""
    first_of_each: dict[tuple[str, str], dict] = {}
    for event in events:
        first_of_each.setdefault(_identity(event), event)
    assert answer == {
        "status": "ok",
        "stored": len(first_of_each),
        "duplicates": len(events) - len(first_of_each),
    }, f"events lost or merged: {len(first_of_each)} distinct events in the body"

    rows = list(LineWebhookEvent.objects.filter(messaging_account=account).order_by("id"))
    assert len(rows) == len(first_of_each)
    assert sorted(pk for call in enqueued for pk in call) == [row.pk for row in rows]
    assert all(row.state == EventState.PENDING for row in rows)

    unmatched = list(rows)
    with _deep_recursion():
        for (kind, identity), event in first_of_each.items():
            if kind == "id" and _nesting(event) < READABLE_NESTING:
                matches = [row for row in unmatched if row.webhook_event_id == identity]
                assert matches, f"no row for webhookEventId {identity!r}"
            else:  # no usable ID, or (maybe) too deep to be read: found by its content
                matches = unmatched
            row = next((row for row in matches if _same(_as_signed(row), event)), None)
            assert row is not None, f"event not kept as signed: {event!r}"
            unmatched.remove(row)
            if row.raw_as_signed:
                assert row.raw_as_signed.isascii()


def _as_signed(row: LineWebhookEvent) -> Any:
    return json.loads(row.raw_as_signed) if row.raw_as_signed else row.raw


def check_processing(account) -> None:
    """Processing the stored events raises nothing and takes each to an end (or leaves it pending
    for a database error, which a retry can pass)."""
    pks = list(LineWebhookEvent.objects.filter(messaging_account=account).values_list("pk", flat=True))
    line_events_process(event_pks=pks)
    for event in LineWebhookEvent.objects.filter(pk__in=pks):
        note(f"processed: {event.event_type!r} {event.state} {event.last_error[:300]!r}")
        hypothesis_event(f"event {event.state}: {event.last_error.partition(':')[0]}")
        if event.state == EventState.FAILED:
            assert event.last_error
        elif event.state == EventState.PENDING:
            assert event.last_error.startswith(("OperationalError", "InterfaceError")), event.last_error
        else:
            assert event.state == EventState.PROCESSED


# --- Tests ----------------------------------------------------------------------------------------

WRONG = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # a signature of the right form, never the right one


@settings(FUZZ, max_examples=100)
@given(
    body=st.binary(max_size=600) | st.binary(max_size=200).map(lambda tail: b'{"events":[{' + tail),
    wrong_signature=WRONG_SIGNATURES,
)
# A body that is not UTF-8 with a header that is not ASCII: hmac.compare_digest raises TypeError.
@example(body=b"\x80", wrong_signature="\x80")
def test_arbitrary_bytes_are_answered_and_kept_only_when_signed(client, enqueued, body, wrong_signature):
    check_delivery(client, enqueued, body, wrong_signature)


@settings(FUZZ, max_examples=150)
@given(document=DOCUMENTS, encoding=ENCODING_NAMES, wrong_signature=WRONG_SIGNATURES)
# Two webhookEventIds that differ only in what the database refuses: both stored as "\ufffd".
@example(
    document={"destination": "U0", "events": [{"webhookEventId": "\x00"}, {"webhookEventId": "\ud800"}]},
    encoding="escaped",
    wrong_signature=WRONG,
)
# Two webhookEventIds alike in their first 64 characters, the column's length.
@example(
    document={
        "destination": "U0",
        "events": [{"webhookEventId": "E" * 64 + "1"}, {"webhookEventId": "E" * 64 + "2"}],
    },
    encoding="escaped",
    wrong_signature=WRONG,
)
# Two events without an ID that differ only in what the database refuses: one digest.
@example(
    document={
        "destination": "U0",
        "events": [{"type": "message", "x": "\x00"}, {"type": "message", "x": "\ufffd"}],
    },
    encoding="escaped",
    wrong_signature=WRONG,
)
# Not UTF-8, yet read: json.loads(bytes) takes UTF-16 and UTF-32, and surrogates encoded as bytes.
@example(document={"destination": "U0", "events": []}, encoding="utf-16", wrong_signature=WRONG)
@example(
    document={"destination": "U0", "events": [{"webhookEventId": "E1", "x": "\ud800\udc00"}]},
    encoding="surrogatepass",
    wrong_signature=WRONG,
)
def test_json_of_any_shape_is_answered_and_its_signed_events_stored_as_signed_and_processed(
    client, enqueued, document, encoding, wrong_signature
):
    check_delivery(client, enqueued, ENCODINGS[encoding](document), wrong_signature)


@pytest.mark.parametrize("name", payload_names())  # each of them: a draw would favour a few
@settings(FUZZ, max_examples=4)
@given(
    encoding=UTF8_ENCODING_NAMES,  # what the content does; the encodings: the test above
    wrong_signature=WRONG_SIGNATURES,
    data=st.data(),
)
def test_mutated_line_payloads_are_answered_and_their_signed_events_stored_and_processed(
    client, enqueued, name, encoding, wrong_signature, data
):
    document = _mutate(data.draw, load_payload(name, fresh=True))
    check_delivery(client, enqueued, ENCODINGS[encoding](document), wrong_signature)


@settings(FUZZ, max_examples=100)
@given(body=deep_bodies(), wrong_signature=WRONG_SIGNATURES)
def test_deeply_nested_bodies_are_answered_and_kept_when_signed(client, enqueued, body, wrong_signature):
    check_delivery(client, enqueued, body, wrong_signature)
