"""Webhook load benchmark, against the server that `make run` starts.

    .venv/bin/python bench/webhook_load.py [--base-url http://127.0.0.1:8000] [--seconds 10]

Phases, all in one run so that the machine's noise hits them alike:
1. baseline: GET /healthz (a trivial Django view, same server, same workers), closed loop;
2. intake: signed LINE webhook POSTs (one new text event each), closed loop, same concurrency; then
   waits until the worker has processed that backlog;
3. paced: signed webhook POSTs at a fixed rate (default 100 requests/s; `--rates 100,200,300` for
   several phases), answer latency percentiles, and inbound-to-processed latency (from the moment a
   request was sent to the moment the worker committed its message), each phase after the last one
   has drained;
4. checks that every event sent is stored and processed exactly once (some events are deliberately
   sent twice, as redeliveries).

It creates (or reuses) a messaging account named "Benchmark" through the product's own service,
reading the same settings as the server (ENV_FILE, default var/local.env). Only loopback is used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("ENV_FILE", str(BASE_DIR / "var" / "local.env"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self, latency: float, status: int, event_id: str | None = None, sent: float | None = None
    ) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if event_id and sent is not None and status == 200:
                self.sent_at.setdefault(event_id, sent)


# The commands of the server `make run` starts (Procfile.dev); a test suite's worker runs
# `python -m celery ...` and does not match.
SERVER_COMMANDS = {"web": "bin/gunicorn omnichannel.wsgi", "worker": "bin/celery -A omnichannel worker"}


def server_pids(command: str) -> list[int]:
    """The processes whose command line contains `command` and that run from this checkout (their
    working directory): the server `make run` started here, not another checkout's nor a test run's."""
    found = subprocess.run(["pgrep", "-f", command], capture_output=True, text=True)
    pids = []
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cwd").resolve() == BASE_DIR:
                pids.append(int(pid))
    return pids


def cpu_seconds(command: str) -> float:
    """CPU time used so far by this checkout's server processes whose command line contains
    `command`: what a phase cost the server, whatever share of the shared machine it got."""
    ticks = 0
    for pid in server_pids(command):
        with contextlib.suppress(OSError):
            # /proc/PID/stat: utime and stime are the 14th and 15th fields, the 12th and 13th after
            # the command name (which may hold spaces, in parentheses).
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_pids() -> list[int]:
    """The Celery worker processes of this checkout's server (parent and pool)."""
    return server_pids(SERVER_COMMANDS["worker"])


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_account() -> tuple[str, str, str]:
    """(account id, channel secret, bot user id) of the Benchmark account, created when missing."""
    import django

    django.setup()
    from channels_line.services import line_account_create
    from omnichannel.models import MessagingAccount

    account = MessagingAccount.objects.select_related("line").filter(name="Benchmark").first()
    if account is None:
        account = line_account_create(
            name="Benchmark",
            channel_id=str(random.randint(10**9, 2 * 10**9)),
            channel_secret=secrets.token_hex(16),
            channel_access_token=secrets.token_urlsafe(48),
        )
    statistics_refresh()
    return (
        str(account.pk),
        account.line.channel_secret,
        "U" + account.pk.hex,
    )


