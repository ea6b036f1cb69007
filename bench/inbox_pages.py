"""Inbox page render times with a large database, against the server that `make run` starts.

    .venv/bin/python bench/inbox_pages.py [--base-url http://127.0.0.1:8000] [--conversations 10000]
        [--messages 200000] [--requests 200]

Fills the database (once; later runs reuse it) with `--conversations` conversations and `--messages`
messages on a "Bench pages" LINE account, a few dozen of them assigned to the benchmark agent (as
an agent's day looks), the rest to other agents or closed. Then, in one run so that the machine's
noise hits them alike, it times sequential GETs (loopback; the time is the server's, the client
only reads the answer) of:
1. baseline: /healthz (a trivial Django view, same server);
2. the agent's inbox (/inbox/) and its "my conversations" fragment;
3. the conversation page of the agent's conversation with the longest history (/inbox/c/<id>/).
It reports p50/p95 of each and their ratio to the baseline. Goal (issue 13): p95 under 60 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_connections import bench_users
from webhook_load import percentile

ACCOUNT_NAME = "Bench pages"
GOAL_P95_MS = 60
AGENT_CONVERSATIONS = 40


def fill(conversations: int, messages: int) -> int:
    """The bench data (made once); returns the ID of the agent's longest conversation."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from channels_line.services import line_account_create
    from omnichannel.models import (
        Conversation,
        ConversationState,
        Direction,
        Message,
        MessagingAccount,
        SocialProfile,
    )

    agent = get_user_model().objects.get(username="bench-agent")
    account = MessagingAccount.objects.filter(name=ACCOUNT_NAME).first()
    if account is None:
        account = line_account_create(
            name=ACCOUNT_NAME,
            channel_id=str(random.randint(10**9, 2 * 10**9)),
            channel_secret="0" * 32,
            channel_access_token="bench-token-" + "x" * 40,
        )
    existing = Conversation.objects.filter(messaging_account=account).count()
    if existing < conversations:
        now = timezone.now()
        with transaction.atomic():
            profiles = SocialProfile.objects.bulk_create(
                SocialProfile(
                    messaging_account=account, external_id=f"Ubench{n:027d}", display_name=f"Customer {n}"
                )
                for n in range(existing, conversations)
            )
            rows = []
            for index, profile in enumerate(profiles):
                n = existing + index
                mine = n < AGENT_CONVERSATIONS
                rows.append(
                    Conversation(
                        messaging_account=account,
                        thread_id=profile.external_id,
                        social_profile=profile,
                        state=ConversationState.ACTIVE if mine else ConversationState.CLOSED,
                        closed_at=None if mine else now,
                        assigned_agent=agent if mine else None,
                        last_message_at=now,
                    )
                )
            created = Conversation.objects.bulk_create(rows, batch_size=2000)
            per = max(1, messages // max(1, len(created)))
            batch: list[Message] = []
            for index, conversation in enumerate(created):
                # The first agent conversation gets the longest history.
                count = per * 20 if index == 0 and conversation.assigned_agent_id else per
                for m in range(count):
                    batch.append(
                        Message(
                            conversation=conversation,
                            direction=Direction.INBOUND if m % 2 == 0 else Direction.OUTBOUND,
                            text=f"Message {m} of the benchmark, with a few words to render",
                            external_id=f"b{conversation.pk}-{m}",
                            sent_at=now,
                        )
                    )
                if len(batch) >= 5000:
                    Message.objects.bulk_create(batch, batch_size=5000)
                    batch = []
            Message.objects.bulk_create(batch, batch_size=5000)
    mine = Conversation.objects.filter(messaging_account=account, assigned_agent=agent)
    longest = max(mine, key=lambda c: c.messages.count())
    return longest.pk


def timed(host: str, port: int, path: str, cookie: str, count: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: status {response.status}")
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default=os.environ.get("BENCH_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    import django

    django.setup()
    from agents import roles

    cookie = bench_users()[roles.AGENT]
    started = time.perf_counter()
    conversation_id = fill(args.conversations, args.messages)
    print(
        json.dumps({"fill_seconds": round(time.perf_counter() - started, 1), "conversation": conversation_id})
    )

    pages = {
        "healthz (baseline)": "/healthz",
        "inbox": "/inbox/",
        "conversation page": f"/inbox/c/{conversation_id}/",
    }
    for path in pages.values():  # warm up: templates compiled, connections open
        timed(host, port, path, cookie, 5)
    results = {name: timed(host, port, path, cookie, args.requests) for name, path in pages.items()}
    baseline = percentile(results["healthz (baseline)"], 0.95)
    for name, times in results.items():
        p95 = percentile(times, 0.95)
        print(
            json.dumps(
                {
                    "page": name,
                    "p50_ms": round(percentile(times, 0.50), 1),
                    "p95_ms": round(p95, 1),
                    "p95_ratio_to_baseline": round(p95 / baseline, 1) if baseline else None,
                    "goal_p95_ms": None if name.startswith("healthz") else GOAL_P95_MS,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
