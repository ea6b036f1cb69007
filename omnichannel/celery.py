"""The Celery application. `celery -A omnichannel worker` consumes every queue defined in settings."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")

# filesystem:// (the embedded broker) with atomic publishing: see omnichannel/broker.py.
TRANSPORT_ALIASES["filesystem"] = "omnichannel.broker:Transport"

app = Celery("omnichannel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
