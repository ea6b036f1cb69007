"""Storing webhook events: one INSERT ... ON CONFLICT DO NOTHING per batch, with group commit.

Under load, many request threads store events at once. Each taking its own write transaction makes
them queue on the database's write lock (SQLite answers a busy writer by sleeping, up to 100 ms at a
time, which is where multi-second webhook answers came from). Instead, a request hands its rows to a
writer and waits; the writer stores everything waiting in one transaction and wakes each request with
its result. The request still answers only after its events are committed, so an acknowledged event
is never lost.

The writer is the host's event writer process when it runs (event_writer.py: it does not compete
with request threads for the interpreter lock), else a writer thread in the web process.

Queueing the stored events for processing is a publisher thread's job: publishing a task costs about
as much as storing a batch, and the writer would otherwise store nothing meanwhile. The publisher
takes everything stored since its last round and publishes it in tasks of PROCESS_BATCH_SIZE events.
An event whose publishing is lost (the process dies, the broker is down) is in the database already;
the periodic sweep queues it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    models,
    transaction,
)
from django.utils import timezone

from ..models import EventState, LineWebhookEvent

logger = logging.getLogger(__name__)

WRITER_BATCH_MAX = 500
PROCESS_BATCH_SIZE = 50
PUBLISH_LINGER_SECONDS = 0.02
# Under load, a task is published at most this often (each holds what was stored meanwhile): a
# publish costs the event writer more than storing a request, and at 20 ms rounds publishing took a
# third of its time. When idle, stored events are published within PUBLISH_LINGER_SECONDS.
PUBLISH_INTERVAL_SECONDS = 0.1

Key = tuple[object, str]
_MISSING = object()
# A webhook event to store: column values by field attname (`messaging_account_id`, `raw`, ...).
# Plain dictionaries rather than model instances: building and converting model instances was the
# largest cost of a flush. Fields left out take their model default.
EventRow = dict[str, Any]


def _key(row: EventRow) -> Key:
    return (row["messaging_account_id"], row["webhook_event_id"])


# Fields whose Python value is what the database driver takes (exact types: a subclass, say an
# encrypted text field, converts its value).
_PLAIN_FIELDS = {models.CharField, models.TextField, models.BooleanField, models.PositiveIntegerField}


@functools.cache
def _insert_fields() -> list[tuple[models.Field, Any, str, bool]]:
    """(field, default, how to convert, default called per row) for every column an insert writes,
    in column order."""
    plan = []
    for field in LineWebhookEvent._meta.concrete_fields:
        if field.primary_key:
            continue
        if getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            how = "now"  # the same moment for every row of the statement
        elif isinstance(field, models.DateTimeField):
            how = "datetime"
        elif type(field) in _PLAIN_FIELDS:
            how = "as is"
        elif field.is_relation:  # the same few accounts in every row: converted once per statement
            how = "relation"
        else:  # JSON: the field's own conversion
            how = "field"
        # A callable default (a new dict, a new UUID) is called for each row, below.
        per_row = field.has_default() and callable(field.default)
        plan.append((field, field.default if per_row else field.get_default(), how, per_row))
    return plan


def _timestamp(value: object) -> datetime.datetime:
    try:
        return datetime.datetime.fromtimestamp(int(value) / 1000, tz=datetime.UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return timezone.now()


def _event_id(event: dict) -> str:
    # LINE always sends webhookEventId; should one be missing, a digest of the event still
    # deduplicates its redeliveries.
    event_id = event.get("webhookEventId")
    if isinstance(event_id, str) and event_id:
        return event_id[:64]
    return "sha256:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:57]


def webhook_events(body: bytes) -> list[dict]:
    """The events of a webhook body. Raises ValueError, KeyError or TypeError for a body that is not
    a JSON object with a list of event objects."""
    events = json.loads(body)["events"]
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise TypeError("events is not a list of objects")
    return events


def event_row(*, account_id: uuid.UUID | str, event: dict) -> EventRow:
    """The row that stores one webhook event (its raw JSON and the fields processing looks up)."""
    source = event.get("source") if isinstance(event.get("source"), dict) else {}
    mode = str(event.get("mode") or "")
    delivery = event.get("deliveryContext") if isinstance(event.get("deliveryContext"), dict) else {}
    # Standby events are kept but never answered: their reply token is not kept.
    reply_token = str(event.get("replyToken") or "") if mode != "standby" else ""
    return {
        "messaging_account_id": account_id,
        "webhook_event_id": _event_id(event),
        "event_type": str(event.get("type") or "")[:40],
        "mode": mode[:10],
        "source_type": str(source.get("type") or "")[:10],
        "source_user_id": str(source.get("userId") or "")[:100],
        "source_group_id": str(source.get("groupId") or "")[:100],
        "source_room_id": str(source.get("roomId") or "")[:100],
        "line_timestamp": _timestamp(event.get("timestamp")),
        "is_redelivery": bool(delivery.get("isRedelivery")),
        "raw": event,
        "reply_token": reply_token[:100],
    }


def events_insert(rows: list[EventRow]) -> dict[Key, int]:
    """Insert the rows whose (account, webhookEventId) is not stored yet, in one statement.

    Returns the new primary key of each inserted row by its key; rows already stored are skipped by
    the unique constraint and absent from the result. One statement: atomic on its own or in the
    caller's transaction."""
    if not rows:
        return {}
    meta = LineWebhookEvent._meta
    plan = _insert_fields()
    ops = connection.ops
    now = ops.adapt_datetimefield_value(timezone.now())
    params: list[object] = []
    related: dict[tuple[str, object], object] = {}
    for row in rows:
        for field, default, how, per_row in plan:
            value = row.get(field.attname, _MISSING)
            if value is _MISSING:
                value = default() if per_row else default
            if how == "now":
                params.append(now)
            elif value is None or how == "as is":
                params.append(value)
            elif how == "datetime":
                params.append(ops.adapt_datetimefield_value(value))
            elif how == "relation":
                key = (field.attname, value)
                if key not in related:
                    related[key] = field.get_db_prep_save(value, connection)
                params.append(related[key])
            else:
                params.append(field.get_db_prep_save(value, connection))
    columns = ", ".join(ops.quote_name(field.column) for field, *_ in plan)
    placeholder = "(" + ", ".join(["%s"] * len(plan)) + ")"
    account_field = meta.get_field("messaging_account")
    # Only identifiers from the model's own metadata are interpolated; every value is a parameter.
    sql = (
        f"INSERT INTO {ops.quote_name(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {', '.join([placeholder] * len(rows))} "
        f"ON CONFLICT ({account_field.column}, webhook_event_id) DO NOTHING "
        f"RETURNING id, {account_field.column}, webhook_event_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    # The database hands back its own representation of the account ID (hex text on SQLite).
    accounts = {row["messaging_account_id"] for row in rows}
    by_column = {account_field.get_db_prep_save(account, connection): account for account in accounts}
    return {
        (by_column.get(account_value, account_value), event_id): pk
        for pk, account_value, event_id in returned
    }


def processing_enqueue(event_pks: Iterable[int]) -> None:
    """Queue stored events for processing, a few per task. A broker outage is logged, not raised:
    the events are in the database and the periodic sweep enqueues them later."""
    from ..tasks import line_events_process

    pks = list(event_pks)
    for start in range(0, len(pks), PROCESS_BATCH_SIZE):
        chunk = pks[start : start + PROCESS_BATCH_SIZE]
        try:
            line_events_process.delay(chunk)
        except Exception:
            # The broker is unreachable: each further try would wait out the same failure.
            logger.exception("LINE events not enqueued (the sweep will) events=%s", pks[start:])
            return


def _assign(rows: list[EventRow], inserted: dict[Key, int], claimed: set[Key]) -> list[int | None]:
    # The same event twice in one batch: only the first occurrence is the new one.
    result: list[int | None] = []
    for row in rows:
        key = _key(row)
        pk = inserted.get(key) if key not in claimed else None
        if pk is not None:
            claimed.add(key)
        result.append(pk)
    return result


def events_store_inline(rows: list[EventRow]) -> list[int | None]:
    """Store in the caller's transaction; processing is queued once it commits."""
    with transaction.atomic():
        result = _assign(rows, events_insert(rows), set())
        new = [pk for pk in result if pk]
        if new:
            transaction.on_commit(lambda: processing_enqueue(new), robust=True)
    return result


class _Pending:
    """One request's rows, waiting for a flush; the flush sets `result` (or `error`) and `done`."""

    __slots__ = ("done", "error", "result", "rows")

    def __init__(self, rows: list[EventRow]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.result: list[int | None] = []
        self.error: BaseException | None = None


def events_store_batch(batch: list[_Pending]) -> list[int]:
    """Store the rows of several requests in one transaction; sets each request's result (or its
    error) and returns the new primary keys. Does not set `done`: the caller answers the requests."""
    batch = [pending for pending in batch if pending.rows]
    if not batch:
        return []
    try:
        inserted = _events_insert_round([row for pending in batch for row in pending.rows])
    except (IntegrityError, DataError) as exc:
        # A row at fault (say, its account deleted meanwhile): each request on its own, so that only
        # the requests at fault get the error.
        if len(batch) > 1:
            return [pk for pending in batch for pk in events_store_batch([pending])]
        logger.exception("LINE event store failed account=%s", batch[0].rows[0]["messaging_account_id"])
        batch[0].error = exc
        return []
    except Exception as exc:
        # The database itself (unreachable, timing out): trying each request again would make every
        # one of them wait for it once more. They all get the error.
        logger.exception("LINE event store failed requests=%s", len(batch))
        for pending in batch:
            pending.error = exc
        connection.close()
        return []
    claimed: set[Key] = set()
    new: list[int] = []
    for pending in batch:
        pending.result = _assign(pending.rows, inserted, claimed)
        new.extend(pk for pk in pending.result if pk)
    return new


# A writer checks its connection (a query on PostgreSQL, a round trip as long as the INSERT) at most
# this often instead of before every round; a round that finds the connection broken since is tried
# once more on a new one.
CONNECTION_CHECK_SECONDS = 1.0
_connection_checked = threading.local()


def _events_insert_round(rows: list[EventRow]) -> dict[Key, int]:
    now = time.monotonic()
    checked = now - getattr(_connection_checked, "at", -CONNECTION_CHECK_SECONDS) >= CONNECTION_CHECK_SECONDS
    if checked:
        close_old_connections()  # unusable, or older than CONN_MAX_AGE: closed, opened again on use
        _connection_checked.at = now
    try:
        return _events_insert_atomic(rows)
    except (OperationalError, InterfaceError):
        if checked or connection.connection is None or connection.is_usable():
            raise  # the database, not a connection gone stale: the requests get the error
        logger.warning(
            "LINE event store: the database connection was dropped since its last check; reconnecting"
        )
        connection.close()
        _connection_checked.at = time.monotonic()
        inserted = _events_insert_atomic(rows)
        # The first try may have committed before the connection dropped: its rows now conflict.
        return {**_stored_pending(rows, exclude=inserted), **inserted}


def _stored_pending(rows: list[EventRow], *, exclude: dict[Key, int]) -> dict[Key, int]:
    """The primary keys of these rows that are stored and not processed yet (keys in `exclude` left
    out). A round retried after a lost answer counts them as its own, so that they are queued now
    rather than by the sweep minutes later; a real duplicate queued twice is processed once."""
    wanted = {(str(account), event_id): (account, event_id) for account, event_id in map(_key, rows)}
    found = LineWebhookEvent.objects.filter(
        messaging_account_id__in={account for account, _ in wanted.values()},
        webhook_event_id__in={event_id for _, event_id in wanted.values()},
        state=EventState.PENDING,
    ).values_list("messaging_account_id", "webhook_event_id", "pk")
    result = {}
    for account, event_id, pk in found:
        key = wanted.get((str(account), event_id))
        if key is not None and key not in exclude:
            result[key] = pk
    return result


def _events_insert_atomic(rows: list[EventRow]) -> dict[Key, int]:
    if connection.vendor == "sqlite":
        # The transaction takes the write lock with the event writer's priority (omnichannel/db/sqlite).
        with transaction.atomic():
            return events_insert(rows)
    # One statement is atomic by itself: one round trip instead of BEGIN, INSERT and COMMIT.
    return events_insert(rows)


class Publisher:
    """Queues stored events for processing from a thread of its own. Publishing a task costs about as
    much as storing a batch: a writer that published itself would store nothing meanwhile, and would
    stop storing while the broker is down.

    The thread wakes every PUBLISH_LINGER_SECONDS and publishes what was put since, but at most
    every PUBLISH_INTERVAL_SECONDS unless someone waits in flush(): under load, what is stored
    during an interval goes out together. A writer hands over its keys without waking anyone
    (waking the publisher after every flush cost the writer more than the flush)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pks: list[int] = []
        self._waiters: list[threading.Event] = []
        self._stopping = False
        self._ended = False

    def start(self) -> Publisher:
        threading.Thread(target=self._run, name="line-event-publisher", daemon=True).start()
        return self

    def put(self, pks: list[int]) -> None:
        with self._lock:
            self._pks.extend(pks)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far is queued (or its publishing has failed)."""
        published = threading.Event()
        with self._lock:
            if self._ended:  # its last round published everything put before the stop
                return True
            self._waiters.append(published)
        return published.wait(timeout)

    def stop(self) -> None:
        """The thread ends once everything put so far is queued."""
        with self._lock:
            self._stopping = True

    def _run(self) -> None:
        last_published = 0.0
        while True:
            time.sleep(PUBLISH_LINGER_SECONDS)
            with self._lock:
                if (
                    time.monotonic() < last_published + PUBLISH_INTERVAL_SECONDS
                    and not self._waiters
                    and not self._stopping
                ):
                    continue
                pks, self._pks = self._pks, []
                waiters, self._waiters = self._waiters, []
                stopping = self._ended = self._stopping
            if pks:
                last_published = time.monotonic()
                try:
                    processing_enqueue(pks)
                except Exception:  # the thread must live on; the sweep queues these events later
                    logger.exception("LINE events not enqueued (the sweep will) count=%s", len(pks))
            for waiter in waiters:
                waiter.set()
            if stopping:
                return


class GroupCommitWriter:
    """One writer thread and one publisher per process (started on first use, again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._publisher = Publisher()

    def submit(self, rows: list[EventRow], *, timeout: float) -> list[int | None]:
        """Store `rows`; returns the new primary key of each row, or None for one already stored.
        Raises TimeoutError when the database did not answer in time, or the database's error."""
        self._ensure_thread()
        pending = _Pending(rows)
        self._queue.put(pending)
        if not pending.done.wait(timeout):
            raise TimeoutError("the event store did not answer in time")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is stored and its processing queued."""
        if self._pid != os.getpid():
            return True
        done = _Pending([])
        self._queue.put(done)
        if not done.done.wait(timeout):
            return False
        return self._publisher.flush(timeout)

    def stop(self) -> None:
        """Let the writer finish what is queued, close its database connection and end (it starts
        again on the next submit). For orderly shutdowns and test teardown."""
        if self._pid == os.getpid():
            self.flush()
            self._queue.put(None)
            self._pid = None

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                # New queues for new threads: after a stop, the old ones finish on theirs.
                self._queue = queue.SimpleQueue()
                self._publisher = Publisher().start()
                writer = threading.Thread(
                    target=self._run, args=(self._queue, self._publisher), name="line-event-writer"
                )
                writer.daemon = True
                writer.start()
                self._pid = os.getpid()

    def _run(self, requests: queue.SimpleQueue[_Pending | None], publisher: Publisher) -> None:
        # A webhook waits on this thread's writes: on SQLite they go before the workers' (see
        # omnichannel/db/sqlite). Other databases let writers in side by side.
        if hasattr(connection, "write_priority"):
            connection.write_priority = True
        while True:
            first = requests.get()
            if first is None:
                connection.close()
                publisher.stop()
                return
            batch = [first]
            while len(batch) < WRITER_BATCH_MAX:
                try:
                    item = requests.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    requests.put(None)
                    break
                batch.append(item)
            new: list[int] = []
            try:
                new = events_store_batch(batch)
            finally:
                # To the publisher before waking anyone: a flush() woken here finds them queued.
                if new:
                    publisher.put(new)
                for pending in batch:
                    pending.done.set()


_writer = GroupCommitWriter()


def events_writer_stop() -> None:
    _writer.stop()


def events_writer_flush(timeout: float = 5.0) -> bool:
    """Wait until this process's writer has stored and queued everything submitted so far."""
    return _writer.flush(timeout)


def events_store(rows: list[EventRow], *, timeout: float | None = None) -> list[int | None]:
    """Store webhook events once each, through this process's own writer (or, inside a transaction
    or with group commit off, in the caller's transaction). Returns the new primary keys (None:
    already stored). Raises TimeoutError after `timeout` (default LINE_WEBHOOK_STORE_TIMEOUT)."""
    if settings.LINE_WEBHOOK_GROUP_COMMIT and not connection.in_atomic_block:
        if timeout is None:
            timeout = settings.LINE_WEBHOOK_STORE_TIMEOUT
        return _writer.submit(rows, timeout=timeout)
    return events_store_inline(rows)
