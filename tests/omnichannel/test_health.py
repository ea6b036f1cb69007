import logging

import pytest
from django.db import OperationalError
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_without_touching_dependencies(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_database_and_broker_as_reachable(client):
    response = client.get(reverse("readyz"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_readyz_answers_503_naming_the_broker_when_the_broker_is_down(client, settings, caplog):
    # Nothing listens on port 1: a real connection attempt that is refused.
    settings.CELERY_BROKER_URL = "redis://support-bot:hunter2-readyz@127.0.0.1:1/0"
    settings.CELERY_BROKER_CONNECTION_TIMEOUT = 1.0

    with caplog.at_level(logging.WARNING, logger="omnichannel.health"):
        response = client.get(reverse("readyz"))

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == {"ok": False, "detail": "broker unreachable"}
    assert body["checks"]["database"]["ok"] is True
    assert "Connection refused" in caplog.text  # the cause is in the log


def test_readyz_publishes_neither_the_broker_error_nor_its_url(client, settings, caplog):
    settings.CELERY_BROKER_URL = "redis://support-bot:hunter2-readyz@127.0.0.1:1/0"
    settings.CELERY_BROKER_CONNECTION_TIMEOUT = 1.0

    with caplog.at_level(logging.WARNING, logger="omnichannel.health"):
        response = client.get(reverse("readyz"))

    text = response.content.decode()
    assert response.status_code == 503
    for leak in ("127.0.0.1", "Connection refused", "OperationalError", "support-bot", "hunter2-readyz"):
        assert leak not in text
    # The log has the cause, still without the URL's password.
    assert "127.0.0.1:1" in caplog.text
    assert "hunter2-readyz" not in caplog.text


def test_readyz_answers_503_when_the_filesystem_broker_folder_is_gone(client, settings, tmp_path, caplog):
    missing = tmp_path / "missing-broker-folder"
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(missing),
        "data_folder_out": str(missing),
    }

    with caplog.at_level(logging.WARNING, logger="omnichannel.health"):
        response = client.get(reverse("readyz"))

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False, "detail": "broker unreachable"}
    assert str(tmp_path) not in response.content.decode()  # the path is for the log only
    assert str(missing) in caplog.text


def test_readyz_answers_503_naming_only_the_database_when_it_cannot_be_queried(client, monkeypatch, caplog):
    # Mocked: the test itself needs the database, so a failing cursor stands in for an outage.
    from omnichannel import health

    driver_message = 'connection to "db-7.internal.example" failed: FATAL: role "omni_prod" does not exist'

    def broken_cursor():
        raise OperationalError(driver_message)

    monkeypatch.setattr(health.connection, "cursor", broken_cursor)
    with caplog.at_level(logging.WARNING, logger="omnichannel.health"):
        response = client.get(reverse("readyz"))

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == {"ok": False, "detail": "database unreachable"}
    assert body["worker_last_seen"] is None
    text = response.content.decode()
    for leak in ("db-7.internal.example", "omni_prod", "OperationalError"):
        assert leak not in text
    assert driver_message in caplog.text
