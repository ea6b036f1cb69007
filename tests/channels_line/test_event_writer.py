"""The event writer process: web processes hand it their webhook events over a Unix socket.

Real sockets and the real database throughout. The writer (`EventWriterServer`) runs in a thread of
the test process, on its own database connection (hence `transaction=True`: it must see what the test
commits, and the test what it commits); the management command runs as a real subprocess. Writers
that misbehave (die mid-request, never answer, answer an error) are small fakes speaking the wire
format: nothing here can make the real writer do that on cue.

Unix socket paths must fit in about 100 bytes and pytest's `tmp_path` may not: sockets live in short
directories under /tmp, removed after each test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test import Client

from channels_line.models import LineWebhookEvent
from channels_line.services import event_store, event_writer
from channels_line.services.event_store import event_row
from channels_line.services.event_writer import (
    EventWriterServer,
    WriterUnavailable,
    events_store_by_writer,
)
from omnichannel.models import MessagingAccount
from tests.channels_line.conftest import post_webhook
from tests.channels_line.payloads import body_bytes, load_payload
from tests.conftest import BASE_DIR, database_url_for, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

_HEADER = struct.Struct("!I")


# --- the wire format, written out here rather than borrowed from the code under test ------------------


def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, ensure_ascii=False).encode()
    return _HEADER.pack(len(data)) + data


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("closed mid-frame")
        data += chunk
    return data


def receive_frame(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(receive_exactly(sock, _HEADER.size))
    return json.loads(receive_exactly(sock, size))


def request_frame(*, account_id: uuid.UUID, body: bytes) -> bytes:
    """A web process's request: the account's ID, a newline, the webhook body as it came."""
    message = str(account_id).encode() + b"\n" + body
    return _HEADER.pack(len(message)) + message


def receive_request(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(receive_exactly(sock, _HEADER.size))
    account_id, _newline, body = receive_exactly(sock, size).partition(b"\n")
    return {"account_id": account_id.decode(), "events": json.loads(body)["events"]}


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ew", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def enqueued(monkeypatch) -> list[list[int]]:
    """What the writers queue for processing, kept here instead: a worker left running by another test
    must not process these events while the test database is flushed (PostgreSQL deadlocks). The
    writer's Publisher looks `processing_enqueue` up in event_store when it publishes."""
    calls: list[list[int]] = []
    monkeypatch.setattr(event_store, "processing_enqueue", lambda pks: calls.append(list(pks)))
    return calls


@pytest.fixture
def fallback(monkeypatch, enqueued) -> Iterator[list[list[dict]]]:
    """The rows each request stored through this process's own group-commit writer (the fallback),
    which still stores them. Its queueing is waited for before `enqueued` is undone."""
    writer = event_store._writer
    submit = writer.submit
    calls: list[list[dict]] = []

    def recording_submit(rows, *, timeout):
        calls.append(rows)
        return submit(rows, timeout=timeout)

    monkeypatch.setattr(writer, "submit", recording_submit)
    yield calls
    assert event_store.events_writer_flush()


@pytest.fixture
def rounds(monkeypatch) -> list[int]:
    """How many requests each of the writer's rounds stored (a spy: the real store runs)."""
    sizes: list[int] = []
    store = event_writer.events_store_batch

    def counting_store(batch):
        sizes.append(len(batch))
        return store(batch)

    monkeypatch.setattr(event_writer, "events_store_batch", counting_store)
    return sizes


class RunningWriter:
    """An EventWriterServer serving from a thread of the test process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = EventWriterServer(path)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, name="test-line-event-writer", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.serve()
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def start(self) -> RunningWriter:
        self.thread.start()
        assert self.server.ready.wait(5), f"the writer did not start: {self.errors}"
        return self

    def stop(self) -> None:
        """Returns once serve() has returned: what it stored is queued, its socket removed."""
        self.server.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the writer did not stop"


@pytest.fixture
def start_writer(enqueued, short_dir) -> Iterator[Callable[..., RunningWriter]]:
    started: list[RunningWriter] = []

    def start(path: Path | None = None) -> RunningWriter:
        writer = RunningWriter(path or short_dir / f"w{len(started)}.sock").start()
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.stop()


@pytest.fixture
def writer(start_writer, settings) -> RunningWriter:
    """A writer listening where this process's webhook requests look for it."""
    running = start_writer()
    settings.LINE_WEBHOOK_WRITER_SOCKET = str(running.path)
    return running


