"""The event writer: one process per host that stores the webhook events of every web process.

In a web process, the group-commit writer thread shares the interpreter lock with the request threads.
Each time it comes back from the database (the write lock, BEGIN, the INSERT, COMMIT) it waits
behind them for the lock, and under load a flush spent more time waiting than writing
(docs/BENCHMARKS.md). `python manage.py line_event_writer` runs the same group commit in a process of
its own: one thread reads every web process's requests from a Unix socket, and whatever arrived
during a flush is the next flush. It also queues the stored events for processing.

Web processes send it their rows and wait for its answer, as they would wait for their own writer
thread. When it cannot be reached (not started, restarting), they store the events themselves. Either
way the webhook answers only once its events are committed.

The socket is the host's own (mode 0600): anyone who can write to it can store events, exactly as
anyone who can read the database settings can.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from .event_store import (
    EventRow,
    Publisher,
    _Pending,
    event_row,
    events_store,
    events_store_batch,
    webhook_events,
)

logger = logging.getLogger(__name__)

# A frame: its length (4 bytes, network order), then the message. A request is the account's ID,
# a newline and the webhook body as it came (verified by the web process): the writer makes the rows,
# so that the web process, the busiest, does not encode them. An answer is JSON: {"pks": [...]} (a
# primary key per event, null for one already stored) or {"error": "..."}.
_HEADER = struct.Struct("!I")
# After a failed connection attempt, web processes store by themselves for this long before trying again.
RECONNECT_AFTER_SECONDS = 1.0
# A Unix socket path must fit in sockaddr_un (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH_BYTES = 100
# Under load, a round of storing starts at most this often (see EventWriterServer.serve).
ROUND_SECONDS = 0.002


class WriterUnavailable(Exception):
    """The event writer cannot be reached: the caller stores the events itself."""


def request_frame(*, account_id: uuid.UUID | str, body: bytes) -> bytes:
    message = str(account_id).encode() + b"\n" + body
    return _HEADER.pack(len(message)) + message


def _answer_frame(answer: dict[str, Any]) -> bytes:
    data = json.dumps(answer, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


def _rows_from_request(message: bytes) -> list[EventRow]:
    account, newline, body = message.partition(b"\n")
    if not newline:
        raise ValueError("no account ID")
    account_id = uuid.UUID(account.decode("ascii"))
    return [event_row(account_id=account_id, event=event) for event in webhook_events(body)]


def _receive_answer(sock: socket.socket, deadline: float) -> dict[str, Any]:
    data = bytearray()
    size = None
    while size is None or len(data) < _HEADER.size + size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the event writer did not answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the event writer closed the connection")
        data += chunk
        if size is None and len(data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(data)
    return json.loads(data[_HEADER.size :])


def _peer_is_this_user(sock: socket.socket) -> bool:
    """Whether the process at the other end runs as this user (Linux; elsewhere the socket's folder,
    which the writer checks, is the protection)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    credentials = struct.Struct("3i")
    _pid, uid, _gid = credentials.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, credentials.size)
    )
    return uid == os.getuid()


class EventWriterClient:
    """A web process's side: one connection per request thread, opened on first use."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._unreachable_until: dict[str, float] = {}

    def store(
        self, *, account_id: uuid.UUID | str, body: bytes, path: str, timeout: float
    ) -> list[int | None]:
        """Have the writer store the events of a verified webhook body; returns what the group-commit
        writer returns for its rows.

        Raises WriterUnavailable when it cannot be reached, or went away before answering (then an
        event it had committed shows up as already stored when the caller stores it); TimeoutError
        when it did not answer in `timeout` seconds; DatabaseError when it could not store them."""
        deadline = time.monotonic() + timeout
        frame = request_frame(account_id=account_id, body=body)
        for _attempt in range(2):
            sock = self._connection(path, max(deadline - time.monotonic(), 0.001))
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(frame)
            except TimeoutError:
                # A busy writer did not take the whole request: it drops the part it got.
                self._drop()
                raise
            except OSError:
                # A connection the writer closed (it restarted): once more, on a new one.
                self._drop()
                continue
            try:
                answer = _receive_answer(sock, deadline)
            except TimeoutError:
                self._drop()  # its answer would arrive out of turn
                raise
            except (OSError, ValueError) as exc:
                self._drop()
                raise WriterUnavailable(f"the event writer went away: {exc}") from exc
            if "error" in answer:
                raise DatabaseError(answer["error"])
            return answer["pks"]
        raise WriterUnavailable("the event writer closed the connection twice")

    def close(self) -> None:
        """Close this thread's connection."""
        self._drop()

    def _connection(self, path: str, timeout: float) -> socket.socket:
        local = self._local
        if getattr(local, "path", None) == path and local.pid == os.getpid():
            return local.sock
        self._drop()
        if time.monotonic() < self._unreachable_until.get(path, 0.0):
            raise WriterUnavailable("the event writer was not reachable a moment ago")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            if path not in self._unreachable_until:
                logger.info("LINE event writer not reachable at %s (%s): storing in this process", path, exc)
            self._unreachable_until[path] = time.monotonic() + RECONNECT_AFTER_SECONDS
            raise WriterUnavailable(str(exc)) from exc
        if not _peer_is_this_user(sock):
            sock.close()
            logger.error("LINE event writer socket %s belongs to another user: not used", path)
            self._unreachable_until[path] = time.monotonic() + RECONNECT_AFTER_SECONDS
            raise WriterUnavailable("the socket's peer is another user")
        if self._unreachable_until.pop(path, None) is not None:
            logger.info("LINE event writer reachable again at %s", path)
        local.sock, local.path, local.pid = sock, path, os.getpid()
        return sock

    def _drop(self) -> None:
        local = self._local
        sock = getattr(local, "sock", None)
        if sock is not None and local.pid == os.getpid():
            sock.close()
        local.sock = local.path = local.pid = None


