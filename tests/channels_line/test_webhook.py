"""The webhook view, driven with signed payloads as LINE sends them."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
from django.db import OperationalError, connection
from django.urls import reverse

from channels_line.models import EventState, LineWebhookEvent, LineWebhookRejectedBody
from channels_line.services import event_store, line_account_update
from channels_line.services.event_store import events_writer_flush
from tests.channels_line.conftest import new_secret, post_webhook
from tests.channels_line.payloads import (
    body_bytes,
    load_payload,
    payload_names,
    sign,
)
from tests.conftest import broker_down

pytestmark = pytest.mark.django_db


def test_the_consoles_verify_request_is_answered_200_and_stores_nothing(client, line_account):
    response = post_webhook(client, line_account, load_payload("verify__empty"))
    assert response.status_code == 200
    assert LineWebhookEvent.objects.count() == 0


@pytest.mark.parametrize("name", [n for n in payload_names() if n != "verify__empty"])
def test_every_signed_event_is_stored_once_with_its_raw_json_and_queued(
    client, line_account, name, django_capture_on_commit_callbacks
):
    payload = load_payload(name, fresh=True)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_webhook(client, line_account, payload)

    assert response.status_code == 200
    events = list(LineWebhookEvent.objects.filter(messaging_account=line_account).order_by("id"))
    assert [e.raw for e in events] == payload["events"]
    assert [e.webhook_event_id for e in events] == [e["webhookEventId"] for e in payload["events"]]
    assert all(e.state == EventState.PENDING for e in events)
    assert len(callbacks) == 1  # one enqueue for the new events of the request


def test_a_redelivered_event_is_acknowledged_and_not_stored_or_queued_again(
    client, line_account, django_capture_on_commit_callbacks
):
    payload = load_payload("message_text__user", fresh=True)
    post_webhook(client, line_account, payload)
    redelivery = json.loads(json.dumps(payload))
    redelivery["events"][0]["deliveryContext"]["isRedelivery"] = True

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_webhook(client, line_account, redelivery)

    assert response.status_code == 200
    assert response.json()["duplicates"] == 1
    assert LineWebhookEvent.objects.count() == 1
    assert callbacks == []


def test_a_batch_with_a_new_and_a_known_event_stores_only_the_new_one(client, line_account):
    first = load_payload("message_text__user", fresh=True)
    post_webhook(client, line_account, first)
    second = load_payload("message_text__user", fresh=True)
    second["events"].insert(0, first["events"][0])

    response = post_webhook(client, line_account, second)

    assert response.json() == {"status": "ok", "stored": 1, "duplicates": 1}
    assert LineWebhookEvent.objects.count() == 2


def test_a_request_without_signature_gets_400_stores_nothing_and_logs_the_account(
    client, line_account, caplog
):
    with caplog.at_level(logging.WARNING, logger="channels_line"):
        response = post_webhook(client, line_account, load_payload("message_text__user"), signature="")
    assert response.status_code == 400
    assert response.json()["reason"] == "missing x-line-signature header"
    assert LineWebhookEvent.objects.count() == 0
    assert str(line_account.pk) in caplog.text


def test_a_request_signed_with_another_secret_gets_400_and_stores_nothing(client, line_account, caplog):
    with caplog.at_level(logging.WARNING, logger="channels_line"):
        response = post_webhook(client, line_account, load_payload("message_text__user"), secret=new_secret())
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid signature"
    assert LineWebhookEvent.objects.count() == 0
    assert str(line_account.pk) in caplog.text


def test_a_body_changed_after_signing_is_refused(client, line_account):
    body = body_bytes(load_payload("message_text__user"))
    signature = sign(body, line_account.line.channel_secret)
    response = post_webhook(client, line_account, body[:-1] + b" }", signature=signature)
    assert response.status_code == 400


def test_a_replaced_secret_takes_effect_at_once(client, line_account):
    new = new_secret()
    line_account_update(account=line_account, channel_secret=new)
    line_account.refresh_from_db()
    assert (
        post_webhook(
            client, line_account, load_payload("message_text__user", fresh=True), secret=new
        ).status_code
        == 200
    )


def test_an_unknown_account_gets_404(client, line_account):
    body = body_bytes(load_payload("message_text__user"))
    for account_id in (uuid.uuid4(), "not-a-uuid"):
        response = client.post(
            reverse("line-webhook", args=[account_id]),
            data=body,
            content_type="application/json",
            HTTP_X_LINE_SIGNATURE=sign(body, line_account.line.channel_secret),
        )
        assert response.status_code == 404


def test_a_disabled_account_gets_404_and_stores_nothing(client, line_account):
    line_account_update(account=line_account, enabled=False)
    response = post_webhook(client, line_account, load_payload("message_text__user"))
    assert response.status_code == 404
    assert LineWebhookEvent.objects.count() == 0


def test_a_body_over_the_cap_gets_413(client, line_account, settings):
    settings.LINE_WEBHOOK_MAX_BODY_BYTES = 2048
    payload = load_payload("message_text__user")
    payload["events"][0]["message"]["text"] = "x" * 3000
    response = post_webhook(client, line_account, payload)
    assert response.status_code == 413
    assert LineWebhookEvent.objects.count() == 0


def test_malformed_json_with_a_valid_signature_gets_400_and_the_body_is_kept(client, line_account):
    body = b'{"destination": "U1", "events": [ {"type": "message", '
    response = post_webhook(client, line_account, body)
    assert response.status_code == 400
    assert response.json()["reason"] == "malformed JSON body"
    kept = LineWebhookRejectedBody.objects.get()
    assert kept.body == body.decode()
    assert kept.messaging_account == line_account
    assert "JSONDecodeError" in kept.reason


def test_json_without_an_events_list_is_kept_as_rejected(client, line_account):
    response = post_webhook(client, line_account, b'{"destination": "U1", "events": "nope"}')
    assert response.status_code == 400
    assert LineWebhookRejectedBody.objects.count() == 1


def test_only_post_is_allowed(client, line_account):
    assert client.get(reverse("line-webhook", args=[line_account.pk])).status_code == 405


def test_a_broker_outage_still_answers_200_and_keeps_the_event_for_the_sweep(
    client, line_account, django_capture_on_commit_callbacks, caplog
):
    with broker_down(), django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert response.status_code == 200
    assert len(callbacks) == 1
    assert "LINE events not enqueued (the sweep will)" in caplog.text  # it really failed, and was contained
    event = LineWebhookEvent.objects.get()
    assert event.state == EventState.PENDING


def test_a_database_outage_answers_503_so_that_line_redelivers(client, line_account, monkeypatch):
    # Mocked: the test database must stay up for the test itself; a failing query stands in.
    from channels_line.services import intake

    def refuse(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(intake, "account_for_webhook", refuse)
    from channels_line import views

    monkeypatch.setattr(views, "account_for_webhook", refuse)
    response = post_webhook(client, line_account, load_payload("message_text__user"))
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_the_intake_runs_a_fixed_number_of_queries(client, line_account, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        post_webhook(client, line_account, load_payload("message_text__user", fresh=True))


@pytest.fixture
def enqueued(monkeypatch) -> list[list[int]]:
    """What the group-commit writer queues, kept here instead: a worker left running by another test
    must not process these events while the test database is flushed (PostgreSQL deadlocks)."""
    from channels_line.services import event_store

    # What an earlier test stored goes out first: its publisher may still hold it (up to 100 ms).
    event_store.events_writer_flush()
    calls: list[list[int]] = []
    monkeypatch.setattr(event_store, "processing_enqueue", lambda pks: calls.append(list(pks)))
    return calls


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_are_stored_together_each_event_once(line_account, enqueued):
    """The production path: requests outside a transaction hand their events to the group-commit
    writer. Forty requests at once, ten of them repeating another's event."""
    from concurrent.futures import ThreadPoolExecutor

    from django.test import Client

    payloads = [load_payload("message_text__user", fresh=True) for _ in range(30)]
    payloads += payloads[:10]

    def send(payload):
        try:
            return post_webhook(Client(), line_account, payload)
        finally:
            from django.db import connection

            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, payloads))

    assert [r.status_code for r in responses] == [200] * 40
    assert sum(r.json()["stored"] for r in responses) == 30
    assert sum(r.json()["duplicates"] for r in responses) == 10
    assert LineWebhookEvent.objects.count() == 30
    assert events_writer_flush()  # queueing for processing happens after the answer
    assert sorted(pk for call in enqueued for pk in call) == sorted(
        LineWebhookEvent.objects.values_list("pk", flat=True)
    )