@pytest.fixture(autouse=True)
def _no_connection_to_the_writer_left_open():
    """The client keeps a connection per thread; the test's own thread closes its one."""
    yield
    event_writer._client.close()


class FakeWriter:
    """Listens on a Unix socket and plays a writer process that misbehaves after reading a request:
    `"close"` closes the connection without answering (a writer that dies mid-request), `"silent"`
    never answers (a writer stuck on the database), `"error"` answers that it could not store."""

    def __init__(self, path: Path, behaviour: str) -> None:
        self.path = path
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._kept: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, name="fake-line-event-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _address = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            self.requests.append(receive_request(conn))
            if self.behaviour == "close":
                conn.close()
            elif self.behaviour == "close late":
                time.sleep(0.9)
                conn.close()
            elif self.behaviour == "error":
                conn.sendall(frame({"error": "OperationalError: database is locked"}))
                self._kept.append(conn)
            else:
                self._kept.append(conn)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        for conn in self._kept:
            conn.close()
        self._listener.close()


@pytest.fixture
def fake_writer(short_dir, settings) -> Iterator[Callable[[str], FakeWriter]]:
    fakes: list[FakeWriter] = []

    def start(behaviour: str) -> FakeWriter:
        fake = FakeWriter(short_dir / f"fake{len(fakes)}.sock", behaviour)
        fakes.append(fake)
        settings.LINE_WEBHOOK_WRITER_SOCKET = str(fake.path)
        return fake

    yield start
    for fake in fakes:
        fake.stop()


def new_request(account: MessagingAccount) -> tuple[dict[str, Any], str]:
    """A verified webhook body with one new event, as `events_store_by_writer` takes it, and the
    event's ID."""
    payload = load_payload("message_text__user", fresh=True)
    return {"account_id": account.pk, "body": body_bytes(payload)}, payload["events"][0]["webhookEventId"]


def store_by_writer(request: dict[str, Any]) -> list[int | None]:
    return events_store_by_writer(**request)


def event_ids(payload: dict) -> list[str]:
    return [event["webhookEventId"] for event in payload["events"]]


def stored_ids() -> list[str]:
    return sorted(LineWebhookEvent.objects.values_list("webhook_event_id", flat=True))


def in_request_threads(work: Callable[[Any], Any], items: list, threads: int) -> list:
    """`work(item)` for every item from `threads` threads at once, results in order. Like a web
    process's request threads, each keeps its connection to the writer from one request to the next;
    it closes it, and its database connection, when done."""
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    next_index = iter(range(len(items)))
    lock = threading.Lock()

    def run() -> None:
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                results[index] = work(items[index])
        except BaseException as exc:
            errors.append(exc)
        finally:
            event_writer._client.close()
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not errors, errors
    return results


# --- storing through the writer -------------------------------------------------------------------------


def test_concurrent_webhooks_are_stored_by_the_writer_each_event_once_and_queued_once(
    line_account, writer, rounds, fallback, enqueued, settings
):
    """Forty requests from sixteen threads at once, ten of them repeating another's event."""
    settings.LINE_WEBHOOK_STORE_TIMEOUT = 10  # correctness here, not speed: a slow machine is no fallback
    payloads = [load_payload("message_text__user", fresh=True) for _ in range(30)]
    payloads += payloads[:10]

    responses = in_request_threads(
        lambda payload: post_webhook(Client(), line_account, payload), payloads, 16
    )

    assert [r.status_code for r in responses] == [200] * 40
    assert sum(r.json()["stored"] for r in responses) == 30
    assert sum(r.json()["duplicates"] for r in responses) == 10
    assert stored_ids() == sorted(i for payload in payloads[:30] for i in event_ids(payload))
    assert sum(rounds) == 40  # every request was stored by the writer...
    assert fallback == []  # ...and none by this process
    writer.stop()  # queueing happens after the answer; a stopping writer finishes it
    assert sorted(pk for call in enqueued for pk in call) == sorted(
        LineWebhookEvent.objects.values_list("pk", flat=True)
    )


