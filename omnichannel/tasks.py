from __future__ import annotations

import logging
import socket
import uuid

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def worker_heartbeat_record(token: str | None = None) -> None:
    """Write a heartbeat row from the worker (periodic, and used by tests to prove a real worker)."""
    services.worker_heartbeat_record(token=token or uuid.uuid4().hex, hostname=socket.gethostname())


@shared_task(ignore_result=True)
def worker_heartbeats_prune() -> None:
    """Keep the heartbeat table small."""
    services.worker_heartbeats_prune()


@shared_task(ignore_result=True)
def message_deliveries_sweep() -> None:
    """Queue again the outbound deliveries whose enqueue or worker was lost."""
    count = services.message_deliveries_sweep()
    if count:
        logger.info("Deliveries sweep queued %s messages", count)


@shared_task(ignore_result=True)
def live_notices_prune() -> None:
    """Delete live notices older than an hour (omnichannel.live.RETENTION_SECONDS)."""
    from . import live

    live.notices_expired_delete()
