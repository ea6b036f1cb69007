"""Webhook intake with open agent pages, against the server that `make run` starts.

    .venv/bin/python bench/live_connections.py [--base-url http://127.0.0.1:8000] [--pages 200]
        [--seconds 10] [--workers 16] [--assigned-share 0.1] [--rounds 1]

Each open agent page holds one live stream (GET /inbox/live/, omnichannel.live). This measures the
webhook intake (signed LINE webhooks, one new text event each, closed loop: as fast as the server
answers) in phases of one run, so that the machine's noise hits them alike: with no page open, then
`--rounds` times with `--pages` live streams open (signed in as the benchmark agent, and half of them
as the benchmark supervisor) followed by one with no page open again. Each phase with pages is
compared with the mean of the phases without pages either side of it (goal, issue 13: within 10 %).

The notice load is the same in every phase: each phase starts with the worker drained (no event of
the account pending), and its webhooks are messages from the customers of a fixed set of existing
conversations: exactly `--assigned-share` of them to conversations assigned to the benchmark agent
(each such message, once processed, is a notice to every page of the agent), the rest to conversations
nobody is assigned (no page hears of them). The bench's own LINE account ("Bench live pages") is in
no channel instance, so nothing is routed and nothing else makes notices (the supervisors' pages are
open but hear nothing). How far the worker gets while the intake runs still varies from phase to
phase, so each phase reports the events processed and the notices received during it, and then
waits for the worker to drain: `chain_rps` is the phase's webhooks per second of intake and drain,
the whole load of the phase (every webhook processed, every notice due received) whatever the split.
Only loopback is used.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import SERVER_COMMANDS, Connection, Sample, WebhookBody, closed_loop, cpu_seconds, report

ACCOUNT_NAME = "Bench live pages"
# A stream whose page went away ends at its next write, the keep-alive at the latest
# (omnichannel.live.KEEPALIVE_SECONDS is 15): pages closed this long ago hold no thread any more.
SETTLE_SECONDS = 16.0
# Pages learn of a committed notice within a poll of the hub (0.25 s) and a write.
DELIVERY_SECONDS = 1.5


def bench_users() -> dict[str, str]:
    """Session cookies of a benchmark agent and a benchmark supervisor (created when missing)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore

    from agents import roles

    cookies = {}
    for username, role in (("bench-agent", roles.AGENT), ("bench-supervisor", roles.SUPERVISOR)):
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_unusable_password()  # no sign-in: the session below is made directly
        user.save()
        user.groups.add(Group.objects.get(name=role))
        # A session as the sign-in page makes it (the benchmark measures the pages, not sign-in).
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies[role] = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
    return cookies


def live_account() -> tuple[str, str, str]:
    """(account id, channel secret, bot user id) of the bench's LINE account, created when missing.
    Sets Django up."""
    import django

    django.setup()
    from channels_line.services import line_account_create
    from omnichannel.models import MessagingAccount

    account = MessagingAccount.objects.select_related("line").filter(name=ACCOUNT_NAME).first()
    if account is None:
        account = line_account_create(
            name=ACCOUNT_NAME,
            channel_id=str(random.randint(10**9, 2 * 10**9)),
            channel_secret=secrets.token_hex(16),
            channel_access_token=secrets.token_urlsafe(48),
        )
    return str(account.pk), account.line.channel_secret, "U" + account.pk.hex


def customers(kind: str, count: int) -> list[str]:
    """LINE user IDs, the same in every run (the account's social profiles do not pile up)."""
    return ["U" + hashlib.sha256(f"bench-live-{kind}-{n}".encode()).hexdigest()[:32] for n in range(count)]


class Webhooks:
    """The signed webhooks of the bench, made ahead of a phase (the load generator shares the cores
    with the server). Of the webhooks made, exactly `share` come from the customers of the agent's
    conversations, spread evenly; the IDs of their events are kept in `to_agent`."""

    def __init__(
        self,
        *,
        secret: str,
        destination: str,
        path: str,
        agent_customers: list[str],
        others: list[str],
        share: float,
    ) -> None:
        self.path = path
        self.agent_bodies, self.other_bodies, self.one_customer = (
            WebhookBody(secret, destination, users=0) for _ in range(3)
        )
        self.agent_bodies.users, self.other_bodies.users = agent_customers, others
        self.share = share
        self.made = 0
        self.to_agent: set[str] = set()
        self.ready: deque[tuple[str, bytes, str]] = deque()
        self.lock = threading.Lock()

    def prepare(self, count: int) -> None:
        with self.lock:
            self.ready = deque(self._make() for _ in range(count))

    def request(self) -> tuple[str, str, bytes, dict[str, str], str]:
        with self.lock:
            event_id, body, signature = self.ready.popleft() if self.ready else self._make()
        headers = {"Content-Type": "application/json", "X-Line-Signature": signature}
        return "POST", self.path, body, headers, event_id

    def _make(self) -> tuple[str, bytes, str]:
        n = self.made
        self.made += 1
        to_agent = int((n + 1) * self.share) > int(n * self.share)
        event_id, body, signature = (self.agent_bodies if to_agent else self.other_bodies).make()
        if to_agent:
            self.to_agent.add(event_id)
        return event_id, body, signature

    def first_contact(self, user_id: str) -> tuple[str, str, bytes, dict[str, str], str]:
        """A webhook from this customer (their conversation opens when it is processed)."""
        self.one_customer.users = [user_id]
        event_id, body, signature = self.one_customer.make()
        headers = {"Content-Type": "application/json", "X-Line-Signature": signature}
        return "POST", self.path, body, headers, event_id


