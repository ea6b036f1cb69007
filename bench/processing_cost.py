"""What processing one webhook event costs, measured in-process (no server, no broker, no worker).

    ENV_FILE=var/local.env VAR_DIR=var/bench-e .venv/bin/python bench/processing_cost.py \
        [--events 600] [--users 50] [--per-task 1] [--backlog] [--show-queries]

It stores `--events` one-event webhooks through the real intake (`line_webhook_receive`, signature
and all) for a "Processing cost" account, each from one of `--users` customers whose profiles and
open conversations already exist (as under steady load), and runs the processing task's own
function (`channels_line.tasks.line_events_process.run`) once per `--per-task` events, as the worker
would: each event alone (stored, then its task run, then the next), or with `--backlog` every event
stored first and then the tasks in order (as when the worker has fallen behind). It reports the
CPU time (`time.process_time()`) and wall time per event and the queries per task.
`--show-queries` prints the SQL of one task.

What is not measured: the broker and Celery's own per-task work (bench/webhook_load.py against
`make run` covers those). The intake's enqueue after its commit is replaced by a list here (the
events are processed by this script, not by a worker), and LINE is not called (the customers'
profiles are fresh). Run it on a database of its own (VAR_DIR for SQLite, DATABASE_URL for
PostgreSQL): it migrates that database and deletes the account's earlier events first.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("ENV_FILE", str(BASE_DIR / "var" / "local.env"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")
# Nothing leaves the machine: a LINE call (none is expected) fails at once on a closed port.
os.environ["LINE_API_BASE_URL"] = os.environ["LINE_API_DATA_BASE_URL"] = "http://127.0.0.1:1"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--per-task", type=int, default=1, help="events per task (a webhook queues its own)")
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="store every event first, then run the tasks (default: each event processed before the next)",
    )
    parser.add_argument("--show-queries", action="store_true", help="print the SQL of one task")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole measure (reports each)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from channels_line import tasks
    from channels_line.models import EventState, LineWebhookEvent
    from channels_line.services import intake, line_account_create, line_webhook_receive
    from omnichannel.models import Conversation, MessagingAccount, SocialProfile
    from tests.channels_line.payloads import body_bytes, sign  # the tests' signed bodies

    call_command("migrate", verbosity=0)
    account = MessagingAccount.objects.select_related("line").filter(name="Processing cost").first()
    if account is None:
        account = line_account_create(
            name="Processing cost",
            channel_id=str(secrets.randbelow(10**9) + 10**9),
            channel_secret=secrets.token_hex(16),
            channel_access_token=secrets.token_urlsafe(48),
        )
    secret = account.line.channel_secret
    users = ["U" + secrets.token_hex(16) for _ in range(args.users)]
    stored: list[int] = []
    # The events are processed below, by this script: the intake's enqueue after commit keeps them.
    intake.processing_enqueue = lambda pks: stored.extend(pks) or True

    def receive(user: str, n: int) -> None:
        event_id = secrets.token_hex(13).upper()
        body = body_bytes(
            {
                "destination": "U" + account.pk.hex,
                "events": [
                    {
                        "type": "message",
                        "mode": "active",
                        "timestamp": int(time.time() * 1000) + n,
                        "source": {"type": "user", "userId": user},
                        "webhookEventId": event_id,
                        "deliveryContext": {"isRedelivery": False},
                        "replyToken": secrets.token_hex(16),
                        "message": {
                            "id": str(int(event_id[:14], 16)),
                            "type": "text",
                            "text": "こんにちは, load test",
                            "quoteToken": secrets.token_urlsafe(16),
                        },
                    }
                ],
            }
        )
        line_webhook_receive(account=account, body=body, signature=sign(body, secret))

    def run_once() -> dict:
        Conversation.objects.filter(messaging_account=account).delete()
        LineWebhookEvent.objects.filter(messaging_account=account).delete()
        SocialProfile.objects.filter(messaging_account=account).delete()
        # Steady state: every customer has a fresh profile and an open conversation.
        stored.clear()
        for n, user in enumerate(users):
            receive(user, n)
        for pk in stored:
            tasks.line_events_process.run([pk])
        now = timezone.now()
        SocialProfile.objects.filter(messaging_account=account).update(
            profile_fetched_at=now, profile_attempted_at=now
        )
        stored.clear()
        queries: list[int] = []
        cpu = wall = 0.0
        pks: list[int] = []
        # Backlog: every event stored, then the tasks run in order. Alone: each event processed
        # before the next one arrives (only the tasks are timed).
        rounds = [range(args.events)] if args.backlog else [[n] for n in range(args.events)]
        for numbers in rounds:
            stored.clear()
            for n in numbers:
                receive(users[n % len(users)], n)
            pks += stored
            batches = [
                stored[start : start + args.per_task] for start in range(0, len(stored), args.per_task)
            ]
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            for batch in batches:
                with CaptureQueriesContext(connection) as captured:
                    tasks.line_events_process.run(batch)
                queries.append(len(captured))
            cpu += time.process_time() - cpu_started
            wall += time.perf_counter() - wall_started
        processed = LineWebhookEvent.objects.filter(pk__in=pks, state=EventState.PROCESSED).count()
        if args.show_queries:
            stored.clear()
            receive(users[0], args.events + 1)
            with CaptureQueriesContext(connection) as captured:
                tasks.line_events_process.run(list(stored))
            for query in captured.captured_queries:
                print(query["sql"][:300])
        return {
            "vendor": connection.vendor,
            "mode": "backlog" if args.backlog else "alone",
            "events": len(pks),
            "per_task": args.per_task,
            "processed": processed,
            "cpu_ms_per_event": round(cpu * 1000 / len(pks), 3),
            "wall_ms_per_event": round(wall * 1000 / len(pks), 3),
            "queries_per_task": round(statistics.mean(queries), 2),
            "queries_per_task_max": max(queries),
            "tasks_with_nothing_to_do": queries.count(1),
        }

    for _ in range(args.repeat):
        print(json.dumps(run_once()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
