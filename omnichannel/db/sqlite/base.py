"""SQLite with an operating-system lock around write transactions (the embedded mode's database).

SQLite lets one writer in at a time. A connection that finds the write lock taken waits in
SQLite's busy handler, which sleeps 1, 2, 5, ... up to 100 ms between tries: with the web process
and two workers writing, webhook answers spent most of their time asleep while the lock was free.
Here every write transaction (BEGIN IMMEDIATE) first takes an exclusive flock on a file beside the
database; a waiting connection is woken by the kernel the moment the lock is released. SQLite's
own locking still guards the data: this only makes the wait short. PostgreSQL needs none of it.

Priority writers. flock hands a released lock to any waiter, and a worker running one short
transaction after another mostly takes it straight back: a webhook waiting to store its events
(the one write a caller is waiting on) could wait behind dozens of them. A connection marked
`write_priority` (the webhook's group-commit writer) announces itself with a shared lock on a second
file while it waits; other connections first wait for an exclusive lock on that file, so they let
waiting priority writers go first, for at most PRIORITY_GIVE_WAY_SECONDS."""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from django.db.backends.sqlite3 import base

# The longest a writer without priority waits for waiting priority writers before queueing anyway.
PRIORITY_GIVE_WAY_SECONDS = 0.05


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock_fd: int | None = None
        self._write_intent_fd: int | None = None
        self._write_lock_held = False
        self.write_priority = False

    def _write_lock_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        if self.is_in_memory_db() or not name:
            return None
        return f"{name}.writelock"

    def _write_lock_acquire(self) -> None:
        path = self._write_lock_path()
        if path is None or self._write_lock_held:
            return
        if self._write_lock_fd is None:
            # One open file per connection: flock excludes other connections of this process too.
            self._write_lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            self._write_intent_fd = os.open(f"{path}.intent", os.O_RDWR | os.O_CREAT, 0o600)
        assert self._write_intent_fd is not None
        if self.write_priority:
            fcntl.flock(self._write_intent_fd, fcntl.LOCK_SH)
            try:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self._write_intent_fd, fcntl.LOCK_UN)
        else:
            self._give_way_to_priority_writers()
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
        self._write_lock_held = True

    def _give_way_to_priority_writers(self) -> None:
        """Wait while a priority writer waits, but at most PRIORITY_GIVE_WAY_SECONDS: several
        priority writers take turns holding their shared lock, and would otherwise keep everyone
        else out for as long as the webhook is busy."""
        assert self._write_intent_fd is not None
        deadline = time.monotonic() + PRIORITY_GIVE_WAY_SECONDS
        while True:
            try:
                fcntl.flock(self._write_intent_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.002)
            else:
                fcntl.flock(self._write_intent_fd, fcntl.LOCK_UN)
                return

    def priority_writer_waiting(self) -> bool:
        """Whether a priority writer waits for the write lock this connection holds: a long
        transaction can commit early and let it in."""
        if not self._write_lock_held or self.write_priority or self._write_intent_fd is None:
            return False
        try:
            fcntl.flock(self._write_intent_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._write_intent_fd, fcntl.LOCK_UN)
        return False

    def _write_lock_release(self) -> None:
        if self._write_lock_held and self._write_lock_fd is not None:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        self._write_lock_held = False

    def _start_transaction_under_autocommit(self) -> None:
        self._write_lock_acquire()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._write_lock_release()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._write_lock_release()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._write_lock_release()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._write_lock_release()
            for fd in (self._write_lock_fd, self._write_intent_fd):
                if fd is not None:
                    os.close(fd)
            self._write_lock_fd = self._write_intent_fd = None
