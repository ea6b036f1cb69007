"""Readiness checks: can this process reach the database and the broker right now?

The answer is public (load balancers call it without signing in): a failure names only what is down.
The exception, which can hold hostnames, users or paths, goes to the log."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from kombu import Connection

logger = logging.getLogger(__name__)

DATABASE_DOWN = "database unreachable"
BROKER_DOWN = "broker unreachable"


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
        logger.warning("Readiness: %s: %s: %s", DATABASE_DOWN, exc.__class__.__name__, exc)
        return CheckResult(False, DATABASE_DOWN)
    return CheckResult(True, connection.vendor)


def broker_check(broker_url: str | None = None) -> CheckResult:
    url = broker_url or settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out"):
            folder = options[key]
            if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                logger.warning("Readiness: %s: folder %s is missing or not writable", BROKER_DOWN, folder)
                return CheckResult(False, BROKER_DOWN)
        return CheckResult(True, "filesystem")
    try:
        with Connection(url, connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
            transport = conn.transport_cls
    except Exception as exc:  # any transport error means "not ready"
        # Not the URL: it can hold the broker's password.
        logger.warning("Readiness: %s: %s: %s", BROKER_DOWN, exc.__class__.__name__, exc)
        return CheckResult(False, BROKER_DOWN)
    return CheckResult(True, str(transport))
