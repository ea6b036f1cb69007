"""Webhook intake with open agent pages, against the server that `make run` starts.

    .venv/bin/python bench/live_connections.py [--base-url http://127.0.0.1:8000] [--pages 200]
        [--seconds 10] [--workers 16]

Each open agent page holds one live stream (GET /inbox/live/, omnichannel.live). This measures the
webhook intake (signed LINE webhooks, one new text event each, closed loop: as fast as the server
answers) three times in one run, so that the machine's noise hits them alike:
1. with no page open;
2. with `--pages` live streams open (signed in as a benchmark agent; half of them as a supervisor,
   who hears about every queue and agent change), held for the whole phase;
3. with no page open again (the drift of the machine between phases).
It reports requests/s and latency percentiles of each phase, the ratio of phase 2 to the mean of
phases 1 and 3 (goal: within 10 %), and how many notices the streams received (they do work: every
new conversation is announced to supervisors). Only loopback is used.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import WebhookBody, bench_account, closed_loop, report


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


class Streams:
    """`count` open live streams, each read on its own thread until `close`."""

    def __init__(self, host: str, port: int, cookies: list[str]) -> None:
        self.host, self.port, self.cookies = host, port, cookies
        self.received = 0
        self.opened = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: list[http.client.HTTPConnection] = []
        self.threads = [threading.Thread(target=self.read, args=(c,), daemon=True) for c in cookies]

    def open(self, timeout: float = 30.0) -> None:
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.opened + self.failed < len(self.threads):
            time.sleep(0.05)

    def read(self, cookie: str) -> None:
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
                    break
                if line.startswith(b"event: ready"):
                    with self.lock:
                        self.opened += 1
                elif line.startswith(b"event: "):
                    with self.lock:
                        self.received += 1
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
    args = parser.parse_args()
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    account_id, secret, destination = bench_account()
    cookies = bench_users()
    bodies = WebhookBody(secret, destination, users=500)
    path = f"/webhooks/line/{account_id}/"

    def webhook():
        event_id, body, signature = bodies.new()
        headers = {"Content-Type": "application/json", "X-Line-Signature": signature}
        return "POST", path, body, headers, event_id

    def intake(name: str) -> dict:
        bodies.prepare(int(args.seconds * 400))
        sample, elapsed = closed_loop(host, port, args.seconds, args.workers, webhook)
        return report(name, sample, elapsed)

    first = intake("intake, no page open")
    from agents import roles

    page_cookies = [cookies[roles.SUPERVISOR] if i % 2 else cookies[roles.AGENT] for i in range(args.pages)]
    streams = Streams(host, port, page_cookies)
    streams.open()
    print(json.dumps({"pages_open": streams.opened, "pages_failed": streams.failed}))
    with_pages = intake(f"intake, {streams.opened} pages open")
    time.sleep(2)  # the last notices reach the pages
    received = streams.received
    streams.close()
    last = intake("intake, no page open again")

    without = (first["rps"] + last["rps"]) / 2
    summary = {
        "pages_open": streams.opened,
        "notices_received_by_pages": received,
        "rps_ratio_with_pages": round(with_pages["rps"] / without, 3) if without else None,
        "p99_ms_with_pages": with_pages["p99_ms"],
        "p99_ms_without": round((first["p99_ms"] + last["p99_ms"]) / 2, 1),
        "goal": "rps ratio >= 0.90",
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
