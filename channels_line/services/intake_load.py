"""Event processing gives way to the webhook intake while the intake is saturated (same host only).

LINE waits for the webhook's answer (2 seconds at most, then it counts a failure and redelivers);
nobody waits for an event's processing to the millisecond. When the web processes, the event writer
and the Celery workers share a machine's cores, a worker processing a burst's events as fast as it
can takes the CPU (and on SQLite the write lock) that the webhook needs to answer: measured on two
cores, the intake's throughput fell from 0.61-0.64 of a trivial view's to 0.35-0.41
(docs/BENCHMARKS.md). So the web processes say when webhook requests pile up in them, and workers
on the same host wait before their next transaction while they do, for at most
LINE_PROCESSING_YIELD_SECONDS each time: processing never stops, it slows down to about a
transaction per second per worker process for the length of the burst, and catches up after. At a
steady load the host can carry (200 requests/s on two cores) nothing waits.

The signal is a file (LINE_INTAKE_BUSY_FILE) whose modification time a web process moves forward,
at most every WINDOW_SECONDS, when it had SATURATED_IN_FLIGHT or more webhook requests in progress
on average over the last window. Workers on another host do not see the file, and need not: they
take nothing from this host's intake.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

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
        now = self._clock()
        with self._lock:
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
            os.utime(self.path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):  # its folder is gone: nobody to tell
                self.path.touch(mode=0o600)
        except OSError:
            pass


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
    except OSError:
        return False
    return 0 <= time.time() - marked < FRESH_SECONDS


def yield_to_intake() -> float:
    """Wait while this host's webhook intake is saturated, at most LINE_PROCESSING_YIELD_SECONDS;
    returns the seconds waited. Called by event processing before each transaction, never inside."""
    limit = settings.LINE_PROCESSING_YIELD_SECONDS
    if limit <= 0 or not intake_saturated():
        return 0.0
    started = time.monotonic()
    deadline = started + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(POLL_SECONDS, remaining))
        if not intake_saturated():
            break
    return time.monotonic() - started
