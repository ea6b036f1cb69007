"""Event processing gives way to the webhook intake while webhook requests pile up in a web process
(channels_line/services/intake_load.py). What it buys is measured in bench/webhook_load.py."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import time

import pytest
from django.db import transaction
from django.utils import timezone

from channels_line.models import EventState, LineWebhookEvent
from channels_line.services import event_store, intake_load, line_events_process, line_webhook_receive
from channels_line.services.event_store import events_writer_flush
from channels_line.services.intake_load import IntakeLoadMeter, intake_saturated, yield_to_intake
from tests.channels_line.conftest import post_webhook
from tests.channels_line.payloads import body_bytes, load_payload, sign


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def busy_file(settings, tmp_path, monkeypatch):
    path = tmp_path / "line-intake.busy"
    settings.LINE_INTAKE_BUSY_FILE = str(path)
    monkeypatch.setattr(intake_load, "_meters", {})
    monkeypatch.setattr(intake_load, "_warned", set())
    return path


@pytest.fixture
def no_sleep(monkeypatch):
    def sleep(seconds: float) -> None:
        raise AssertionError("processing waited")

    monkeypatch.setattr(intake_load, "_sleep", sleep)


def mark_fresh(path) -> None:
    path.touch()
    os.utime(path)


def test_a_web_process_with_requests_piling_up_marks_the_intake_busy(busy_file):
    clock = Clock()
    meter = IntakeLoadMeter(busy_file, clock=clock)
    with contextlib.ExitStack() as requests:
        for _ in range(3):
            requests.enter_context(meter.request())
        clock.now += intake_load.WINDOW_SECONDS  # 3 in progress over the whole window

    assert busy_file.exists()
    assert intake_saturated()


def test_a_web_process_answering_one_request_at_a_time_does_not_mark_it(busy_file):
    clock = Clock()
    meter = IntakeLoadMeter(busy_file, clock=clock)
    for _ in range(40):  # 200 requests/s of 2 ms each, for 0.2 s
        with meter.request():
            clock.now += 0.002
        clock.now += 0.003

    assert not busy_file.exists()
    assert not intake_saturated()


def test_a_signed_webhook_request_feeds_its_web_process_meter(client, line_account, busy_file, monkeypatch):
    monkeypatch.setattr(intake_load, "WINDOW_SECONDS", 0.0)
    monkeypatch.setattr(intake_load, "SATURATED_IN_FLIGHT", 0.5)  # one request in progress is enough

    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))

    assert response.status_code == 200
    assert busy_file.exists()


def test_requests_with_a_wrong_signature_do_not_count(client, line_account, busy_file, monkeypatch):
    monkeypatch.setattr(intake_load, "WINDOW_SECONDS", 0.0)
    monkeypatch.setattr(intake_load, "SATURATED_IN_FLIGHT", 0.0)

    response = post_webhook(client, line_account, load_payload("message_text__user"), secret="not-the-secret")

    assert response.status_code == 400
    assert intake_load._meters == {}
    assert not busy_file.exists()


def test_no_meter_runs_when_the_busy_file_is_not_configured(client, line_account, settings, monkeypatch):
    settings.LINE_INTAKE_BUSY_FILE = ""
    monkeypatch.setattr(intake_load, "_meters", {})

    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))

    assert response.status_code == 200
    assert intake_load._meters == {}


def test_a_mark_that_cannot_be_written_is_reported_once(busy_file, tmp_path, caplog):
    meter = IntakeLoadMeter(tmp_path / "gone" / "line-intake.busy")

    with caplog.at_level(logging.WARNING, logger="channels_line.services.intake_load"):
        meter._mark()
        meter._mark()

    assert [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()] != []
    assert len(caplog.records) == 1


@pytest.mark.django_db(transaction=True)
def test_processing_waits_before_each_transaction_while_the_intake_is_saturated_then_goes_on(
    line_account, busy_file, settings, no_line, monkeypatch
):
    settings.LINE_PROCESSING_YIELD_SECONDS = 0.3
    monkeypatch.setattr(event_store, "processing_enqueue", lambda pks: None)  # processed here only
    for _ in range(9):  # two transactions
        body = body_bytes(load_payload("message_text__user", fresh=True))
        signature = sign(body, line_account.line.channel_secret)
        line_webhook_receive(account=line_account, body=body, signature=signature)
    assert events_writer_flush()
    events = list(LineWebhookEvent.objects.order_by("pk"))
    stop = threading.Event()

    def burst() -> None:  # a web process marking all along
        while not stop.wait(0.05):
            mark_fresh(busy_file)

    mark_fresh(busy_file)
    marker = threading.Thread(target=burst)
    marker.start()
    try:
        started = time.monotonic()
        processed = line_events_process(event_pks=[e.pk for e in events])
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        marker.join()

    assert [e.state for e in processed] == [EventState.PROCESSED] * 9  # slower, never stopped
    assert 2 * 0.3 <= elapsed < 2 * 0.3 + 5  # each wait ends at the limit, the burst goes on


def test_processing_resumes_as_soon_as_the_burst_ends(busy_file, settings):
    settings.LINE_PROCESSING_YIELD_SECONDS = 30
    mark_fresh(busy_file)  # a last mark, then no more requests pile up

    waited = yield_to_intake()

    assert intake_load.FRESH_SECONDS - 0.1 < waited < 10


def test_events_waiting_longer_than_the_lag_limit_are_processed_at_once(busy_file, settings, no_sleep):
    settings.LINE_PROCESSING_MAX_LAG_SECONDS = 60
    mark_fresh(busy_file)

    assert yield_to_intake(oldest_received_at=timezone.now() - datetime.timedelta(seconds=61)) == 0.0


@pytest.mark.django_db
def test_processing_never_waits_inside_a_transaction(busy_file, no_sleep):
    mark_fresh(busy_file)

    with transaction.atomic():
        assert yield_to_intake() == 0.0


@pytest.mark.parametrize("case", ["no mark", "an old mark", "waiting turned off", "no busy file"])
def test_processing_does_not_wait_without_a_fresh_mark(busy_file, settings, no_sleep, case):
    if case == "an old mark":
        busy_file.touch()
        os.utime(busy_file, (time.time() - 10, time.time() - 10))
    elif case == "waiting turned off":
        mark_fresh(busy_file)
        settings.LINE_PROCESSING_YIELD_SECONDS = 0
    elif case == "no busy file":
        mark_fresh(busy_file)
        settings.LINE_INTAKE_BUSY_FILE = ""

    assert yield_to_intake() == 0.0
