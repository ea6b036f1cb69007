import uuid

import pytest

from omnichannel import tasks
from omnichannel.models import WorkerHeartbeat
from tests.conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_task_sent_to_the_broker_runs_on_a_separate_worker_process(celery_worker, settings):
    token = uuid.uuid4().hex

    tasks.worker_heartbeat_record.delay(token)

    heartbeat = wait_for(
        lambda: WorkerHeartbeat.objects.filter(token=token).first(), timeout=60, message="the heartbeat row"
    )
    assert heartbeat.hostname
    assert "omnichannel.tasks.worker_heartbeat_record[" in celery_worker.log()


def test_the_worker_consumes_every_queue_the_project_defines(celery_worker, settings):
    log = celery_worker.log()
    for queue in settings.CELERY_TASK_QUEUES:
        assert f".> {queue.name} " in log
