"""Live pages: what changed is pushed to the open pages of the people concerned, within a second.

How it works, in both configurations (embedded SQLite and PostgreSQL + Redis), on one path:

1. A change writes a `LiveNotice` row in its own transaction (`publish`; `omnichannel.events.emit`
   does it for the domain events pages show). A notice names its audience: an agent, a
   conversation, a (pick) queue, supervisors. It carries IDs, never content: pages fetch what they
   show through their own views, where the access policy applies.
2. Each web process runs one `Hub` thread that reads new notices in ID order a few times a second
   (one indexed query, whatever the number of open pages) and hands each to the listeners of that
   process whose audience matches.
3. Every open page holds one Server-Sent Events stream (`stream_response`, GET /live/). The browser's
   EventSource reconnects by itself and sends the last ID it received; the stream first replays the
   notices after that ID, so a page that lost its connection misses nothing.

Why a table rather than a message bus: the notice commits with the change or not at all (a page is
never told about something that rolled back, and never misses something that committed), it reaches
every web process whatever the broker (the embedded configuration has no Redis), and catching up
after a reconnection is a read by ID. PostgreSQL hands out IDs before commit, so a notice may commit
after one with a higher ID: the hub's `floor` (the ID below which nothing can still appear) only
moves past a missing ID once it appeared or GAP_WAIT passed (an ID a rolled-back transaction took),
and the ID a page receives with a notice is never above that floor nor the notice's own ID, so a
replay starts below anything late or not yet received (a notice twice is harmless: pages fetch).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db import connection
from django.http import StreamingHttpResponse
from django.utils import timezone

from .models import LiveNotice, Message

logger = logging.getLogger(__name__)

# What pages listen to (the SSE event names; static/inbox/live.js turns each into a DOM event).
MESSAGE = "message"  # a message was added or changed (delivery state, edit, unsend) in a conversation
CONVERSATION = "conversation"  # state, assignment, queue, transfer
OFFER = "offer"  # an offer was made to the agent, or answered, expired, withdrawn
AGENT = "agent"  # presence, capacity
QUEUE = "queue"  # a queue's open items changed
KINDS = (MESSAGE, CONVERSATION, OFFER, AGENT, QUEUE)

POLL_SECONDS = 0.25
# How long a missing ID may still commit (a PostgreSQL transaction that took it is still running).
GAP_WAIT_SECONDS = 5.0
KEEPALIVE_SECONDS = 15.0
# A stream ends after this long (the browser reconnects at once, and replays): long-lived
# responses are spread again over the web processes, and a page's audience is computed afresh.
STREAM_MAX_SECONDS = 300.0
REPLAY_LIMIT = 500
LISTENER_BACKLOG = 1000
# Notices are kept this long: a page away longer reloads everything (it gets "reset").
RETENTION_SECONDS = 3600


def publish(
    kind: str,
    *,
    agent_id: int | None = None,
    conversation_id: int | None = None,
    queue_id: int | None = None,
    supervisors: bool = False,
    **data: object,
) -> None:
    """Tell the pages of this audience that something of `kind` changed; written in the current
    transaction (it rolls back with it)."""
    LiveNotice.objects.create(
        kind=kind,
        agent_id=agent_id,
        conversation_id=conversation_id,
        queue_id=queue_id,
        supervisors=supervisors,
        data=data,
    )


def message_changed(*, message_id: int, conversation_id: int | None = None) -> None:
    """A message's delivery state, content or files changed: the pages showing its conversation
    fetch it again."""
    if conversation_id is None:
        conversation_id = (
            Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True).first()
        )
        if conversation_id is None:
            return
    publish(MESSAGE, conversation_id=conversation_id, message=message_id)


def publish_many(notices: Iterable[LiveNotice]) -> None:
    """Several notices in one statement (the event processing of a worker writes one per message)."""
    LiveNotice.objects.bulk_create(list(notices))


def notices_expired_delete(*, now=None) -> int:
    """Delete notices older than RETENTION_SECONDS (periodic)."""
    cutoff = (now or timezone.now()) - timezone.timedelta(seconds=RETENTION_SECONDS)
    deleted, _ = LiveNotice.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- Listening -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Audience:
    """Whom a page listens for: computed when its stream opens, from the access policy."""

    agent_id: int
    supervisor: bool = False
    conversation_ids: frozenset[int] = frozenset()
    queue_ids: frozenset[int] = frozenset()

    def index_keys(self) -> list[tuple]:
        """What the hub files this audience under (Hub._index): a notice reaches the listeners filed
        under one of its own keys (notice_keys)."""
        return [
            ("agent", self.agent_id),
            *(("conversation", pk) for pk in self.conversation_ids),
            *(("queue", pk) for pk in self.queue_ids),
            *([("supervisors",)] if self.supervisor else []),
        ]

    def wants(self, notice: dict) -> bool:
        return (
            notice["agent_id"] == self.agent_id
            or (notice["conversation_id"] is not None and notice["conversation_id"] in self.conversation_ids)
            or (notice["queue_id"] is not None and notice["queue_id"] in self.queue_ids)
            or (self.supervisor and notice["supervisors"])
        )


@dataclass(eq=False)
class Listener:
    audience: Audience
    items: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=LISTENER_BACKLOG))
    overflowed: bool = False

    def offer(self, item: tuple[int, dict]) -> None:
        try:
            self.items.put_nowait(item)
        except queue.Full:
            self.overflowed = True  # the stream ends; the page reconnects and replays


NOTICE_FIELDS = ("id", "kind", "agent_id", "conversation_id", "queue_id", "supervisors", "data")


def notice_keys(notice: dict) -> list[tuple]:
    """The audience keys a notice names (Audience.index_keys)."""
    keys: list[tuple] = []
    if notice["agent_id"] is not None:
        keys.append(("agent", notice["agent_id"]))
    if notice["conversation_id"] is not None:
        keys.append(("conversation", notice["conversation_id"]))
    if notice["queue_id"] is not None:
        keys.append(("queue", notice["queue_id"]))
    if notice["supervisors"]:
        keys.append(("supervisors",))
    return keys


class Hub:
    """One per web process: reads new notices in ID order and hands them to this process's listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Listeners by audience key: a notice is matched against those it names, not every page.
        self._index: dict[tuple, set[Listener]] = {}
        self._thread: threading.Thread | None = None
        self.floor = 0
        self._seen: set[int] = set()
        self._gaps: dict[int, float] = {}
        self._stopping = threading.Event()

    def cursor(self) -> int:
        """The ID a page rendered now starts listening from: everything up to it is in what it shows."""
        self._ensure_started()
        return self.floor

    def add(self, listener: Listener) -> None:
        self._ensure_started()
        self.file(listener)

    def file(self, listener: Listener) -> None:
        """Hand this listener the notices of its audience from the next read on."""
        with self._lock:
            for key in listener.audience.index_keys():
                self._index.setdefault(key, set()).add(listener)

    def remove(self, listener: Listener) -> None:
        with self._lock:
            for key in listener.audience.index_keys():
                filed = self._index.get(key)
                if filed is not None:
                    filed.discard(listener)
                    if not filed:
                        del self._index[key]

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            # Below a notice GAP_WAIT old, nothing can still commit.
            settled = timezone.now() - timezone.timedelta(seconds=GAP_WAIT_SECONDS)
            self.floor = (
                LiveNotice.objects.filter(created_at__lt=settled)
                .order_by("-id")
                .values_list("id", flat=True)
                .first()
                or 0
            )
            self._seen.clear()
            self._gaps.clear()
            self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop reading (tests; a process that exits needs nothing: the thread is a daemon)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception:
                logger.exception("Live notices could not be read; trying again")
                connection.close()
                self._stopping.wait(1)
        connection.close()

    def poll(self) -> None:
        """Read the notices above the floor once, hand the new ones out, move the floor."""
        rows = list(
            LiveNotice.objects.filter(id__gt=self.floor).order_by("id").values(*NOTICE_FIELDS)[:REPLAY_LIMIT]
        )
        fresh = [row for row in rows if row["id"] not in self._seen]
        self._seen.update(row["id"] for row in fresh)
        floor = self._floor_advance(time.monotonic())
        for row in fresh:
            with self._lock:
                listeners = set().union(*(self._index.get(key, ()) for key in notice_keys(row)))
            for listener in listeners:
                listener.offer((floor, row))
        # Moved only once the notices below it are handed out: a stream that reads it (its
        # keep-alive) has nothing below it still to come.
        self.floor = floor

    def _floor_advance(self, now: float) -> int:
        """The new floor: past every ID seen or waited for long enough."""
        floor = self.floor
        top = max(self._seen, default=floor)
        while floor < top:
            following = floor + 1
            if following in self._seen:
                self._seen.discard(following)
            elif now - self._gaps.setdefault(following, now) < GAP_WAIT_SECONDS:
                break  # may still commit
            self._gaps.pop(following, None)
            floor = following
        return floor


