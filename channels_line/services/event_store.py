"""Storing webhook events: one INSERT ... ON CONFLICT DO NOTHING per batch, with group commit.

Under load, many request threads store events at once. Each taking its own write transaction makes
them queue on the database's write lock (SQLite answers a busy writer by sleeping, up to 100 ms at a
time, which is where multi-second webhook answers came from). Instead, a request hands its rows to
one writer thread per process and waits; the writer stores everything waiting in one transaction
and wakes each request with its result. The request still answers only after its events are
committed, so an acknowledged event is never lost.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from ..models import LineWebhookEvent

logger = logging.getLogger(__name__)

WRITER_BATCH_MAX = 500
PROCESS_BATCH_SIZE = 20

Key = tuple[object, str]


def _key(row: LineWebhookEvent) -> Key:
    return (row.messaging_account_id, row.webhook_event_id)


def events_insert(rows: list[LineWebhookEvent]) -> dict[Key, int]:
    """Insert the rows whose (account, webhookEventId) is not stored yet, in one statement.

    Returns the new primary key of each inserted row by its key; rows already stored are skipped by
    the unique constraint and absent from the result. Must run inside a transaction."""
    if not rows:
        return {}
    meta = LineWebhookEvent._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params: list[object] = []
    for row in rows:
        for f in fields:
            params.append(f.get_db_prep_save(f.pre_save(row, True), connection))
    account_column = meta.get_field("messaging_account").column
    # Only identifiers from the model's own metadata are interpolated; every value is a parameter.
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {', '.join([placeholder] * len(rows))} "
        f"ON CONFLICT ({account_column}, webhook_event_id) DO NOTHING "
        f"RETURNING id, {account_column}, webhook_event_id"
    )
    account_field = meta.get_field("messaging_account")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    by_column = {account_field.get_db_prep_save(r.messaging_account_id, connection): r for r in rows}
    inserted: dict[Key, int] = {}
    for pk, account_value, event_id in returned:
        # The database hands back its own representation of the account ID (hex text on SQLite).
        row = by_column.get(account_value)
        account_id = row.messaging_account_id if row is not None else account_value
        inserted[(account_id, event_id)] = pk
    return inserted


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
            logger.exception("LINE events not enqueued (the sweep will) events=%s", chunk)


def _assign(rows: list[LineWebhookEvent], inserted: dict[Key, int], claimed: set[Key]) -> list[int | None]:
    # The same event twice in one batch: only the first occurrence is the new one.
    result: list[int | None] = []
    for row in rows:
        key = _key(row)
        pk = inserted.get(key) if key not in claimed else None
        if pk is not None:
            claimed.add(key)
        result.append(pk)
    return result


def events_store_inline(rows: list[LineWebhookEvent]) -> list[int | None]:
    """Store in the caller's transaction; processing is queued once it commits."""
    with transaction.atomic():
        result = _assign(rows, events_insert(rows), set())
        new = [pk for pk in result if pk]
        if new:
            transaction.on_commit(lambda: processing_enqueue(new), robust=True)
    return result


class _Pending:
    __slots__ = ("done", "error", "result", "rows")

    def __init__(self, rows: list[LineWebhookEvent]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.result: list[int | None] = []
        self.error: BaseException | None = None


class GroupCommitWriter:
    """One writer thread per process (started on first use, again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()

    def submit(self, rows: list[LineWebhookEvent], *, timeout: float) -> list[int | None]:
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

    def stop(self) -> None:
        """Let the writer finish what is queued, close its database connection and end (it starts
        again on the next submit). For orderly shutdowns and test teardown."""
        if self._pid == os.getpid():
            done = _Pending([])
            self._queue.put(done)
            self._queue.put(None)  # type: ignore[arg-type]
            done.done.wait(5)
            self._pid = None

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, name="line-event-writer", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                connection.close()
                return
            batch = [first]
            while len(batch) < WRITER_BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # type: ignore[arg-type]
                    break
                batch.append(item)
            try:
                new = self._store([pending for pending in batch if pending.rows])
            finally:
                for pending in batch:
                    pending.done.set()
            if new:
                processing_enqueue(new)

    def _store(self, batch: list[_Pending]) -> list[int]:
        """Store a batch in one transaction. Should it fail (say, an account deleted meanwhile), each
        request is stored on its own, so that only the requests at fault get the error."""
        if not batch:
            return []
        try:
            close_old_connections()
            rows = [row for pending in batch for row in pending.rows]
            with transaction.atomic():
                inserted = events_insert(rows)
        except Exception as exc:
            if len(batch) > 1:
                return [pk for pending in batch for pk in self._store([pending])]
            logger.exception("LINE event store failed account=%s", batch[0].rows[0].messaging_account_id)
            batch[0].error = exc
            connection.close()
            return []
        claimed: set[Key] = set()
        new: list[int] = []
        for pending in batch:
            pending.result = _assign(pending.rows, inserted, claimed)
            new.extend(pk for pk in pending.result if pk)
        return new


_writer = GroupCommitWriter()


def events_writer_stop() -> None:
    _writer.stop()


def events_store(rows: list[LineWebhookEvent]) -> list[int | None]:
    """Store webhook events once each; returns the new primary keys (None: already stored)."""
    if settings.LINE_WEBHOOK_GROUP_COMMIT and not connection.in_atomic_block:
        return _writer.submit(rows, timeout=settings.LINE_WEBHOOK_STORE_TIMEOUT)
    # Inside a caller's transaction (or with group commit off), the caller's connection stores them.
    return events_store_inline(rows)
