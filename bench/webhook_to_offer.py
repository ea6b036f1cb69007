"""Webhook-to-offer benchmark, against the server that `make run` starts.

    .venv/bin/python bench/webhook_to_offer.py [--base-url http://127.0.0.1:8000] [--rate 50] [--seconds 15]

Every webhook is a first message from a new LINE user, so every one makes a new conversation that the
whole chain handles: intake, processing (with the customer's profile fetched from the LINE stand-in),
routing (rules of a push workstream) and distribution (an offer to one of the workstream's agents).
It measures, in one run so that the machine's noise hits both alike:
1. baseline: GET /healthz (a trivial Django view, same server), closed loop: the server's ceiling;
2. paced: signed webhooks at `--rate` new conversations per second for `--seconds`; for each, the time
   from the moment its request was sent to the moment its offer was committed (Offer.created_at);
3. checks: every conversation got exactly one offer (none lost), no agent above capacity.

It sets up its own "Benchmark" account (webhook_load.py's), a push workstream "Benchmark workstream"
with one queue and `--agents` Available agents with room for the whole run, and a channel instance
for the account, through the product's own services, reading the server's settings (ENV_FILE, default
var/local.env). Conversations of earlier runs of the account are deleted first. Only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import (
    SERVER_COMMANDS,
    WebhookBody,
    bench_account,
    closed_loop,
    cpu_seconds,
    paced,
    percentile,
    report,
    statistics_refresh,
)

GOAL_P95_MS = 250


def bench_routing(*, account_id: str, agents: int, capacity: int) -> list[int]:
    """The push workstream, queue, agents and channel instance of the benchmark (idempotent); returns
    the agents' user IDs."""
    from django.contrib.auth import get_user_model

    from agents.models import AgentProfile, Presence
    from routing.models import ChannelInstance, DistributionMode, Queue, QueueMembership, Workstream
    from routing.services import channel_instance_save, routing_record_save, workstream_save

    queue = Queue.objects.filter(name="Benchmark queue").first() or routing_record_save(
        record=Queue(name="Benchmark queue")
    )
    workstream = Workstream.objects.filter(name="Benchmark workstream").first() or workstream_save(
        workstream=Workstream(
            name="Benchmark workstream",
            distribution_mode=DistributionMode.PUSH,
            fallback_queue=queue,
            offer_timeout_seconds=3600,
        )
    )
    instance = ChannelInstance.objects.filter(messaging_account_id=account_id).first()
    if instance is None:
        channel_instance_save(
            instance=ChannelInstance(messaging_account_id=account_id, workstream=workstream)
        )
    elif instance.workstream_id != workstream.pk:
        instance.workstream = workstream
        channel_instance_save(instance=instance)
    User = get_user_model()
    ids = []
    for n in range(agents):
        user, _ = User.objects.get_or_create(username=f"bench-agent-{n}")
        QueueMembership.objects.get_or_create(queue=queue, user=user)
        AgentProfile.objects.update_or_create(
            user=user, defaults={"presence": Presence.AVAILABLE, "capacity": capacity}
        )
        ids.append(user.pk)
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=50.0, help="new conversations per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    args = parser.parse_args()
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("this benchmark only targets loopback")

    account_id, secret, destination = bench_account()  # sets Django up
    from django.db.models import Count, F

    from agents.models import AgentProfile
    from channels_line.models import EventState, LineWebhookEvent
    from omnichannel.models import Conversation
    from routing.models import Offer

    # A clean slate: an earlier run's backlog processed, its conversations (and offers) deleted, the
    # agents' capacity free again.
    events = LineWebhookEvent.objects.filter(messaging_account_id=account_id)
    deadline = time.time() + args.settle_timeout
    while events.filter(state=EventState.PENDING).exists() and time.time() < deadline:
        time.sleep(1)
    Conversation.objects.filter(messaging_account_id=account_id).delete()
    events.delete()
    total = int(args.rate * args.seconds)
    agent_ids = bench_routing(account_id=account_id, agents=args.agents, capacity=total // args.agents + 10)
    AgentProfile.objects.filter(user_id__in=agent_ids).update(capacity_used=0)
    statistics_refresh()  # after the clean slate: the planner sees the tables as the run starts

    # One user per webhook: each is a new conversation. The body's event ID finds its conversation.
    bodies = WebhookBody(secret, destination, users=1)
    path = f"/webhooks/line/{account_id}/"
    users: dict[str, str] = {}

    def prepare(count: int) -> None:
        bodies.ready = []
        for _ in range(count):
            bodies.users = ["U" + os.urandom(16).hex()]
            event_id, body, signature = bodies.make()
            users[event_id] = bodies.users[0]
            bodies.ready.append((event_id, body, signature))

    def webhook_request():
        event_id, body, signature = bodies.new()
        headers = {"Content-Type": "application/json", "x-line-signature": signature}
        return "POST", path, body, headers, event_id

    def healthz_request():
        return "GET", "/healthz", None, {}, None

    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} base={args.base_url} rate={args.rate:g}/s "
        f"seconds={args.seconds:g} agents={args.agents} cores={os.cpu_count()}"
    )
    closed_loop(host, port, 2, args.concurrency, healthz_request)  # warm-up
    baseline, elapsed = closed_loop(host, port, args.seconds, args.concurrency, healthz_request)
    base_row = report("baseline GET /healthz", baseline, elapsed)
    prepare(total)
    cpu_before = {name: cpu_seconds(command) for name, command in SERVER_COMMANDS.items()}
    sample = paced(host, port, args.seconds, args.rate, max(args.concurrency, 32), webhook_request)
    intake_row = report(f"webhook of a new customer at {args.rate:g}/s", sample)

    sent_by_user = {users[event_id]: at for event_id, at in sample.sent_at.items()}
    offers = Offer.objects.filter(conversation__messaging_account_id=account_id)
    deadline = time.time() + args.settle_timeout
    while time.time() < deadline:
        offered = offers.values("conversation").distinct().count()
        if offered >= len(sent_by_user):
            break
        time.sleep(0.5)
    # What the chain cost the server's processes (whatever share of the machine they got): the web
    # processes take the webhooks, the worker processes them, routes and offers.
    cpu_ms = {
        name: (cpu_seconds(command) - cpu_before[name]) * 1000 / max(1, len(sent_by_user))
        for name, command in SERVER_COMMANDS.items()
    }
    # The first offer of each conversation (dict() keeps the last value given: newest first).
    first_offer = dict(
        offers.order_by("conversation__thread_id", "-created_at").values_list(
            "conversation__thread_id", "created_at"
        )
    )
    latencies = [
        (first_offer[user].timestamp() - sent) * 1000
        for user, sent in sent_by_user.items()
        if user in first_offer
    ]
    doubled = (
        offers.filter(state="pending").values("conversation").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    over_capacity = AgentProfile.objects.filter(
        user_id__in=agent_ids, capacity_used__gt=F("capacity")
    ).count()
    result = {
        "ratio_rate_vs_baseline_rps": round(args.rate / base_row["rps"], 3),
        "webhook_answer_p99_ms": intake_row["p99_ms"],
        "conversations_sent": len(sent_by_user),
        "conversations_offered": len(latencies),
        "lost": len(sent_by_user) - len(latencies),
        "offered_twice_at_once": doubled,
        "agents_over_capacity": over_capacity,
        "webhook_to_offer_p50_ms": round(percentile(latencies, 0.50), 1),
        "webhook_to_offer_p95_ms": round(percentile(latencies, 0.95), 1),
        "webhook_to_offer_p99_ms": round(percentile(latencies, 0.99), 1),
        "webhook_to_offer_max_ms": round(max(latencies), 1) if latencies else None,
        "web_cpu_ms_per_conversation": round(cpu_ms["web"], 1),
        "worker_cpu_ms_per_conversation": round(cpu_ms["worker"], 1),
        f"p95_under_{GOAL_P95_MS}_ms": percentile(latencies, 0.95) < GOAL_P95_MS if latencies else False,
    }
    print(json.dumps(result))
    failed = sum(n for status, n in intake_row["statuses"].items() if status != 200)
    return 1 if failed or result["lost"] or doubled or over_capacity else 0


if __name__ == "__main__":
    sys.exit(main())