def test_an_event_stored_by_the_writer_keeps_every_column_as_the_web_process_made_it(
    line_account, writer, rounds
):
    payload = load_payload("message_text__user", fresh=True)
    payload["events"][0]["message"]["text"] = "こんにちは、注文番号 #42 の件です 🙏"
    expected = event_row(account_id=line_account.pk, event=payload["events"][0])

    response = post_webhook(Client(), line_account, payload)

    assert response.json() == {"status": "ok", "stored": 1, "duplicates": 0}
    assert rounds == [1]
    event = LineWebhookEvent.objects.get()
    assert {name: getattr(event, name) for name in expected} == expected


def test_events_the_writer_already_stored_come_back_as_duplicates(line_account, writer, rounds):
    first = load_payload("message_text__user", fresh=True)
    post_webhook(Client(), line_account, first)
    second = load_payload("message_text__user", fresh=True)
    second["events"].insert(0, first["events"][0])

    response = post_webhook(Client(), line_account, second)

    assert response.json() == {"status": "ok", "stored": 1, "duplicates": 1}
    assert rounds == [1, 1]
    assert LineWebhookEvent.objects.count() == 2


# --- no writer, or one that fails -----------------------------------------------------------------------


@pytest.mark.parametrize("socket_file", ["missing", "stale"])
def test_without_a_writer_listening_webhooks_are_stored_by_the_web_process(
    line_account, short_dir, settings, fallback, socket_file
):
    path = short_dir / "writer.sock"
    if socket_file == "stale":  # left by a writer that was killed: nobody listens behind it
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
        assert stat.S_ISSOCK(path.stat().st_mode)
    settings.LINE_WEBHOOK_WRITER_SOCKET = str(path)
    payloads = [load_payload("message_text__user", fresh=True) for _ in range(2)]

    responses = [post_webhook(Client(), line_account, payload) for payload in payloads]

    assert [r.status_code for r in responses] == [200, 200]
    assert [r.json()["stored"] for r in responses] == [1, 1]
    assert stored_ids() == sorted(i for payload in payloads for i in event_ids(payload))
    assert len(fallback) == 2


def test_after_a_failed_connection_the_web_process_stores_by_itself_for_a_while_then_uses_the_writer(
    line_account, short_dir, settings, start_writer, rounds, fallback, monkeypatch
):
    monkeypatch.setattr(event_writer, "RECONNECT_AFTER_SECONDS", 1.5)
    path = short_dir / "writer.sock"
    settings.LINE_WEBHOOK_WRITER_SOCKET = str(path)
    started = time.monotonic()
    post_webhook(Client(), line_account, load_payload("message_text__user", fresh=True))  # not there
    failed_at = time.monotonic()
    start_writer(path)

    meanwhile = post_webhook(Client(), line_account, load_payload("message_text__user", fresh=True))
    assert time.monotonic() - started < 1.5, "too slow to see the pause: the test proves nothing"
    time.sleep(max(0.0, failed_at + 1.6 - time.monotonic()))
    later = post_webhook(Client(), line_account, load_payload("message_text__user", fresh=True))

    assert (meanwhile.status_code, later.status_code) == (200, 200)
    assert len(fallback) == 2  # the first request and the one meanwhile
    assert rounds == [1]  # the one after the pause
    assert LineWebhookEvent.objects.count() == 3


def test_a_writer_that_dies_mid_request_leaves_the_event_to_the_web_process(
    line_account, fake_writer, fallback
):
    fake = fake_writer("close")
    payload = load_payload("message_text__user", fresh=True)

    response = post_webhook(Client(), line_account, payload)

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert fake.requests[0]["account_id"] == str(line_account.pk)
    assert [event["webhookEventId"] for event in fake.requests[0]["events"]] == event_ids(payload)
    assert len(fallback) == 1
    assert stored_ids() == event_ids(payload)


