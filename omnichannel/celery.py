"""The Celery application. `celery -A omnichannel worker` consumes every queue defined in settings."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")

# filesystem:// (the embedded broker) with atomic publishing: see omnichannel/broker.py.
TRANSPORT_ALIASES["filesystem"] = "omnichannel.broker:Transport"

app = Celery("omnichannel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Database connections live across tasks, as they do across web requests. Celery's Django fixup
# closes every connection before and after each task unless CELERY_DB_REUSE_MAX is set (settings):
# a new connection per task (on PostgreSQL a new server process) cost more than most tasks here.
# Django's own close_old_connections() takes its place, as around a request: it drops a connection
# that broke (a database restart) or outlived CONN_MAX_AGE, with CONN_HEALTH_CHECKS before reuse.
@task_prerun.connect
@task_postrun.connect
def _database_connections_tidy(sender: object = None, **kwargs: object) -> None:
    # Not for a task run in the caller's process (apply(), as the fixup skips it): the caller's
    # connection, maybe in a transaction, is not the task's to close.
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()
