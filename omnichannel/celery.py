"""The Celery application. `celery -A omnichannel worker` consumes every queue defined in settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnichannel.settings")

app = Celery("omnichannel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
