"""Event processing gives way to the webhook intake while webhook requests pile up in a web process
(channels_line/services/intake_load.py). What it buys is measured in bench/webhook_load.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from channels_line.models import EventState, LineWebhookEvent
from channels_line.services import intake_load, line_events_process, line_webhook_receive
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
    return path


def mark_fresh(path) -> None:
    path.touch()
    os.utime(path)


def test_a_web_process_with_requests_piling_up_marks_the_intake_busy(busy_file):
    clock = Clock()
    meter = IntakeLoadMeter(busy_file, clock=clock)
    requests = [meter.request() for _ in range(3)]
    for request in requests:
        request.__enter__()
    clock.now += intake_load.WINDOW_SECONDS
    requests[0].__exit__(None, None, None)  # 3 in progress over the whole window

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


def test_a_webhook_request_feeds_its_web_process_meter(client, line_account, busy_file, monkeypatch):
    monkeypatch.setattr(intake_load, "WINDOW_SECONDS", 0.0)
    monkeypatch.setattr(intake_load, "SATURATED_IN_FLIGHT", 0.5)  # one request in progress is enough

    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))

    assert response.status_code == 200
    assert busy_file.exists()


def test_nothing_is_marked_when_the_busy_file_is_not_configured(client, line_account, settings, monkeypatch):
    settings.LINE_INTAKE_BUSY_FILE = ""
    monkeypatch.setattr(intake_load, "_meters", {})
    monkeypatch.setattr(intake_load, "WINDOW_SECONDS", 0.0)
    monkeypatch.setattr(intake_load, "SATURATED_IN_FLIGHT", 0.0)

    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))

    assert response.status_code == 200
    assert intake_load._meters == {}
    assert not intake_saturated()


@pytest.mark.django_db
def test_processing_waits_before_each_transaction_while_the_intake_is_saturated_then_goes_on(
    line_account, busy_file, settings, no_line
):
    settings.LINE_PROCESSING_YIELD_SECONDS = 0.3
    payloads = [load_payload("message_text__user", fresh=True) for _ in range(9)]  # two transactions
    for payload in payloads:
        body = body_bytes(payload)
        signature = sign(body, line_account.line.channel_secret)
        line_webhook_receive(account=line_account, body=body, signature=signature)
    events = list(LineWebhookEvent.objects.order_by("pk"))
    stop = threading.Event()

    def burst() -> None:  # a web process marking all along
        while not stop.is_set():
            mark_fresh(busy_file)
            stop.wait(0.05)

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
    assert elapsed >= 2 * 0.3


def test_processing_resumes_as_soon_as_the_burst_ends(busy_file, settings):
    settings.LINE_PROCESSING_YIELD_SECONDS = 30
    mark_fresh(busy_file)  # a last mark, then no more requests pile up

    waited = yield_to_intake()

    assert intake_load.FRESH_SECONDS - 0.1 < waited < 10


@pytest.mark.parametrize("case", ["no mark", "an old mark", "waiting turned off", "no busy file"])
def test_processing_does_not_wait_without_a_fresh_mark(busy_file, settings, monkeypatch, case):
    if case == "an old mark":
        busy_file.touch()
        os.utime(busy_file, (time.time() - 10, time.time() - 10))
    elif case == "waiting turned off":
        mark_fresh(busy_file)
        settings.LINE_PROCESSING_YIELD_SECONDS = 0
    elif case == "no busy file":
        mark_fresh(busy_file)
        settings.LINE_INTAKE_BUSY_FILE = ""

    def no_sleep(seconds: float) -> None:
        raise AssertionError("waited")

    monkeypatch.setattr(intake_load.time, "sleep", no_sleep)
    assert yield_to_intake() == 0.0