class _Connection:
    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()


class EventWriterServer:
    """The writer process's side: a single thread that reads, stores in one transaction, answers."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._inode = -1
        self._thread_id: int | None = None  # serve()'s thread
        self._stopping = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        """Finish the flush under way, answer it, queue what was stored, then return from serve()."""
        self._stopping.set()

    def serve(self) -> None:
        self._thread_id = threading.get_ident()
        listener = self._listen()
        publisher = Publisher().start()
        connection_created.connect(self._limit_statements)
        if connection.connection is not None:  # opened before: limited now
            self._limit_statements(None, connection)
        # Webhooks wait on these writes: on SQLite they go before the workers' (omnichannel/db/sqlite).
        if hasattr(connection, "write_priority"):
            connection.write_priority = True
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        self.ready.set()
        logger.info("LINE event writer listening on %s", self.path)
        try:
            requests: list[tuple[_Connection, _Pending]] = []
            round_started = 0.0
            while not self._stopping.is_set():
                # Under load a round starts at most every ROUND_SECONDS and takes everything that
                # came meanwhile: each round is a transaction, and rounds of 1.6 requests (storing
                # whatever was there at once) cost more CPU than the requests. When idle, a lone
                # request is stored at once.
                now = time.monotonic()
                wait = round_started + ROUND_SECONDS - now if requests else 0.2
                for key, _events in selector.select(timeout=max(wait, 0)):
                    if key.fileobj is listener:
                        self._accept(listener, selector)
                    else:
                        try:
                            requests.extend(self._read(key.data, selector))
                        except Exception:  # one client's trouble ends its connection, not the writer
                            logger.exception("LINE event writer: a connection failed and was closed")
                            self._close(key.data, selector)
                if requests and time.monotonic() >= round_started + ROUND_SECONDS:
                    round_started = time.monotonic()
                    self._answer_safely(requests, publisher, selector)
                    requests = []
            if requests:  # gathered before the stop: answered, not dropped
                self._answer_safely(requests, publisher, selector)
        finally:
            self._unlink_own_socket(listener)
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()
            publisher.flush()
            publisher.stop()
            connection_created.disconnect(self._limit_statements)
            connection.close()
            logger.info("LINE event writer stopped")

    def _limit_statements(self, sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
        # One stuck statement (a lock held elsewhere, a lost network) would hold every web process's
        # requests: on PostgreSQL, a statement of the writer's gives up with its requests.
        if connection.vendor == "postgresql" and threading.get_ident() == self._thread_id:
            milliseconds = str(int(settings.LINE_WEBHOOK_STORE_TIMEOUT * 1000))
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, false)", [milliseconds])

    def _listen(self) -> socket.socket:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"socket path {self.path} is longer than {MAX_SOCKET_PATH_BYTES} bytes; "
                "set LINE_WEBHOOK_WRITER_SOCKET to a shorter one"
            )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = self.path.parent.stat()
        if folder.st_uid != os.getuid() or folder.st_mode & 0o022:
            # Whoever can write there could put their own socket in the writer's place and answer
            # the web processes' requests (and read the customers' messages).
            raise ValueError(
                f"{self.path.parent} must belong to this user and not be writable by others "
                "(LINE_WEBHOOK_WRITER_SOCKET)"
            )
        if self.path.exists() and not stat.S_ISSOCK(self.path.stat().st_mode):
            raise ValueError(f"{self.path} exists and is not a socket (LINE_WEBHOOK_WRITER_SOCKET)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # left by a writer that did not stop cleanly
        else:
            raise RuntimeError(f"another LINE event writer is listening on {self.path}")
        finally:
            probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket is created 0600: this user's processes only
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(umask)
        listener.listen(1024)
        listener.setblocking(False)
        self._inode = self.path.stat().st_ino
        return listener

    def _unlink_own_socket(self, listener: socket.socket) -> None:
        # Before closing: a writer started meanwhile has its own socket there, left alone.
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        listener.close()

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                sock, _address = listener.accept()
            except BlockingIOError:
                return
            except OSError:
                # Out of file descriptors, say: the connection waits in the backlog (its web
                # process stores by itself after LINE_WEBHOOK_STORE_TIMEOUT at worst).
                logger.exception("LINE event writer: could not accept a connection")
                time.sleep(0.01)
                return
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, _Connection(sock))

    def _read(
        self, conn: _Connection, selector: selectors.BaseSelector
    ) -> list[tuple[_Connection, _Pending]]:
        while True:
            try:
                data = conn.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._close(conn, selector)
                return []
            conn.buffer += data
        requests = []
        while len(conn.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(conn.buffer)
            if size > settings.LINE_WEBHOOK_MAX_BODY_BYTES + 100:  # a body and an account ID
                logger.warning("LINE event writer: a request of %s bytes refused, connection closed", size)
                self._close(conn, selector)
                return []
            if len(conn.buffer) < _HEADER.size + size:
                break
            message = bytes(conn.buffer[_HEADER.size : _HEADER.size + size])
            del conn.buffer[: _HEADER.size + size]
            try:
                rows = _rows_from_request(message)
            except Exception as exc:
                self._send(conn, {"error": f"unreadable request: {exc}"}, selector)
                continue
            requests.append((conn, _Pending(rows)))
        return requests

    def _answer_safely(
        self,
        requests: list[tuple[_Connection, _Pending]],
        publisher: Publisher,
        selector: selectors.BaseSelector,
    ) -> None:
        try:
            self._answer(requests, publisher, selector)
        except Exception:
            # Not stored, or stored but not answered: closing makes each web process store its
            # events itself (an event already stored comes back as a duplicate, the sweep queues it).
            logger.exception("LINE event writer: a round failed; its connections were closed")
            for conn, _pending in requests:
                self._close(conn, selector)

    def _answer(
        self,
        requests: list[tuple[_Connection, _Pending]],
        publisher: Publisher,
        selector: selectors.BaseSelector,
    ) -> None:
        new = events_store_batch([pending for _conn, pending in requests])
        if new:
            publisher.put(new)
        for conn, pending in requests:
            if pending.error is not None:
                self._send(conn, {"error": f"{type(pending.error).__name__}: {pending.error}"}, selector)
            else:
                self._send(conn, {"pks": pending.result}, selector)

    def _send(self, conn: _Connection, answer: dict[str, Any], selector: selectors.BaseSelector) -> None:
        # Each client waits for its answer before it sends again: an answer always fits the socket's
        # buffer. A client that is gone is dropped; it stores its events itself.
        try:
            conn.sock.sendall(_answer_frame(answer))
        except OSError:
            self._close(conn, selector)

    def _close(self, conn: _Connection, selector: selectors.BaseSelector) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        conn.sock.close()


_client = EventWriterClient()


def events_store_by_writer(*, account_id: uuid.UUID | str, body: bytes) -> list[int | None]:
    """Store the events of a verified webhook body through this host's event writer process.

    Raises WriterUnavailable when it is not configured or cannot be reached, TimeoutError or
    DatabaseError as the group-commit writer does."""
    path = settings.LINE_WEBHOOK_WRITER_SOCKET
    if not path:
        raise WriterUnavailable("no event writer configured")
    return _client.store(
        account_id=account_id, body=body, path=str(path), timeout=settings.LINE_WEBHOOK_STORE_TIMEOUT
    )


# Less than this left of the store timeout after the event writer went away: 503 at once.
MIN_FALLBACK_SECONDS = 0.1


def events_store_webhook(*, account_id: uuid.UUID, body: bytes, events: list[dict]) -> list[int | None]:
    """Store the events of one verified webhook body once each; returns the new primary keys (None:
    already stored). The host's event writer process stores them when it runs: it gets the body as
    it came and makes the rows itself. Within LINE_WEBHOOK_STORE_TIMEOUT in all, or TimeoutError."""
    timeout = None
    if settings.LINE_WEBHOOK_GROUP_COMMIT and not connection.in_atomic_block:
        deadline = time.monotonic() + settings.LINE_WEBHOOK_STORE_TIMEOUT
        try:
            return events_store_by_writer(account_id=account_id, body=body)
        except WriterUnavailable:
            pass  # no event writer process on this host (or it is restarting): this process's own
        timeout = deadline - time.monotonic()
        if timeout < MIN_FALLBACK_SECONDS:
            raise TimeoutError("the event writer went away and no time is left to store the events here")
    rows = [event_row(account_id=account_id, event=event) for event in events]
    return events_store(rows, timeout=timeout)
