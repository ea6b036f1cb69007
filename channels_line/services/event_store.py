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

_MISSING = object()
# A webhook event to store: column values by field attname (`messaging_account_id`, `raw`, ...).
# Plain dictionaries rather than model instances: building and converting model instances was the
# largest cost of an insert. Fields left out take their model default.
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
    """The events of a signed webhook body. Raises UnreadableBody for a body that is not UTF-8 JSON
    (as LINE sends) holding an object with a list of event objects under "events" (nesting too
    deep to parse included)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise UnreadableBody("nested too deeply to be read") from None
    except ValueError as exc:  # not UTF-8, JSONDecodeError, an over-long integer
        raise UnreadableBody(f"not JSON: {exc}") from None
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise UnreadableBody('no list of event objects under "events"')
    result = []
    for event in events:
        storable, altered = _storable(event)
        result.append(
            SignedEvent(
                event=storable,  # type: ignore[arg-type]
                webhook_event_id=_event_id(event),
                as_signed=json.dumps(event, ensure_ascii=True) if altered else "",
            )
        )
    return result


def _event_id(event: dict) -> str:
    """The key that stores an event once: its webhookEventId (LINE's are 26-character ULIDs), or,
    for one that is missing, over-long or not storable as it is, a digest of it as signed (of the
    whole event when it has no ID): distinct signed events never share a key, and a redelivery
    gets the same one."""
    event_id = event.get("webhookEventId")
    if isinstance(event_id, str) and 0 < len(event_id) <= 64 and not UNSTORABLE_CHARACTERS.search(event_id):
        return event_id
    signed = json.dumps(event_id if event_id is not None else event, ensure_ascii=True, sort_keys=True)
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