hub = Hub()


def notices_after(*, after: int, audience: Audience) -> tuple[list[dict], bool]:
    """The notices of this audience above `after`, oldest first, and whether there were more than
    REPLAY_LIMIT (the page then reloads everything). One query."""
    rows = list(
        LiveNotice.objects.filter(id__gt=after).order_by("id").values(*NOTICE_FIELDS)[: REPLAY_LIMIT * 4]
    )
    wanted = [row for row in rows if audience.wants(row)]
    truncated = len(rows) == REPLAY_LIMIT * 4 or len(wanted) > REPLAY_LIMIT
    return wanted[:REPLAY_LIMIT], truncated


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _payload(row: dict) -> dict:
    return {
        "notice": row["id"],
        "agent": row["agent_id"],
        "conversation": row["conversation_id"],
        "queue": row["queue_id"],
        **(row["data"] or {}),
    }


def _stream(audience: Audience, after: int | None) -> Iterator[str]:
    listener = Listener(audience=audience)
    hub.add(listener)  # before the replay: what commits meanwhile is queued (a repeat is harmless)
    try:
        # Padding makes proxies and browsers flush at once; retry: how soon the browser reconnects.
        yield ":" + " " * 2048 + "\nretry: 2000\n\n"
        start = hub.floor
        if after is not None and after < start:
            rows, truncated = notices_after(after=after, audience=audience)
            if truncated:
                yield _sse("reset", {}, start)
            else:
                for row in rows:
                    yield _sse(row["kind"], _payload(row), min(start, row["id"]))
        yield _sse("ready", {"cursor": start}, start)
        # Nothing below waits on the database: its connection goes back now, not when the stream ends.
        connection.close()
        ends = time.monotonic() + STREAM_MAX_SECONDS
        while time.monotonic() < ends and not listener.overflowed:
            try:
                batch = [listener.items.get(timeout=KEEPALIVE_SECONDS)]
            except queue.Empty:
                # An ID without data: the browser keeps it as its last ID and fires nothing (a page
                # that hears little does not fall behind the notices kept for a replay).
                yield f"id: {hub.floor}\n\n"
                continue
            # What else the hub handed over meanwhile goes in the same write.
            while len(batch) < LISTENER_BACKLOG:
                try:
                    batch.append(listener.items.get_nowait())
                except queue.Empty:
                    break
            # Not above the notice's own ID: a reconnection replays any notice after it.
            yield "".join(_sse(row["kind"], _payload(row), min(floor, row["id"])) for floor, row in batch)
        if listener.overflowed:
            yield _sse("reset", {}, None)
    finally:
        hub.remove(listener)


def stream_response(*, audience: Audience, after: int | None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_stream(audience, after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
