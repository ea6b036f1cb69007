"""The webhook view, driven with signed payloads as LINE sends them."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.db import OperationalError
from django.urls import reverse

from channels_line.models import EventState, LineWebhookEvent, LineWebhookRejectedBody
from channels_line.services import event_store, line_account_update
from tests.channels_line.conftest import new_secret, post_webhook
from tests.channels_line.payloads import (
    body_bytes,
    load_payload,
    payload_names,
    sign,
)
from tests.conftest import broker_down

# The production path: requests outside any test transaction, so that each commit runs for real and
# the events are queued for processing after it (captured by `enqueued`).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _queued_for_processing_captured(enqueued):
    """What the intake queues for processing is kept in `enqueued` (no worker runs here)."""


def test_the_consoles_verify_request_is_answered_200_and_stores_nothing(client, line_account):
    response = post_webhook(client, line_account, load_payload("verify__empty"))
    assert response.status_code == 200
    assert LineWebhookEvent.objects.count() == 0


@pytest.mark.parametrize("name", [n for n in payload_names() if n != "verify__empty"])
def test_every_signed_event_is_stored_once_with_its_raw_json_and_queued(client, line_account, name, enqueued):
    payload = load_payload(name, fresh=True)
    response = post_webhook(client, line_account, payload)

    assert response.status_code == 200
    events = list(LineWebhookEvent.objects.filter(messaging_account=line_account).order_by("id"))
    assert [e.raw for e in events] == payload["events"]
    assert [e.webhook_event_id for e in events] == [e["webhookEventId"] for e in payload["events"]]
    assert all(e.state == EventState.PENDING and not e.raw_as_signed for e in events)
    assert enqueued == [[e.pk for e in events]]  # one enqueue, after the commit, of the new events


def test_a_redelivered_event_is_acknowledged_and_not_stored_or_queued_again(client, line_account, enqueued):
    payload = load_payload("message_text__user", fresh=True)
    post_webhook(client, line_account, payload)
    redelivery = json.loads(json.dumps(payload))
    redelivery["events"][0]["deliveryContext"]["isRedelivery"] = True

    enqueued.clear()
    response = post_webhook(client, line_account, redelivery)

    assert response.status_code == 200
    assert response.json()["duplicates"] == 1
    assert LineWebhookEvent.objects.count() == 1
    assert enqueued == []


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
    assert response.json()["reason"].startswith("unreadable body: not JSON")
    kept = LineWebhookRejectedBody.objects.get()
    assert kept.body == body.decode()
    assert kept.messaging_account == line_account
    assert "Expecting" in kept.reason


def test_json_without_an_events_list_is_kept_as_rejected(client, line_account):
    response = post_webhook(client, line_account, b'{"destination": "U1", "events": "nope"}')
    assert response.status_code == 400
    assert LineWebhookRejectedBody.objects.count() == 1


def test_only_post_is_allowed(client, line_account):
    assert client.get(reverse("line-webhook", args=[line_account.pk])).status_code == 405


def test_a_broker_outage_still_answers_200_and_keeps_the_event_for_the_sweep(
    client, line_account, monkeypatch, caplog
):
    from channels_line.services import intake

    monkeypatch.setattr(intake, "processing_enqueue", event_store.processing_enqueue)  # the real one
    with broker_down():
        response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert response.status_code == 200
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


def test_concurrent_requests_store_each_event_once_and_queue_each_new_one_once(line_account, enqueued):
    """Forty requests at once from sixteen threads, ten of them repeating another's events: the
    unique constraint decides, whichever request comes first."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection
    from django.test import Client

    payloads = [load_payload("message_text__user", fresh=True) for _ in range(30)]
    payloads += payloads[:10]

    def send(payload):
        try:
            return post_webhook(Client(), line_account, payload)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, payloads))

    assert [r.status_code for r in responses] == [200] * 40
    assert sum(r.json()["stored"] for r in responses) == 30
    assert sum(r.json()["duplicates"] for r in responses) == 10
    assert sorted(pk for call in enqueued for pk in call) == sorted(
        LineWebhookEvent.objects.values_list("pk", flat=True)
    )
    assert LineWebhookEvent.objects.count() == 30