def test_events_stored_by_several_flushes_are_queued_for_processing_together(enqueued):
    from channels_line.services.event_store import Publisher

    publisher = Publisher()
    for pks in ([1, 2], [3], [4, 5]):
        publisher.put(pks)
    publisher.start()
    assert publisher.flush()
    publisher.put([6])
    publisher.stop()
    assert publisher.flush()  # what was put before the stop is still queued

    assert enqueued == [[1, 2, 3, 4, 5], [6]]


def test_under_load_events_are_published_together_at_most_once_per_interval(enqueued, monkeypatch):
    """A lone event goes out at once; what is stored soon after waits for the interval and goes
    out in one task. Someone waiting in flush() does not wait for the interval."""
    import time

    from channels_line.services import event_store

    monkeypatch.setattr(event_store, "PUBLISH_INTERVAL_SECONDS", 2.0)  # far above any scheduling hiccup
    publisher = event_store.Publisher().start()
    try:
        started = time.monotonic()
        publisher.put([1])
        while not enqueued and time.monotonic() < started + 1.0:
            time.sleep(0.005)
        assert enqueued == [[1]]  # within a fraction of the interval
        publisher.put([2])
        time.sleep(0.1)  # several publisher rounds
        publisher.put([3])
        time.sleep(0.1)
        assert enqueued == [[1]]  # held back: published less than an interval ago
        assert publisher.flush(timeout=1.0)
        assert enqueued == [[1], [2, 3]]
    finally:
        publisher.stop()


