"""Readiness checks: can this process reach the database and the broker right now?"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from kombu import Connection


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


def database_check() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return CheckResult(False, f"database unreachable: {exc.__class__.__name__}: {exc}".strip())
    return CheckResult(True, connection.vendor)


def broker_check(broker_url: str | None = None) -> CheckResult:
    url = broker_url or settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out"):
            folder = options[key]
            if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                return CheckResult(False, f"broker unreachable: folder {folder} is missing or not writable")
        return CheckResult(True, "filesystem")
    try:
        with Connection(url, connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
            transport = conn.transport_cls
    except Exception as exc:  # any transport error means "not ready"
        return CheckResult(False, f"broker unreachable: {exc.__class__.__name__}: {exc}".strip())
    return CheckResult(True, str(transport))