def test_a_writer_that_does_not_answer_in_time_gets_503_and_the_redelivery_is_stored(
    line_account, fake_writer, fallback, settings, start_writer
):
    settings.LINE_WEBHOOK_STORE_TIMEOUT = 0.3
    fake = fake_writer("silent")
    payload = load_payload("message_text__user", fresh=True)

    started = time.monotonic()
    response = post_webhook(Client(), line_account, payload)
    waited = time.monotonic() - started

    assert response.status_code == 503
    assert 0.3 <= waited < 1.3
    assert len(fake.requests) == 1  # it was sent, and not stored by this process meanwhile
    assert fallback == []
    assert LineWebhookEvent.objects.count() == 0

    settings.LINE_WEBHOOK_WRITER_SOCKET = str(start_writer().path)  # the writer is back
    redelivery = json.loads(json.dumps(payload))
    redelivery["events"][0]["deliveryContext"]["isRedelivery"] = True
    response = post_webhook(Client(), line_account, redelivery)

    assert response.json() == {"status": "ok", "stored": 1, "duplicates": 0}
    assert stored_ids() == event_ids(payload)


def test_a_writer_that_goes_away_late_leaves_no_time_to_store_here_and_the_answer_keeps_the_limit(
    line_account, fake_writer, fallback, settings
):
    """The store timeout is the whole request's: a writer that goes away after most of it is not
    followed by a second full wait in the web process (LINE gives up after 2 s)."""
    settings.LINE_WEBHOOK_STORE_TIMEOUT = 1.0
    fake_writer("close late")  # reads the request, closes 0.9 s later

    started = time.monotonic()
    response = post_webhook(Client(), line_account, load_payload("message_text__user", fresh=True))
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert elapsed < 1.4
    assert fallback == []
    assert LineWebhookEvent.objects.count() == 0


def test_a_writer_that_answers_an_error_gets_503(line_account, fake_writer, fallback):
    fake = fake_writer("error")

    response = post_webhook(Client(), line_account, load_payload("message_text__user", fresh=True))

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert len(fake.requests) == 1
    assert fallback == []
    assert LineWebhookEvent.objects.count() == 0


def test_a_request_the_database_refuses_gets_the_error_and_the_other_of_its_round_its_keys(
    line_account, writer, enqueued, monkeypatch, settings
):
    """Three connections: the first request's round is held (a spy around the real store waits) while
    the other two are sent, so that the writer reads them together and stores them in one round."""
    gone = MessagingAccount(pk=uuid.uuid4(), name="deleted meanwhile")  # never saved: the FK fails

    entered, release = threading.Event(), threading.Event()
    batches: list[list[list[dict]]] = []
    store = event_writer.events_store_batch

    def held_store(batch):
        batches.append([pending.rows for pending in batch])
        if len(batches) == 1:
            entered.set()
            release.wait(5)
        return store(batch)

    monkeypatch.setattr(event_writer, "events_store_batch", held_store)
    settings.LINE_WEBHOOK_STORE_TIMEOUT = 10
    (good_request, good_id), (bad_request, bad_id) = new_request(line_account), new_request(gone)
    first: list = []
    first_request = threading.Thread(
        target=lambda: first.extend(in_request_threads(store_by_writer, [new_request(line_account)[0]], 1))
    )
    first_request.start()
    assert entered.wait(5)
    good, bad = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
    try:
        for sock, request in ((good, good_request), (bad, bad_request)):
            sock.settimeout(10)
            sock.connect(str(writer.path))
            sock.sendall(request_frame(**request))
        release.set()
        good_answer, bad_answer = receive_frame(good), receive_frame(bad)
    finally:
        release.set()
        good.close()
        bad.close()
    first_request.join(10)
    ((first_pk,),) = first

    assert [len(batch) for batch in batches] == [1, 2]
    assert sorted(rows[0]["webhook_event_id"] for rows in batches[1]) == sorted([good_id, bad_id])
    assert set(bad_answer) == {"error"} and "IntegrityError" in bad_answer["error"]
    assert set(good_answer) == {"pks"}
    (good_pk,) = good_answer["pks"]
    assert LineWebhookEvent.objects.get(pk=good_pk).webhook_event_id == good_id
    assert LineWebhookEvent.objects.count() == 2

    with pytest.raises(DatabaseError, match="IntegrityError"):
        store_by_writer(new_request(gone)[0])  # the web process's client turns the answer into an error
    writer.stop()
    assert sorted(pk for call in enqueued for pk in call) == sorted([first_pk, good_pk])


