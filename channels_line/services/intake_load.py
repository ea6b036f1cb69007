"""Event processing gives way to the webhook intake while the intake is saturated (same host only).

LINE waits for the webhook's answer (2 seconds at most, then it counts a failure and redelivers);
nobody waits for an event's processing to the millisecond. When the web processes, the event writer
and the Celery workers share a machine's cores, a worker processing a burst's events as fast as it
can takes the CPU (and on SQLite the write lock) that the webhook needs to answer: measured on two
cores, the intake's throughput fell from 0.61-0.64 of a trivial view's to 0.35-0.41
(docs/BENCHMARKS.md). So the web processes say when webhook requests pile up in them, and workers
on the same host wait before their next transaction while they do, for at most
LINE_PROCESSING_YIELD_SECONDS each time: processing never stops, it slows down to about a
transaction per second per worker process for the length of the burst, and catches up after. Events
received more than LINE_PROCESSING_MAX_LAG_SECONDS ago are processed without waiting, so a burst
that lasts (or load just above what the host can carry) delays processing by that much at most. At
a steady load the host can carry (200 requests/s on two cores) nothing waits. Only signed requests
count: a flood of requests that anyone can send does not slow processing down.

The signal is a file (LINE_INTAKE_BUSY_FILE) whose modification time a web process moves forward,
at most every WINDOW_SECONDS, when it had SATURATED_IN_FLIGHT or more webhook requests in progress
on average over the last window. Workers on another host do not see the file, and need not: they
take nothing from this host's intake.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)

# A web process judges its load over windows of this length.
WINDOW_SECONDS = 0.1
# The average number of webhook requests in progress at once in a web process, over a window, that
# makes it saturated: requests queue for its threads, the CPU or the event writer. Measured on two
# cores (gunicorn, 2 processes x 8 threads): 0-0.5 at a steady 200 requests/s, 1-6 (mostly 3-4) when
# the webhook takes all it can.
SATURATED_IN_FLIGHT = 2.0
# A mark older than this is a burst that ended.
FRESH_SECONDS = 0.3
# How often a waiting worker looks at the mark again.
POLL_SECONDS = 0.05
_sleep = time.sleep  # the waiting itself (tests check that nothing waits)


class IntakeLoadMeter:
    """A web process's side: counts its webhook requests in progress over time (Little's law: the
    arrival rate times the time each takes), and marks the windows in which they were
    SATURATED_IN_FLIGHT or more on average."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last = self._window_started = clock()
        self._request_seconds = 0.0

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        self._change(1)
        try:
            yield
        finally:
            self._change(-1)

    def _change(self, delta: int) -> None:
        with self._lock:
            now = self._clock()
            self._request_seconds += self._in_flight * (now - self._last)
            self._last = now
            self._in_flight += delta
            length = now - self._window_started
            if length < WINDOW_SECONDS:
                return
            saturated = self._request_seconds >= SATURATED_IN_FLIGHT * length
            self._window_started = now
            self._request_seconds = 0.0
        if saturated:
            self._mark()

    def _mark(self) -> None:
        try:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.path.touch(mode=0o600)
        except OSError as exc:
            _warn_once(
                "mark",
                f"LINE intake busy mark {self.path} cannot be written ({exc}): "
                "processing on this host will not give way to webhook bursts",
            )


_meters: dict[str, IntakeLoadMeter] = {}


def webhook_in_flight() -> contextlib.AbstractContextManager[None]:
    """Around a webhook request's work in a web process: feeds this process's load meter."""
    path = settings.LINE_INTAKE_BUSY_FILE
    if not path:
        return contextlib.nullcontext()
    meter = _meters.get(path)
    if meter is None:
        meter = _meters.setdefault(path, IntakeLoadMeter(Path(path)))
    return meter.request()


def intake_saturated() -> bool:
    """Whether a web process of this host was saturated with webhook requests a moment ago."""
    path = settings.LINE_INTAKE_BUSY_FILE
    if not path:
        return False
    try:
        marked = os.stat(path).st_mtime
    except FileNotFoundError:
        return False  # no burst since the web processes started
    except OSError as exc:
        _warn_once(
            "read",
            f"LINE intake busy mark {path} cannot be read ({exc}): processing will not "
            "give way to webhook bursts (the web processes and workers must share the folder)",
        )
        return False
    return 0 <= time.time() - marked < FRESH_SECONDS


_warned: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning(message)


def yield_to_intake(*, oldest_received_at: datetime.datetime | None = None) -> float:
    """Wait while this host's webhook intake is saturated, at most LINE_PROCESSING_YIELD_SECONDS;
    returns the seconds waited. Called by event processing before each transaction. Never waits
    inside a transaction (it would hold its locks, on SQLite the one the webhook needs), nor for
    events received more than LINE_PROCESSING_MAX_LAG_SECONDS ago: a burst that lasts delays
    processing by that much at most, then processing takes its share."""
    limit = settings.LINE_PROCESSING_YIELD_SECONDS
    if limit <= 0 or connection.in_atomic_block:
        return 0.0
    if oldest_received_at is not None:
        lag = (timezone.now() - oldest_received_at).total_seconds()
        if lag > settings.LINE_PROCESSING_MAX_LAG_SECONDS:
            return 0.0
    if not intake_saturated():
        return 0.0
    started = time.monotonic()
    deadline = started + limit
    while (remaining := deadline - time.monotonic()) > 0:
        _sleep(min(POLL_SECONDS, remaining))
        if not intake_saturated():
            break
    return time.monotonic() - started
