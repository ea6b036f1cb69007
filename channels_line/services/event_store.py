"""Storing webhook events: each event once, in one INSERT ... ON CONFLICT DO NOTHING RETURNING.

The unique (account, webhookEventId) constraint is the guarantee that an event is kept once: a
redelivery, or two copies of a delivery arriving at once, insert nothing the second time. Signed
content that the database would refuse (a NUL, a lone surrogate, NaN, nesting deeper than
MAX_DEPTH) is stored in a form it accepts, with the event as signed kept beside it as ASCII text."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from ..models import LineWebhookEvent

logger = logging.getLogger(__name__)

PROCESS_BATCH_SIZE = 50
# LINE's events nest about six levels deep; anything deeper is stored as JSON text at this depth.
MAX_DEPTH = 32

# A webhook event to store: column values by field attname (`messaging_account_id`, `raw`, ...);
# fields left out take their model default.
EventRow = dict[str, Any]


class UnreadableBody(ValueError):
    """A signed body that holds no readable list of events (kept as a rejected body)."""


# Characters no database text can hold: NUL (PostgreSQL) and lone surrogates (not UTF-8).
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _storable(value: object) -> tuple[object, bool]:
    """`value` with what a database refuses replaced, and whether anything was: unstorable
    characters become U+FFFD, NaN and infinities their JSON name as text, containers deeper than
    MAX_DEPTH levels (the event itself is level 1) their JSON text. Iterative: a deep document
    cannot exhaust the stack here."""
    altered = False

    def leaf(item: object) -> object:
        nonlocal altered
        if isinstance(item, str) and UNSTORABLE_CHARACTERS.search(item):
            altered = True
            return UNSTORABLE_CHARACTERS.sub("\ufffd", item)
        if isinstance(item, float) and not math.isfinite(item):
            altered = True
            return "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
        return item

    root: list[object] = [value]
    # (container read, container written, depth)
    stack: list[tuple[Any, Any, int]] = [([value], root, 0)]
    while stack:
        source, target, depth = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list):
                if depth >= MAX_DEPTH:
                    altered = True
                    item = json.dumps(item, ensure_ascii=True)
                else:
                    copy: Any = {} if isinstance(item, dict) else [None] * len(item)
                    stack.append((item, copy, depth + 1))
                    item = copy
            else:
                item = leaf(item)
            if isinstance(target, dict):
                target[leaf(key)] = item
            else:
                target[key] = item
    return root[0], altered


@dataclass(frozen=True)
class SignedEvent:
    """One event of a signed body: as it can be stored, its key, and, when storing it needed
    changes, the event exactly as signed (ASCII JSON text)."""

    event: dict
    webhook_event_id: str
    as_signed: str


def webhook_events(body: bytes) -> list[SignedEvent]:
    """The events of a signed webhook body, every one of them: an entry that is not an object, or
    one nested too deeply to be read, is kept as an event of its own (flagged, its text as signed).
    Raises UnreadableBody for a body that is not UTF-8 JSON (as LINE sends) holding an object with a
    list under "events"."""
    try:
        text = body.decode("utf-8")
        document = json.loads(text)
    except RecursionError:
        return _events_one_by_one(text)
    except ValueError as exc:  # not UTF-8, JSONDecodeError, an over-long integer
        raise UnreadableBody(f"not JSON: {exc}") from None
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        raise UnreadableBody('no list of events under "events"')
    return [_signed_event(event) for event in events]


def _unread_event(text: str) -> SignedEvent:
    """An entry nested too deeply for the JSON parser: kept as its text, with a key of its own."""
    key = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:57]
    return SignedEvent(
        event={"webhookEventId": key, "unread": "nested too deeply to be read"},
        webhook_event_id=key,
        as_signed=text.encode("ascii", "backslashreplace").decode().replace("\x00", "\\x00"),
    )


def _signed_event(event: object) -> SignedEvent:
    if not isinstance(event, dict):
        storable, _ = _storable({"notAnObject": event})
        return SignedEvent(
            event=storable,  # type: ignore[arg-type]
            webhook_event_id=_event_id({"notAnObject": event}),
            as_signed=json.dumps(event, ensure_ascii=True),
        )
    storable, altered = _storable(event)
    return SignedEvent(
        event=storable,  # type: ignore[arg-type]
        webhook_event_id=_event_id(event),
        as_signed=json.dumps(event, ensure_ascii=True) if altered else "",
    )


_EVENTS_ARRAY = re.compile(r'^\s*\{.*?"events"\s*:\s*\[', re.DOTALL)
_DECODER = json.JSONDecoder()


def _events_one_by_one(text: str) -> list[SignedEvent]:
    """The events of a body too deeply nested for the JSON parser as a whole: each entry of its
    "events" list read on its own, an entry that is itself too deep kept as text. Raises
    UnreadableBody when the list cannot be found or an entry is not JSON."""
    found = _EVENTS_ARRAY.match(text)
    if found is None:
        raise UnreadableBody("nested too deeply to be read")
    events: list[SignedEvent] = []
    position = found.end()
    while True:
        position = _skip_space(text, position)
        if text.startswith("]", position) and not events:
            return events
        try:
            event, end = _DECODER.raw_decode(text, position)
            events.append(_signed_event(event))
        except RecursionError:
            end = _value_end(text, position)
            events.append(_unread_event(text[position:end]))
        except ValueError as exc:
            raise UnreadableBody(f"nested too deeply, and an event is not JSON: {exc}") from None
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position += 1
        elif text.startswith("]", position):
            return events
        else:
            raise UnreadableBody("nested too deeply, and the events list is not JSON")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _value_end(text: str, position: int) -> int:
    """Where the JSON array or object starting at `position` ends (strings skipped), without
    parsing it."""
    depth = 0
    in_string = escaped = False
    for index in range(position, len(text)):
        character = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
        elif character in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
    raise UnreadableBody("nested too deeply, and an event never ends")


def _event_id(event: dict) -> str:
    """The key that stores an event once: its webhookEventId (LINE's are 26-character ULIDs) when
    it is a string that can be stored as it is; else a digest of the event as signed, without its
    delivery context (which a redelivery changes): distinct signed events never share a key, and a
    redelivery gets the same one."""
    event_id = event.get("webhookEventId")
    if isinstance(event_id, str) and 0 < len(event_id) <= 64 and not UNSTORABLE_CHARACTERS.search(event_id):
        return event_id
    content = {key: value for key, value in event.items() if key != "deliveryContext"}
    signed = json.dumps(content, ensure_ascii=True, sort_keys=True)
    return "sha256:" + hashlib.sha256(signed.encode()).hexdigest()[:57]  # the column holds 64


def _timestamp(value: object) -> datetime.datetime:
    try:
        return datetime.datetime.fromtimestamp(int(value) / 1000, tz=datetime.UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return timezone.now()


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def event_row(*, account_id: uuid.UUID | str, signed: SignedEvent) -> EventRow:
    """The row that stores one webhook event (its raw JSON and the fields processing looks up)."""
    event = signed.event
    source = event.get("source") if isinstance(event.get("source"), dict) else {}
    mode = _text(event.get("mode"), 10)
    delivery = event.get("deliveryContext") if isinstance(event.get("deliveryContext"), dict) else {}
    return {
        "messaging_account_id": account_id,
        "webhook_event_id": signed.webhook_event_id,
        "event_type": _text(event.get("type"), 40),
        "mode": mode,
        "source_type": _text(source.get("type"), 10),
        "source_user_id": _text(source.get("userId"), 100),
        "source_group_id": _text(source.get("groupId"), 100),
        "source_room_id": _text(source.get("roomId"), 100),
        "line_timestamp": _timestamp(event.get("timestamp")),
        "is_redelivery": delivery.get("isRedelivery") is True,
        "raw": event,
        "raw_as_signed": signed.as_signed,
        # Standby events are kept but never answered: their reply token is not kept.
        "reply_token": _text(event.get("replyToken"), 100) if mode != "standby" else "",
    }


def events_insert(rows: list[EventRow]) -> dict[str, int]:
    """Insert the rows (of one account) whose webhookEventId is not stored yet, in one statement.

    Returns the new primary key of each inserted row by its webhookEventId; rows already stored (or twice in
    `rows`) are skipped by the unique constraint and absent from the result. One statement: atomic
    on its own or in the caller's transaction. (Django's bulk_create cannot say which rows an
    ON CONFLICT DO NOTHING skipped.)"""
    if not rows:
        return {}
    meta = LineWebhookEvent._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    params: list[object] = []
    for row in rows:
        event = LineWebhookEvent(**row)
        params += [field.get_db_prep_save(field.pre_save(event, True), connection) for field in fields]
    ops = connection.ops
    columns = ", ".join(ops.quote_name(field.column) for field in fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    account_column = ops.quote_name(meta.get_field("messaging_account").column)
    # Only identifiers from the model's own metadata are interpolated; every value is a parameter.
    sql = (
        f"INSERT INTO {ops.quote_name(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {', '.join([placeholder] * len(rows))} "
        f"ON CONFLICT ({account_column}, webhook_event_id) DO NOTHING "
        f"RETURNING id, webhook_event_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {event_id: pk for pk, event_id in cursor.fetchall()}


def processing_enqueue(event_pks: Iterable[int]) -> bool:
    """Queue stored events for processing, a few per task; whether all were queued. A broker outage
    is logged, not raised: the events are in the database and the periodic sweep queues them."""
    from ..tasks import line_events_process

    pks = list(event_pks)
    for start in range(0, len(pks), PROCESS_BATCH_SIZE):
        chunk = pks[start : start + PROCESS_BATCH_SIZE]
        try:
            line_events_process.delay(chunk)
        except Exception:
            # The broker is unreachable: each further try would wait out the same failure.
            logger.exception("LINE events not enqueued (the sweep will) events=%s", pks[start:])
            return False
    return True
