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


def test_readyz_answers_503_naming_the_broker_when_the_broker_is_down(client, settings):
    # Nothing listens on port 1: a real connection attempt that is refused.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_BROKER_CONNECTION_TIMEOUT = 1.0

    response = client.get(reverse("readyz"))

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["detail"].startswith("broker unreachable:")
    assert body["checks"]["database"]["ok"] is True


def test_readyz_answers_503_when_the_filesystem_broker_folder_is_gone(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "missing"),
        "data_folder_out": str(tmp_path / "missing"),
    }
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    assert "missing" in response.json()["checks"]["broker"]["detail"]


def test_readyz_answers_503_naming_the_database_when_it_cannot_be_queried(client, monkeypatch):
    # Mocked: the test itself needs the database, so a failing cursor stands in for an outage.
    from omnichannel import health

    def broken_cursor():
        raise OperationalError("connection refused")

    monkeypatch.setattr(health.connection, "cursor", broken_cursor)
    response = client.get(reverse("readyz"))

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == {
        "ok": False,
        "detail": "database unreachable: OperationalError: connection refused",
    }
    assert body["worker_last_seen"] is None