@pytest.mark.django_db(transaction=True)
def test_a_store_that_does_not_answer_in_time_gets_503_so_that_line_redelivers(
    client, line_account, settings
):
    settings.LINE_WEBHOOK_STORE_TIMEOUT = 0.0  # no store can answer in zero seconds
    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert response.status_code == 503


def test_account_credentials_are_cached_briefly_and_a_change_clears_them(client, line_account):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    with CaptureQueriesContext(connection) as queries:
        post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert not [q for q in queries.captured_queries if "omnichannel_messagingaccount" in q["sql"]]

    new = new_secret()
    line_account_update(account=line_account, channel_secret=new)
    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True), secret=new)
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_one_request_the_store_refuses_does_not_fail_the_others_of_its_batch(line_account, enqueued):
    import uuid as uuid_module

    from channels_line.services.event_store import _Pending, event_row, events_store_batch
    from omnichannel.models import MessagingAccount

    gone = MessagingAccount(pk=uuid_module.uuid4(), name="deleted meanwhile")  # never saved: FK fails
    good = _Pending(
        [
            event_row(
                account_id=line_account.pk, event=load_payload("message_text__user", fresh=True)["events"][0]
            )
        ]
    )
    bad = _Pending(
        [event_row(account_id=gone.pk, event=load_payload("message_text__user", fresh=True)["events"][0])]
    )

    new = events_store_batch([good, bad])

    assert good.error is None and good.result == new and len(new) == 1
    assert bad.error is not None
    assert LineWebhookEvent.objects.count() == 1


@pytest.fixture
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL server ending a session or a statement; SQLite has neither")


def _one_event_request(account) -> event_store._Pending:
    event = load_payload("message_text__user", fresh=True)["events"][0]
    return event_store._Pending([event_store.event_row(account_id=account.pk, event=event)])


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate_from_another_connection(pid: int) -> None:
    def terminate() -> None:
        with connection.cursor() as cursor:  # this thread's own connection
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        connection.close()

    killer = threading.Thread(target=terminate)
    killer.start()
    killer.join()


@pytest.mark.django_db(transaction=True)
def test_a_writer_connection_broken_since_its_last_check_is_replaced_and_the_round_still_stored(
    line_account, enqueued, postgresql_only, caplog
):
    """The writer checks its connection at most once a second (on PostgreSQL the check is a round
    trip); a connection the server dropped meanwhile costs a reconnection, not the round's events."""
    first = _one_event_request(line_account)
    assert len(event_store.events_store_batch([first])) == 1
    _terminate_from_another_connection(_backend_pid())
    event_store._connection_checked.at = time.monotonic()  # checked just now: the round trusts it

    second = _one_event_request(line_account)
    new = event_store.events_store_batch([second])

    assert second.error is None
    assert len(new) == 1 and second.result == new
    assert LineWebhookEvent.objects.count() == 2
    assert "reconnecting" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_round_whose_answer_was_lost_after_its_commit_still_queues_its_events(
    line_account, enqueued, postgresql_only, monkeypatch
):
    """The INSERT committed, then the connection dropped before the answer: the retry finds the rows
    stored (conflicts) and still counts them as this round's, so that they are queued now."""
    real_insert = event_store.events_insert
    tries = []

    def insert_then_lose_the_answer(rows):
        result = real_insert(rows)  # autocommit: stored
        tries.append(result)
        if len(tries) == 1:
            _terminate_from_another_connection(_backend_pid())
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(event_store, "events_insert", insert_then_lose_the_answer)
    event_store._connection_checked.at = time.monotonic()
    request = _one_event_request(line_account)

    new = event_store.events_store_batch([request])

    assert tries[1] == {}  # the retry inserted nothing: the row was there
    (event,) = LineWebhookEvent.objects.all()
    assert new == [event.pk] and request.result == [event.pk] and request.error is None


@pytest.mark.django_db(transaction=True)
def test_a_statement_the_database_cancels_is_not_tried_again_and_fails_its_requests(
    line_account, enqueued, postgresql_only, monkeypatch
):
    """A timeout is the database's answer (the writer sets statement_timeout): trying again would make
    every request wait once more. Only a connection gone stale is retried."""
    calls = []

    def slow_insert(rows):
        calls.append(rows)
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 50")
            try:
                cursor.execute("SELECT pg_sleep(1)")
            finally:
                cursor.execute("SET statement_timeout = 0")

    monkeypatch.setattr(event_store, "events_insert", slow_insert)
    event_store._connection_checked.at = time.monotonic()
    requests = [_one_event_request(line_account) for _ in range(2)]

    assert event_store.events_store_batch(requests) == []

    assert len(calls) == 1
    assert all(isinstance(request.error, OperationalError) for request in requests)
    assert LineWebhookEvent.objects.count() == 0
