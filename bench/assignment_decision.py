"""What one assignment decision costs: 1,000 agents, 100 queues (goal of issue 12: p95 under 5 ms).

    ENV_FILE=var/local.env VAR_DIR=var/bench-assign .venv/bin/python bench/assignment_decision.py \
        [--decisions 3000] [--agents 1000] [--queues 100] [--per-agent 5] [--show-queries]

On PostgreSQL, give it a database of its own (it is created when missing):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_assign ENV_FILE=var/local.env \
        VAR_DIR=var/bench-assign .venv/bin/python bench/assignment_decision.py

It migrates that database and, the first time, builds the set-up (kept for later runs with the same
sizes): `--agents` agents with profiles (presence: 70 % Available, 15 % Busy, 10 % Away, 5 % Offline;
capacity 3 to 10, some of it in use; three of twenty skills each at levels 1-10), `--queues` queues,
each agent a member of `--per-agent` random queues (so about 50 members per queue, some given work
before), and one Open item per queue needing one or two skills, a third of them with a previous agent.
Four workstreams distribute them, one per method: highest capacity with no skill matching, with exact
and with closest matching, and advanced round robin with closest matching.

It then times `--decisions` decisions, each for a random queue's item with its workstream: the choose
step of `queue_assign` exactly as it runs (`distribution.assignment_choose` on the item as
`queue_items_waiting` reads it: the eligible members with their profiles, their skills when the
workstream matches skills, the item's declines when it has any (none here); then the ranking), and
the same with the lookup of the queue's next waiting item before it ("item + decision"). Nothing is
offered, so every decision sees the same data. Reports p50 / p95 / p99 / max in milliseconds and the
queries per decision.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("ENV_FILE", str(BASE_DIR / "var" / "local.env"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")

SKILLS = [f"skill-{n:02d}" for n in range(20)]
PRESENCES = ["available"] * 14 + ["busy"] * 3 + ["away"] * 2 + ["offline"]
PREFIX = "bench-assign"
UNUSABLE = "!"  # no sign-in: an unusable password hash


def database_ensure() -> None:
    """Create the PostgreSQL database named by DATABASE_URL when it does not exist yet."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def build(*, agents: int, queues: int, per_agent: int, rng: random.Random) -> None:
    """The set-up, in bulk (kept between runs of the same sizes)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from agents.models import AgentProfile, AgentSkill, Skill
    from omnichannel.models import Conversation, MessagingAccount, ThreadType
    from routing.models import AssignmentMethod, Queue, QueueMembership, SkillMatching, Workstream

    User = get_user_model()
    if Queue.objects.filter(name__startswith=PREFIX).count() == queues and (
        User.objects.filter(username__startswith=PREFIX).count() == agents
    ):
        return
    print(f"Building {agents} agents, {queues} queues ...", flush=True)
    now = timezone.now()
    with transaction.atomic():
        Conversation.objects.filter(queue__name__startswith=PREFIX).delete()
        Workstream.objects.filter(name__startswith=PREFIX).delete()
        Queue.objects.filter(name__startswith=PREFIX).delete()
        User.objects.filter(username__startswith=PREFIX).delete()
        skills = [Skill.objects.get_or_create(name=name)[0] for name in SKILLS]
        users = User.objects.bulk_create(
            [User(username=f"{PREFIX}-{n:05d}", password=UNUSABLE) for n in range(agents)], batch_size=500
        )
        if users[0].pk is None:  # backends that do not return the keys
            users = list(User.objects.filter(username__startswith=PREFIX).order_by("username"))
        profiles = []
        for user in users:
            capacity = rng.randint(3, 10)
            profiles.append(
                AgentProfile(
                    user=user,
                    presence=rng.choice(PRESENCES),
                    capacity=capacity,
                    capacity_used=rng.randint(0, capacity),
                )
            )
        profiles = AgentProfile.objects.bulk_create(profiles, batch_size=500)
        if profiles[0].pk is None:
            profiles = list(AgentProfile.objects.filter(user__username__startswith=PREFIX))
        AgentSkill.objects.bulk_create(
            [
                AgentSkill(profile=profile, skill=skill, level=rng.randint(1, 10))
                for profile in profiles
                for skill in rng.sample(skills, 3)
            ],
            batch_size=1000,
        )
        queue_rows = Queue.objects.bulk_create(
            [Queue(name=f"{PREFIX}-{n:03d}", priority=rng.randint(1, 20)) for n in range(queues)]
        )
        if queue_rows[0].pk is None:
            queue_rows = list(Queue.objects.filter(name__startswith=PREFIX).order_by("name"))
        QueueMembership.objects.bulk_create(
            [
                QueueMembership(
                    queue=queue,
                    user=user,
                    last_assigned_at=now - datetime.timedelta(minutes=rng.randint(1, 600))
                    if rng.random() < 0.7
                    else None,
                )
                for user in users
                for queue in rng.sample(queue_rows, per_agent)
            ],
            batch_size=1000,
        )
        variants = [
            ("highest-capacity", AssignmentMethod.HIGHEST_CAPACITY, SkillMatching.NONE),
            ("exact", AssignmentMethod.HIGHEST_CAPACITY, SkillMatching.EXACT),
            ("closest", AssignmentMethod.HIGHEST_CAPACITY, SkillMatching.CLOSEST),
            ("round-robin-closest", AssignmentMethod.ROUND_ROBIN, SkillMatching.CLOSEST),
        ]
        for label, method, matching in variants:
            Workstream.objects.create(
                name=f"{PREFIX} {label}",
                fallback_queue=queue_rows[0],
                assignment_method=method,
                skill_matching=matching,
                keep_same_agent=True,
            )
        account = MessagingAccount.objects.filter(name=PREFIX).first() or MessagingAccount.objects.create(
            name=PREFIX, channel_type="line"
        )
        members: dict[int, list[int]] = {}
        for queue_id, user_id in QueueMembership.objects.filter(queue__in=queue_rows).values_list(
            "queue_id", "user_id"
        ):
            members.setdefault(queue_id, []).append(user_id)
        Conversation.objects.bulk_create(
            [
                Conversation(
                    messaging_account=account,
                    thread_type=ThreadType.USER,
                    thread_id=f"{PREFIX}-{queue.pk}",
                    queue=queue,
                    queued_at=now,
                    previous_agent_id=rng.choice(members[queue.pk]) if rng.random() < 0.33 else None,
                    routing={
                        "attributes": {
                            "skills": {
                                name: rng.randint(1, 6) for name in rng.sample(SKILLS, rng.randint(1, 2))
                            }
                        }
                    },
                )
                for queue in queue_rows
            ]
        )


def count_into(counter: list[int]):
    """A database execute wrapper that counts the queries it sees in `counter[0]`."""

    def wrapper(execute, sql, params, many, context):
        counter[0] += 1
        return execute(sql, params, many, context)

    return wrapper


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--per-agent", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--show-queries", action="store_true", help="print the SQL of one decision")
    args = parser.parse_args()

    database_ensure()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from omnichannel.models import Conversation
    from routing import distribution
    from routing.models import Workstream

    call_command("migrate", verbosity=0)
    rng = random.Random(args.seed)
    build(agents=args.agents, queues=args.queues, per_agent=args.per_agent, rng=rng)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh statistics after the bulk build, as autovacuum would do

    workstreams = list(Workstream.objects.filter(name__startswith=PREFIX).order_by("name"))
    # The items belong to a push workstream (so that the next-item lookup finds them); each decision
    # below is made with the workstream being measured.
    Conversation.objects.filter(thread_id__startswith=PREFIX).update(workstream=workstreams[0])
    # Read as queue_assign reads them (annotated with whether they were declined).
    items = [
        distribution.queue_items_waiting(queue_id=queue_id).first()
        for queue_id in Conversation.objects.filter(thread_id__startswith=PREFIX)
        .order_by("queue_id")
        .values_list("queue_id", flat=True)
    ]
    print(
        f"{connection.vendor}: {args.agents} agents, {len(items)} queues/items, "
        f"{args.per_agent} queues per agent, {args.decisions} decisions per workstream"
    )

    def decide(item, workstream, *, with_item: bool):
        if with_item:
            distribution.queue_items_waiting(queue_id=item.queue_id).select_related("workstream").first()
        item.workstream = workstream
        return distribution.assignment_choose(
            facts=distribution.item_facts(conversation=item), queue_id=item.queue_id, workstream=workstream
        )

    if args.show_queries:
        with CaptureQueriesContext(connection) as captured:
            decide(items[0], workstreams[1], with_item=True)
        for query in captured.captured_queries:
            print(query["sql"], "\n")

    print(f"{'workstream':<42} {'step':<16} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  queries  chosen")
    for workstream in workstreams:
        for with_item in (False, True):
            for item in items[:20]:  # warm up
                decide(item, workstream, with_item=with_item)
            timings: list[float] = []
            queries: list[int] = []
            chosen = 0
            for _ in range(args.decisions):
                item = rng.choice(items)
                counted = [0]
                with connection.execute_wrapper(count_into(counted)):
                    start = time.perf_counter()
                    candidate = decide(item, workstream, with_item=with_item)
                    timings.append((time.perf_counter() - start) * 1000)
                queries.append(counted[0])
                chosen += candidate is not None
            step = "item + decision" if with_item else "decision"
            p50, p95, p99 = (percentile(timings, p) for p in (50, 95, 99))
            print(
                f"{workstream.name:<42} {step:<16} {p50:7.2f} {p95:7.2f} {p99:7.2f} {max(timings):7.2f}  "
                f"{statistics.mean(queries):7.1f}  "
                f"{chosen / args.decisions:6.0%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