def test_a_web_process_whose_connection_the_restarted_writer_closed_stores_through_the_new_one(
    line_account, writer, start_writer, rounds, fallback
):
    client = Client()  # every request from this thread, which keeps its connection to the writer
    before = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert rounds == [1]
    writer.stop()
    start_writer(writer.path)

    after = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))

    assert (before.status_code, after.status_code) == (200, 200)
    assert after.json()["stored"] == 1
    assert rounds == [1, 1]  # stored by the new writer...
    assert fallback == []  # ...not by this process
    assert LineWebhookEvent.objects.count() == 2


# --- starting and stopping ------------------------------------------------------------------------------


def serve_failure(server: EventWriterServer) -> BaseException | None:
    """Run serve(), which should refuse to start; one that starts anyway is stopped (no exception)."""
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(2)
    if thread.is_alive():
        server.stop()
        thread.join(5)
    return errors[0] if errors else None


def test_a_second_writer_on_the_same_socket_refuses_to_start_and_the_first_keeps_serving(
    line_account, writer, rounds
):
    error = serve_failure(EventWriterServer(writer.path))

    assert isinstance(error, RuntimeError)
    assert "another LINE event writer is listening" in str(error)
    assert stat.S_ISSOCK(writer.path.stat().st_mode)  # its socket left in place
    (pk,) = store_by_writer(new_request(line_account)[0])
    assert rounds == [1]
    assert LineWebhookEvent.objects.filter(pk=pk).exists()


def test_a_socket_file_left_by_a_dead_writer_is_replaced(line_account, short_dir, settings, start_writer):
    path = short_dir / "writer.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    settings.LINE_WEBHOOK_WRITER_SOCKET = str(path)

    start_writer(path)
    request, event_id = new_request(line_account)
    (pk,) = store_by_writer(request)

    assert LineWebhookEvent.objects.get(pk=pk).webhook_event_id == event_id


@pytest.mark.django_db(transaction=False)
def test_a_file_that_is_not_a_socket_is_refused_and_left_alone(short_dir):
    path = short_dir / "db.sqlite3"  # LINE_WEBHOOK_WRITER_SOCKET set to the wrong file by mistake
    path.write_bytes(b"precious")

    error = serve_failure(EventWriterServer(path))

    assert isinstance(error, ValueError)
    assert "not a socket" in str(error)
    assert path.read_bytes() == b"precious"


@pytest.mark.django_db(transaction=False)
def test_a_socket_folder_others_can_write_to_is_refused(short_dir):
    """Whoever can write there could put a socket of their own in the writer's place."""
    short_dir.chmod(0o777)

    error = serve_failure(EventWriterServer(short_dir / "writer.sock"))

    assert isinstance(error, ValueError)
    assert "not be writable by others" in str(error)
    assert not (short_dir / "writer.sock").exists()


def test_a_body_that_breaks_the_parser_gets_an_error_and_the_writer_serves_on(line_account, writer):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(writer.path))
        sock.sendall(request_frame(account_id=line_account.pk, body=b"[" * 200_000))  # RecursionError
        answer = receive_frame(sock)

    request, event_id = new_request(line_account)
    (pk,) = store_by_writer(request)

    assert answer["error"].startswith("unreadable request")
    assert LineWebhookEvent.objects.get(pk=pk).webhook_event_id == event_id


@pytest.mark.django_db(transaction=False)
def test_a_socket_path_too_long_for_every_platform_is_refused_naming_the_setting(short_dir):
    # 104 bytes: Linux would bind it (108), macOS would not (104 with the terminating NUL).
    path = short_dir / ("x" * (104 - len(os.fsencode(short_dir)) - 1))
    assert len(os.fsencode(path)) == 104

    error = serve_failure(EventWriterServer(path))

    assert isinstance(error, ValueError)
    assert "LINE_WEBHOOK_WRITER_SOCKET" in str(error)
    assert not path.exists()


