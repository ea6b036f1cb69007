"""The embedded SQLite backend's write lock (omnichannel/db/sqlite): writers queue on an OS lock, and
a writer marked `write_priority` (the webhook's group-commit writer) goes before the others."""

from __future__ import annotations

import threading
import time

from omnichannel.db.sqlite.base import DatabaseWrapper


def _wrapper(path, *, priority: bool = False) -> DatabaseWrapper:
    wrapper = DatabaseWrapper(
        {
            "NAME": str(path),
            "ENGINE": "omnichannel.db.sqlite",
            "OPTIONS": {},
            "TIME_ZONE": None,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "USER": "",
            "PASSWORD": "",
            "HOST": "",
            "PORT": "",
            "TEST": {},
        },
        alias=f"lock-test-{id(object())}",
    )
    wrapper.write_priority = priority
    return wrapper


def test_a_worker_running_transaction_after_transaction_lets_a_waiting_webhook_writer_in(tmp_path):
    """Without priority, the worker releasing the lock and asking for it again at once mostly gets
    it back before the waiting webhook writer is even scheduled."""
    database = tmp_path / "db.sqlite3"
    worker = _wrapper(database)
    worker._write_lock_acquire()
    order: list[str] = []

    def webhook_write() -> None:
        webhook = _wrapper(database, priority=True)
        webhook._write_lock_acquire()
        order.append("webhook")
        webhook._write_lock_release()
        webhook._close()

    webhook_thread = threading.Thread(target=webhook_write)
    webhook_thread.start()
    time.sleep(0.1)  # the webhook's writer is waiting
    for _ in range(20):  # twenty short transactions in a row
        worker._write_lock_release()
        worker._write_lock_acquire()
        order.append("worker")
    worker._write_lock_release()
    webhook_thread.join(5)
    worker._close()

    assert order.index("webhook") == 0


def test_writers_without_priority_are_not_held_up_when_no_priority_writer_waits(tmp_path):
    database = tmp_path / "db.sqlite3"
    first, second = _wrapper(database), _wrapper(database)
    first._write_lock_acquire()
    taken = threading.Event()

    def take() -> None:
        second._write_lock_acquire()
        taken.set()
        second._write_lock_release()

    thread = threading.Thread(target=take)
    thread.start()
    assert not taken.wait(0.1)  # one writer at a time
    first._write_lock_release()
    assert taken.wait(2)
    thread.join(2)
    first._close()
    second._close()


def test_a_writer_gives_way_to_waiting_priority_writers_only_for_a_moment(tmp_path):
    """Several webhook writers taking turns could hold their shared announcement without a break;
    the others must still get their turn."""
    import fcntl
    import os

    from omnichannel.db.sqlite.base import PRIORITY_GIVE_WAY_SECONDS

    database = tmp_path / "db.sqlite3"
    writer = _wrapper(database)
    announcement = os.open(f"{database}.writelock.intent", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(announcement, fcntl.LOCK_SH)  # a priority writer waiting, and never done
    try:
        started = time.monotonic()
        writer._write_lock_acquire()
        waited = time.monotonic() - started
        writer._write_lock_release()
    finally:
        fcntl.flock(announcement, fcntl.LOCK_UN)
        os.close(announcement)
        writer._close()
    assert PRIORITY_GIVE_WAY_SECONDS <= waited < PRIORITY_GIVE_WAY_SECONDS + 0.5


def test_a_worker_holding_the_lock_sees_when_a_priority_writer_waits_for_it(tmp_path):
    """Event processing commits early when it does: the webhook's writer waits one event, not a
    whole transaction."""
    database = tmp_path / "db.sqlite3"
    worker = _wrapper(database)
    worker._write_lock_acquire()
    assert not worker.priority_writer_waiting()
    done = threading.Event()

    def webhook_write() -> None:
        webhook = _wrapper(database, priority=True)
        webhook._write_lock_acquire()
        webhook._write_lock_release()
        webhook._close()
        done.set()

    thread = threading.Thread(target=webhook_write)
    thread.start()
    deadline = time.monotonic() + 5
    while not worker.priority_writer_waiting() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.priority_writer_waiting()
    worker._write_lock_release()
    assert done.wait(5)
    thread.join(5)
    worker._write_lock_acquire()
    assert not worker.priority_writer_waiting()  # nobody waits any more
    worker._write_lock_release()
    worker._close()
