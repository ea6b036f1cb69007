"""What the database needs from the code that writes to it, in one place."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db import OperationalError, connection

# SQLite lets one connection write at a time. Threads that find the lock taken wait in SQLite's busy
# handler, which sleeps 1, 2, 5, 10, ... up to 100 ms between tries: a thread that has waited a while
# keeps being overtaken by newcomers, and in a closed loop of 16 webhook threads some answers took
# 2 s (measured, docs/BENCHMARKS.md). Threads of one process take their turn here instead: a waiter
# is woken as soon as the lock is released. The wait is bounded by the same busy timeout.
_sqlite_write_lock = threading.Lock()


@contextlib.contextmanager
def write_turn() -> Iterator[None]:
    """Around a short write transaction on a busy path: on SQLite, this process's threads write one
    after the other; elsewhere (PostgreSQL locks rows, not the database) it does nothing."""
    if connection.vendor != "sqlite":
        yield
        return
    timeout = float(connection.settings_dict["OPTIONS"].get("timeout", 5))
    if not _sqlite_write_lock.acquire(timeout=timeout):
        raise OperationalError(f"database is locked: no turn to write within {timeout:g} s")
    try:
        yield
    finally:
        _sqlite_write_lock.release()