class Streams:
    """Open live streams, each read on its own thread until `close`; counts the notices per role."""

    def __init__(self, host: str, port: int, pages: list[tuple[str, str]]) -> None:
        self.host, self.port = host, port
        self.roles = Counter(role for role, _ in pages)
        self.received: Counter[str] = Counter()
        self.opened = 0
        self.failed = 0
        self.ended_by_server = 0  # a stream the server ended (it overflowed, or reached its age)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: list[http.client.HTTPConnection] = []
        self.threads = [threading.Thread(target=self.read, args=page, daemon=True) for page in pages]

    def open(self, timeout: float = 30.0) -> None:
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.opened + self.failed < len(self.threads):
            time.sleep(0.05)

    def notices(self) -> Counter[str]:
        with self.lock:
            return Counter(self.received)

    def read(self, role: str, cookie: str) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        with self.lock:
            self.connections.append(conn)
        try:
            conn.request("GET", "/inbox/live/", headers={"Cookie": cookie, "Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                raise OSError(f"status {response.status}")
            while not self.stopping.is_set():
                line = response.fp.readline()
                if not line:
                    with self.lock:
                        self.ended_by_server += not self.stopping.is_set()
                    break
                if line.startswith(b"event: ready"):
                    with self.lock:
                        self.opened += 1
                elif line.startswith(b"event: "):
                    with self.lock:
                        self.received[role] += 1
        except (OSError, http.client.HTTPException):
            if not self.stopping.is_set():
                with self.lock:
                    self.failed += 1

    def close(self) -> None:
        self.stopping.set()
        with self.lock:
            for conn in self.connections:
                conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default=os.environ.get("BENCH_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument(
        "--assigned-share",
        type=float,
        default=0.1,
        help="share of the webhooks that are messages to the benchmark agent's conversations",
    )
    parser.add_argument("--agent-conversations", type=int, default=20)
    parser.add_argument("--other-conversations", type=int, default=500)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="phases with pages, each between two phases without"
    )
    args = parser.parse_args()
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("this benchmark only targets loopback")

    account_id, secret, destination = live_account()
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from agents import roles
    from agents.services import agent_profile_for, agent_profile_update
    from channels_line.models import EventState, LineWebhookEvent
    from omnichannel.lifecycle import ASSIGN, CLOSE, conversation_transition
    from omnichannel.models import Conversation, ConversationState

    cookies = bench_users()
    agent = get_user_model().objects.get(username="bench-agent")
    events = LineWebhookEvent.objects.filter(messaging_account_id=account_id)
    conversations = Conversation.objects.filter(messaging_account_id=account_id)

    def drain() -> float:
        """Wait until the worker processed every event of the account; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + args.drain_timeout
        while events.filter(state=EventState.PENDING).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not drain within {args.drain_timeout:g} s")
            time.sleep(0.2)
        return round(time.monotonic() - started, 1)

    # A clean slate: an earlier run's conversations closed (their agent's capacity freed) and deleted.
    drain()
    for conversation in conversations.exclude(state=ConversationState.CLOSED).exclude(assigned_agent=None):
        conversation_transition(conversation=conversation, action=CLOSE)
    conversations.delete()
    events.delete()

    # The conversations: one first message from each customer, then the agent's assigned to her (as a
    # pick or an accepted offer does).
    agent_customers = customers("agent", args.agent_conversations)
    others = customers("other", args.other_conversations)
    webhooks = Webhooks(
        secret=secret,
        destination=destination,
        path=f"/webhooks/line/{account_id}/",
        agent_customers=agent_customers,
        others=others,
        share=args.assigned_share,
    )
    connection, opening = Connection(host, port), Sample()
    for user_id in agent_customers + others:
        connection.send(opening, lambda user_id=user_id: webhooks.first_contact(user_id))
    connection.conn.close()
    if set(opening.statuses) != {200}:
        raise SystemExit(f"first contacts not all accepted: {opening.statuses}")
    drain()
    profile = agent_profile_for(agent)
    agent_profile_update(
        profile=profile,
        actor=None,
        capacity=max(profile.capacity, profile.capacity_used + len(agent_customers)),
    )
    for conversation in conversations.filter(thread_id__in=agent_customers, state=ConversationState.OPEN):
        conversation_transition(conversation=conversation, action=ASSIGN, agent=agent)

    pages = [
        (roles.SUPERVISOR, cookies[roles.SUPERVISOR]) if i % 2 else (roles.AGENT, cookies[roles.AGENT])
        for i in range(args.pages)
    ]
    # The pages opened once and closed: every web process's hub (which reads the notices whether
    # pages are open or not) runs from phase 1 on, as in phase 3.
    warm = Streams(host, port, pages)
    warm.open()
    warm.close()
    time.sleep(SETTLE_SECONDS)

    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} base={args.base_url} pages={args.pages} "
        f"seconds={args.seconds:g} workers={args.workers} assigned_share={args.assigned_share:g} "
        f"load_average={os.getloadavg()[0]:.2f} cores={os.cpu_count()}"
    )

    def phase(name: str, streams: Streams | None) -> dict:
        waited = drain()
        before = streams.notices() if streams else Counter()
        webhooks.prepare(int(args.seconds * 400))
        cpu_before = {name: cpu_seconds(command) for name, command in SERVER_COMMANDS.items()}
        started, loop_started = timezone.now(), time.perf_counter()
        sample, elapsed = closed_loop(host, port, args.seconds, args.workers, webhooks.request)
        ended = timezone.now()
        row = report(name, sample, elapsed)
        during = (streams.notices() - before) if streams else Counter()
        drained = drain()
        chain_seconds = time.perf_counter() - loop_started
        cpu = {name: cpu_seconds(command) - cpu_before[name] for name, command in SERVER_COMMANDS.items()}
        time.sleep(DELIVERY_SECONDS)
        total = (streams.notices() - before) if streams else Counter()
        to_agent = [event_id for event_id in sample.sent_at if event_id in webhooks.to_agent]
        in_phase = events.filter(processed_at__gte=started, processed_at__lte=ended)
        load = {
            "phase": name,
            "started_epoch": round(time.time() - chain_seconds - DELIVERY_SECONDS, 1),
            "drained_before_s": waited,
            "webhooks_accepted": len(sample.sent_at),
            "to_agent_conversations": len(to_agent),
            "events_processed_during_phase": in_phase.count(),
            "to_agent_processed_during_phase": in_phase.filter(webhook_event_id__in=to_agent).count(),
            "drained_after_s": drained,
            # The whole load of the phase (its webhooks processed, their notices sent): per second of
            # intake and drain.
            "chain_rps": round(len(sample.sent_at) / chain_seconds, 1),
            # What the phase's load cost the server's processes (intake, processing, notices).
            "web_cpu_ms_per_webhook": round(cpu["web"] * 1000 / len(sample.sent_at), 2),
            "worker_cpu_ms_per_webhook": round(cpu["worker"] * 1000 / len(sample.sent_at), 2),
            "server_cpu_ms_per_webhook": round(sum(cpu.values()) * 1000 / len(sample.sent_at), 2),
            "notices_received_during_phase": dict(during),
            "notices_received_with_drain": dict(total),
            "notices_due": len(to_agent) * streams.roles[roles.AGENT] if streams else 0,
            "events_failed": events.filter(state=EventState.FAILED).count(),
        }
        print(json.dumps(load))
        return {**row, **load}

    rows = [phase("intake, no page open", None)]
    trouble = Counter()
    for _ in range(args.rounds):
        streams = Streams(host, port, pages)
        streams.open()
        print(json.dumps({"pages_open": streams.opened, "pages_failed": streams.failed}))
        rows.append(phase(f"intake, {streams.opened} pages open", streams))
        trouble.update(
            pages_failed=streams.failed,
            streams_ended_by_server=streams.ended_by_server,
            notices_missed=rows[-1]["notices_due"]
            - rows[-1]["notices_received_with_drain"].get(roles.AGENT, 0),
        )
        streams.close()
        time.sleep(SETTLE_SECONDS)
        rows.append(phase("intake, no page open", None))

    def ratios(key: str) -> list[float]:
        """Each phase with pages against the mean of the phases without pages before and after it."""
        return [
            round(rows[i][key] / ((rows[i - 1][key] + rows[i + 1][key]) / 2), 3)
            for i in range(1, len(rows), 2)
        ]

    with_pages = rows[1::2]
    summary = {
        "rps": [row["rps"] for row in rows],
        "rps_ratio_with_pages": ratios("rps"),
        "chain_rps": [row["chain_rps"] for row in rows],
        "chain_rps_ratio_with_pages": ratios("chain_rps"),
        "events_processed_during_phase": [row["events_processed_during_phase"] for row in rows],
        "notices_received_during_phases_with_pages": [
            sum(row["notices_received_during_phase"].values()) for row in with_pages
        ],
        "notices_received_with_drain": [row["notices_received_with_drain"] for row in with_pages],
        "notices_due": [row["notices_due"] for row in with_pages],
        "server_cpu_ms_per_webhook": [row["server_cpu_ms_per_webhook"] for row in rows],
        "server_cpu_ratio_with_pages": ratios("server_cpu_ms_per_webhook"),
        "p99_ms": [row["p99_ms"] for row in rows],
        "goal_rps_ratio_at_least_0.90": statistics.median(ratios("rps")) >= 0.90,
        **trouble,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return 1 if any(trouble.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