def test_the_socket_is_this_users_only_and_removed_when_the_writer_stops(start_writer):
    umask = os.umask(0o022)  # a usual umask, under which a socket would be group- and world-usable
    try:
        running = start_writer()
        mode = running.path.stat().st_mode
        umask_after = os.umask(0o022)
    finally:
        os.umask(umask)

    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert umask_after == 0o022  # the process's umask is back as it was
    running.stop()
    assert not running.path.exists()


def test_the_writer_stores_nothing_it_cannot_read_and_answers_with_an_error(writer, rounds):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(writer.path))
        sock.sendall(frame({"events": []}))  # JSON, without the account's ID
        answer = receive_frame(sock)
        sock.sendall(request_frame(account_id=uuid.uuid4(), body=b'{"events": []}'))  # still serves
        empty = receive_frame(sock)

    assert answer["error"].startswith("unreadable request")
    assert empty == {"pks": []}
    assert LineWebhookEvent.objects.count() == 0


@pytest.mark.django_db(transaction=False)
def test_a_writer_that_is_not_configured_is_unavailable(settings):
    settings.LINE_WEBHOOK_WRITER_SOCKET = ""
    with pytest.raises(WriterUnavailable):
        events_store_by_writer(account_id=uuid.uuid4(), body=b'{"events": []}')


# --- the management command -----------------------------------------------------------------------------


def listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def test_the_command_stores_webhooks_on_the_configured_database_and_stops_cleanly_on_sigterm(
    line_account, short_dir, settings, fallback
):
    """A real `manage.py line_event_writer` process on the test database. Its Celery broker is a
    filesystem one of its own, which no worker reads: its queued tasks are counted there."""
    path = short_dir / "writer.sock"
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(connection.settings_dict),
        "VAR_DIR": str(short_dir / "var"),
        "CELERY_BROKER_URL": "filesystem://",
    }
    command = [sys.executable, "manage.py", "line_event_writer"]
    refused = subprocess.Popen(
        [*command, "--socket", ""], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process = subprocess.Popen(
        [*command, "--socket", str(path)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: listening(path) or process.poll() is not None, timeout=30, message="the writer")
        assert process.poll() is None, process.communicate()
        settings.LINE_WEBHOOK_WRITER_SOCKET = str(path)
        payload = load_payload("message_text__user", fresh=True)

        response = post_webhook(Client(), line_account, payload)

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        for child in (process, refused):
            if child.poll() is None:
                child.kill()
    _, refused_err = refused.communicate(timeout=30)

    assert response.json() == {"status": "ok", "stored": 1, "duplicates": 0}
    assert fallback == []  # the command's process stored it
    assert stored_ids() == event_ids(payload)
    assert process.returncode == 0, err
    assert f"LINE event writer listening on {path}" in (out + err).decode()
    assert not path.exists()
    assert len(list((short_dir / "var" / "broker" / "queue").iterdir())) == 1  # its processing queued
    assert refused.returncode != 0
    assert "LINE_WEBHOOK_WRITER_SOCKET is empty" in refused_err.decode()


def test_on_postgresql_a_statement_stuck_on_a_lock_gives_up_instead_of_holding_the_writer(
    line_account, writer, settings
):
    """A statement of the writer's waits at most LINE_WEBHOOK_STORE_TIMEOUT: without that, one lock
    held elsewhere (or a lost network) would hold every web process's requests behind it."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL statement timeout; SQLite writers wait on the write lock's own timeout")
    import psycopg

    settings.LINE_WEBHOOK_STORE_TIMEOUT = 0.5
    db = connection.settings_dict
    blocker = psycopg.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or None
    )
    try:
        blocker.execute(f"LOCK TABLE {LineWebhookEvent._meta.db_table} IN EXCLUSIVE MODE")
        stuck, stuck_id = new_request(line_account)
        with pytest.raises((TimeoutError, DatabaseError)):
            store_by_writer(stuck)
        time.sleep(0.6)  # the writer's statement has given up by now
    finally:
        blocker.rollback()
        blocker.close()
    later, later_id = new_request(line_account)
    (pk,) = store_by_writer(later)

    assert LineWebhookEvent.objects.get(pk=pk).webhook_event_id == later_id
    # Given up, not merely late: the stuck INSERT did not go through once the lock was released.
    assert not LineWebhookEvent.objects.filter(webhook_event_id=stuck_id).exists()