def _signed_text_events(*texts: str) -> list[dict]:
    events = []
    for text in texts:
        event = load_payload("message_text__user", fresh=True)["events"][0]
        event["message"]["text"] = text
        events.append(event)
    return events


def _body(events: list[dict], *, raw_text_of_second: str | None = None) -> bytes:
    """A webhook body; the second event's text written as the given raw JSON text (for what
    json.dumps would never write: NaN in a string's place, escapes of lone surrogates)."""
    body = json.dumps({"destination": "U0", "events": events}, ensure_ascii=False)
    if raw_text_of_second is not None:
        body = body.replace('"__SECOND__"', raw_text_of_second)
    return body.encode()


@pytest.mark.parametrize(
    ("raw_json", "stored_text"),
    [
        ('"before\\u0000after"', "before\ufffdafter"),  # NUL: PostgreSQL text and jsonb refuse it
        ('"lone \\ud800 surrogate"', "lone \ufffd surrogate"),  # not UTF-8: no database takes it
        ("NaN", "NaN"),  # not JSON: PostgreSQL's jsonb refuses it
        ("-Infinity", "-Infinity"),
    ],
)
def test_a_signed_delivery_with_content_a_database_refuses_is_kept_whole_and_flagged(
    client, line_account, enqueued, raw_json, stored_text
):
    events = _signed_text_events("first", "__SECOND__", "third")
    response = post_webhook(client, line_account, _body(events, raw_text_of_second=raw_json))

    assert response.status_code == 200
    assert response.json()["stored"] == 3
    stored = list(LineWebhookEvent.objects.order_by("id"))
    assert [e.raw["message"]["text"] for e in stored] == ["first", stored_text, "third"]
    assert [bool(e.raw_as_signed) for e in stored] == [False, True, False]
    # The event as signed, in ASCII JSON text: what was refused is there, escaped.
    assert raw_json.replace("\\\\", "\\") in stored[1].raw_as_signed
    assert stored[1].raw_as_signed.isascii()
    assert len(enqueued[0]) == 3


def test_a_redelivery_of_an_altered_event_is_recognised_as_a_duplicate(client, line_account):
    events = _signed_text_events("__SECOND__")
    body = _body(events, raw_text_of_second='"nul \\u0000"')
    assert post_webhook(client, line_account, body).json()["stored"] == 1
    assert post_webhook(client, line_account, body).json() == {"status": "ok", "stored": 0, "duplicates": 1}


def test_deep_nesting_inside_an_event_is_kept_as_json_text_below_the_depth_limit(client, line_account):
    from channels_line.services.event_store import MAX_DEPTH

    event = _signed_text_events("deep")[0]
    event["unknownField"] = json.loads("[" * 200 + "]" * 200)
    response = post_webhook(client, line_account, _body([event]))

    assert response.status_code == 200
    stored = LineWebhookEvent.objects.get()
    assert stored.raw["message"]["text"] == "deep"
    node = stored.raw["unknownField"]
    level = 2  # the event is level 1
    while isinstance(node, list):
        node, level = node[0], level + 1
    assert isinstance(node, str) and node.startswith("[[") and level == MAX_DEPTH + 1
    assert stored.raw_as_signed.startswith("{")


def test_an_event_nested_too_deeply_to_read_is_kept_as_text_and_the_others_as_usual(
    client, line_account, enqueued
):
    events = _signed_text_events("first", "__SECOND__", "third")
    deep = "[" * 2000 + "]" * 2000
    body = _body(events, raw_text_of_second=deep)
    response = post_webhook(client, line_account, body)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "stored": 3, "duplicates": 0}
    stored = list(LineWebhookEvent.objects.order_by("id"))
    assert [e.raw["message"]["text"] for e in (stored[0], stored[2])] == ["first", "third"]
    # The deep one is the whole event that held it: kept as text, flagged by raw_as_signed.
    assert stored[1].raw["unread"] == "nested too deeply to be read"
    assert deep in stored[1].raw_as_signed and stored[1].raw_as_signed.startswith("{")
    assert len(enqueued[0]) == 3
    assert post_webhook(client, line_account, body).json()["duplicates"] == 3  # a redelivery