def statistics_refresh() -> None:
    """On PostgreSQL, ANALYZE the database before the timed phases, as a production server's
    autovacuum keeps doing: a database never analyzed has no statistics for the planner (this
    machine's server runs with autovacuum off), and the claim of event processing then took 24 ms
    instead of 1 (docs/BENCHMARKS.md)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def message_id(event_id: str) -> str:
    """The LINE message ID the benchmark gives the message of an event (digits, as LINE's are)."""
    return str(int(event_id[:14], 16))


class WebhookBody:
    """Signed webhook bodies, each with one new text event. `prepare` makes them ahead of a timed
    phase, so that the load generator (on the same cores as the server) spends no more per webhook
    request than per /healthz request; `new` makes more on the spot if they run out."""

    def __init__(self, secret: str, destination: str, users: int) -> None:
        self.secret = secret.encode()
        self.destination = destination
        self.users = ["U" + secrets.token_hex(16) for _ in range(users)]
        self.ready: list[tuple[str, bytes, str]] = []
        self.lock = threading.Lock()

    def prepare(self, count: int) -> None:
        self.ready = [self.make() for _ in range(count)]

    def new(self) -> tuple[str, bytes, str]:
        with self.lock:
            if self.ready:
                return self.ready.pop()
        return self.make()

    def make(self) -> tuple[str, bytes, str]:
        event_id = uuid.uuid4().hex[:26].upper()
        event = {
            "type": "message",
            "mode": "active",
            "timestamp": int(time.time() * 1000),
            "source": {"type": "user", "userId": random.choice(self.users)},
            "webhookEventId": event_id,
            "deliveryContext": {"isRedelivery": False},
            "replyToken": secrets.token_hex(16),
            "message": {
                "id": message_id(event_id),
                "type": "text",
                "text": "こんにちは, load test",
                "quoteToken": secrets.token_urlsafe(16),
            },
        }
        body = json.dumps(
            {"destination": self.destination, "events": [event]}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        return event_id, body, self.sign(body)

    def sign(self, body: bytes) -> str:
        return base64.b64encode(hmac.new(self.secret, body, hashlib.sha256).digest()).decode()


class Connection:
    """One keep-alive HTTP connection per client thread; reopened after an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def send(self, sample: Sample, make_request, started: float | None = None) -> None:
        """Send one request; its latency counts from `started` (default: now)."""
        method, path, body, headers, event_id = make_request()
        start = time.perf_counter() if started is None else started
        wall = time.time()
        status = 0
        # A kept-alive connection the server closed while idle (gunicorn's keep-alive is 2 s: at low
        # rates each thread waits longer than that) fails at once: send again on a fresh one, as any
        # HTTP client does (LINE too). A second failure counts (status 0).
        for _ in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sample.add(time.perf_counter() - start, status, event_id, wall)


def run_threads(workers: int, target) -> float:
    threads = [threading.Thread(target=target) for _ in range(workers)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - begin


def closed_loop(host: str, port: int, seconds: float, workers: int, make_request) -> tuple[Sample, float]:
    """Each thread sends its next request as soon as the previous one is answered."""
    sample = Sample()
    deadline = time.perf_counter() + seconds

    def run() -> None:
        connection = Connection(host, port)
        while time.perf_counter() < deadline:
            connection.send(sample, make_request)
        connection.conn.close()

    return sample, run_threads(workers, run)


def paced(host: str, port: int, seconds: float, rate: float, workers: int, make_request) -> Sample:
    """Open loop: request i is due at start + i/rate, whatever happened to the others. Latency counts
    from the due time, so a server that falls behind shows it (no coordinated omission)."""
    sample = Sample()
    start = time.perf_counter() + 0.1
    counter = iter(range(int(seconds * rate)))
    lock = threading.Lock()

    def run() -> None:
        connection = Connection(host, port)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            connection.send(sample, make_request, started=due)
        connection.conn.close()

    run_threads(workers, run)
    return sample


def report(name: str, sample: Sample, elapsed: float | None = None) -> dict:
    ms = [x * 1000 for x in sample.latencies]
    row = {
        "phase": name,
        "requests": len(ms),
        "rps": round(len(ms) / elapsed, 1) if elapsed else None,
        "p50_ms": round(percentile(ms, 0.50), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "statuses": sample.statuses,
    }
    print(json.dumps(row))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0, help="the paced phase's rate (requests/s)")
    parser.add_argument(
        "--rates",
        default="",
        help="several paced phases, e.g. 100,150,200: each reports its inbound-to-processed p95, and the "
        "run reports the highest rate whose p95 stayed under 1 s",
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--redeliveries", type=float, default=0.05, help="share of events sent twice")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--paced-only",
        action="store_true",
        help="only the paced phases: answer and inbound-to-processed latency at steady rates",
    )
    parser.add_argument(
        "--pause-worker",
        action="store_true",
        help="stop the Celery worker processes (SIGSTOP) during the closed loop and resume them for its "
        "drain: measures the intake alone, as during a burst the worker has not caught up with",
    )
    args = parser.parse_args()

    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("this benchmark only targets loopback")

    account_id, secret, destination = bench_account()
    bodies = WebhookBody(secret, destination, args.users)
    webhook_path = f"/webhooks/line/{account_id}/"
    redelivered: list[tuple[bytes, str]] = []

    def webhook_request():
        if redelivered and random.random() < args.redeliveries:
            body, signature = random.choice(redelivered)
            return (
                "POST",
                webhook_path,
                body,
                {"Content-Type": "application/json", "x-line-signature": signature},
                None,
            )
        event_id, body, signature = bodies.new()
        if len(redelivered) < 1000:
            redelivered.append((body, signature))
        return (
            "POST",
            webhook_path,
            body,
            {"Content-Type": "application/json", "x-line-signature": signature},
            event_id,
        )

    def healthz_request():
        return "GET", "/healthz", None, {}, None

    from django.db.models import Max, Min

    from channels_line.models import EventState, LineWebhookEvent
    from omnichannel.models import Conversation, Message

    # A clean slate for this account: counts below are of this run only. An earlier run's backlog is
    # processed first, or the worker would still be writing into what is being deleted.
    earlier = LineWebhookEvent.objects.filter(messaging_account_id=account_id, state=EventState.PENDING)
    deadline = time.time() + args.drain_timeout
    while earlier.exists() and time.time() < deadline:
        time.sleep(1)
    Conversation.objects.filter(messaging_account_id=account_id).delete()
    LineWebhookEvent.objects.filter(messaging_account_id=account_id).delete()
    events = LineWebhookEvent.objects.filter(messaging_account_id=account_id)

    def drain() -> None:
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline and events.filter(state=EventState.PENDING).exists():
            time.sleep(0.2)

    def to_processed_ms(sent: dict[str, float]) -> list[float]:
        """Inbound-to-processed latency of these events: from the moment the request was sent to
        the moment the worker committed the event's message."""
        processed = dict(
            events.filter(webhook_event_id__in=list(sent)).values_list("webhook_event_id", "processed_at")
        )
        return [(at.timestamp() - sent[event_id]) * 1000 for event_id, at in processed.items() if at]

    rates = [float(rate) for rate in args.rates.split(",")] if args.rates else [args.rate]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} base={args.base_url} seconds={args.seconds} "
        f"pause_worker={args.pause_worker} concurrency={args.concurrency} rates={rates} "
        f"cores={os.cpu_count()}"
    )
    workers = worker_pids() if args.pause_worker else []
    closed_loop(host, port, 2, args.concurrency, healthz_request)  # warm-up
    rows: list[dict] = []
    sent: dict[str, float] = {}
    base_row = intake_row = None
    if not args.paced_only:
        signal_all(workers, signal.SIGSTOP)
        baseline, baseline_elapsed = closed_loop(host, port, args.seconds, args.concurrency, healthz_request)
        base_row = report("baseline GET /healthz", baseline, baseline_elapsed)
        bodies.prepare(int(base_row["rps"] * args.seconds * 1.2))
        intake, intake_elapsed = closed_loop(host, port, args.seconds, args.concurrency, webhook_request)
        intake_row = report("intake POST webhook (closed loop)", intake, intake_elapsed)
        signal_all(workers, signal.SIGCONT)
        drain_started = time.time()
        drain()
        print(
            json.dumps(
                {"phase": "closed-loop backlog drained", "seconds": round(time.time() - drain_started, 1)}
            )
        )
        rows += [base_row, intake_row]
        sent.update(intake.sent_at)

    steady: list[dict] = []
    for rate in rates:
        bodies.prepare(int(rate * args.seconds))
        sample = paced(host, port, args.seconds, rate, max(args.concurrency, 32), webhook_request)
        row = report(f"intake POST webhook at {rate:g}/s", sample)
        drain()
        latencies = to_processed_ms(sample.sent_at)
        processed = {
            "rate": rate,
            "answer_p99_ms": row["p99_ms"],
            "inbound_to_processed_p50_ms": round(percentile(latencies, 0.50), 1),
            "inbound_to_processed_p95_ms": round(percentile(latencies, 0.95), 1),
            "inbound_to_processed_p99_ms": round(percentile(latencies, 0.99), 1),
        }
        print(json.dumps(processed))
        steady.append(processed)
        rows.append(row)
        sent.update(sample.sent_at)

    drain()
    stored = dict(events.values_list("webhook_event_id", "processed_at"))
    # Messages of this run's events only, by their message IDs: anything else in the account (an
    # earlier run's stragglers) does not count.
    wanted = {message_id(event_id) for event_id in sent}
    copies = Counter(
        external_id
        for external_id in Message.objects.filter(conversation__messaging_account_id=account_id).values_list(
            "external_id", flat=True
        )
        if external_id in wanted
    )
    window = events.aggregate(first=Min("received_at"), last=Max("processed_at"))
    under_1s = [row["rate"] for row in steady if row["inbound_to_processed_p95_ms"] < 1000]
    result = {
        "ratio_intake_vs_baseline_rps": round(intake_row["rps"] / base_row["rps"], 3) if base_row else None,
        "events_acknowledged": len(sent),
        "events_stored": len(stored),
        "messages_stored": sum(copies.values()),
        "lost": len(set(sent) - set(stored)),
        "duplicated": sum(n - 1 for n in copies.values()),
        "events_without_message": len(set(stored) & set(sent)) - len(copies),
        "highest_rate_with_processed_p95_under_1s": max(under_1s) if under_1s else None,
        "drain_seconds": round((window["last"] - window["first"]).total_seconds(), 1)
        if window["last"]
        else None,
        "max_answer_ms": max(row["max_ms"] for row in rows),
        "no_response_near_2s": max(row["max_ms"] for row in rows) < 1500,
    }
    print(json.dumps(result))
    failed = sum(n for row in rows for status, n in row["statuses"].items() if status != 200)
    if failed:
        print(f"# {failed} requests did not get 200", file=sys.stderr)
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["events_without_message"] == 0
        and result["events_acknowledged"] > 0
        and not failed
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
