from __future__ import annotations

import datetime

from django.utils import timezone

from .models import WorkerHeartbeat


def worker_heartbeat_record(*, token: str, hostname: str) -> WorkerHeartbeat:
    """Record that a worker ran a task; running it twice with one token keeps one row."""
    heartbeat, _ = WorkerHeartbeat.objects.get_or_create(token=token, defaults={"hostname": hostname})
    return heartbeat


def worker_heartbeats_prune(*, older_than: datetime.timedelta = datetime.timedelta(days=1)) -> int:
    """Delete heartbeats older than `older_than`; returns how many were deleted."""
    deleted, _ = WorkerHeartbeat.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