def test_an_entry_of_the_events_list_that_is_not_an_object_is_kept_as_an_event(client, line_account):
    events = [*_signed_text_events("first"), 5, "x", None]
    response = post_webhook(client, line_account, _body(events))

    assert response.json() == {"status": "ok", "stored": 4, "duplicates": 0}
    odd = list(LineWebhookEvent.objects.order_by("id"))[1:]
    assert [e.raw["notAnObject"] for e in odd] == [5, "x", None]
    assert [e.raw_as_signed for e in odd] == ["5", '"x"', "null"]


def test_a_signed_body_nested_too_deeply_outside_its_events_still_has_its_events_read(client, line_account):
    event = json.dumps(_signed_text_events("kept")[0]).encode()
    body = b'{"destination": ' + b"[" * 2000 + b"]" * 2000 + b', "events": [' + event + b"]}"
    assert post_webhook(client, line_account, body).json()["stored"] == 1
    assert LineWebhookEvent.objects.get().raw["message"]["text"] == "kept"


def test_a_signed_body_too_deep_to_read_with_no_events_list_gets_400_and_is_kept(client, line_account):
    body = b'{"destination": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    response = post_webhook(client, line_account, body)

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["reason"]
    assert LineWebhookRejectedBody.objects.get().body == body.decode()


def test_events_without_a_usable_id_get_distinct_keys_that_survive_a_redelivery(client, line_account):
    events = _signed_text_events("a", "b", "c", "d", "e")
    for event, event_id in zip(events, ["", "", 7, 7, None], strict=True):
        event["webhookEventId"] = event_id
    assert post_webhook(client, line_account, _body(events)).json()["stored"] == 5

    for event in events:
        event["deliveryContext"]["isRedelivery"] = True
    assert post_webhook(client, line_account, _body(events)).json() == {
        "status": "ok",
        "stored": 0,
        "duplicates": 5,
    }


def test_a_signed_body_that_is_not_utf8_or_holds_a_nul_byte_is_kept_as_rejected(client, line_account):
    for body in (b'{"events": [\xff]}', b'{"events": [], "x": "\x00"}'):
        response = post_webhook(client, line_account, body)
        assert response.status_code == 400
    kept = list(LineWebhookRejectedBody.objects.order_by("id").values_list("body", flat=True))
    assert kept == ['{"events": [\\xff]}', '{"events": [], "x": "\\x00"}']


def test_events_with_wrong_types_are_stored_with_their_lookups_left_empty(client, line_account):
    event = _signed_text_events("x")[0]
    event.update(type=["message"], source="U1", timestamp="soon", mode=None, replyToken={"a": 1})
    response = post_webhook(client, line_account, _body([event]))

    assert response.status_code == 200
    stored = LineWebhookEvent.objects.get()
    assert (stored.event_type, stored.source_user_id, stored.reply_token) == ("", "", "")
    assert stored.raw["type"] == ["message"]


def test_a_delivery_of_thousands_of_events_is_stored_whole(client, line_account, enqueued, settings):
    """Beyond what one statement may carry (SQLite takes 32,766 parameters): stored in several
    INSERTs of one transaction."""
    settings.LINE_WEBHOOK_MAX_BODY_BYTES = 16 * 1024 * 1024
    events = _signed_text_events(*(f"message {n}" for n in range(2000)))
    response = post_webhook(client, line_account, _body(events))

    assert response.json() == {"status": "ok", "stored": 2000, "duplicates": 0}
    assert LineWebhookEvent.objects.count() == 2000
    assert len({pk for call in enqueued for pk in call}) == 2000
