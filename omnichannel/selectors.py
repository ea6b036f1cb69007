from __future__ import annotations

import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import WorkerHeartbeat


def worker_heartbeat_latest() -> datetime.datetime | None:
    return WorkerHeartbeat.objects.order_by("-created_at").values_list("created_at", flat=True).first()


def user_roles(*, user: AbstractBaseUser | AnonymousUser) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(user.groups.values_list("name", flat=True))
