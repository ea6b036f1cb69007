"""Webhook writers of one process take turns on SQLite (omnichannel.db.write_turn); PostgreSQL
needs no turns."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connection

from channels_line.models import LineWebhookEvent
from omnichannel import db
from tests.channels_line.conftest import post_webhook
from tests.channels_line.payloads import load_payload

pytestmark = pytest.mark.django_db(transaction=True)

sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="turns exist only on SQLite")


@pytest.fixture
def turn_held():
    """Another thread of this process holds the write turn until the test ends."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write_turn():
            taken.set()
            done.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(30)
    yield
    done.set()
    holder.join(30)


@pytest.fixture
def short_busy_timeout(monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)


@sqlite_only
def test_a_thread_gets_the_turn_another_thread_holds_once_it_is_released():
    order: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with db.write_turn():
            holding.set()
            time.sleep(0.2)  # long enough for the main thread to be waiting
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(30)
    with db.write_turn():
        order.append("waiter")
    thread.join(30)
    assert order == ["holder done", "waiter"]


@sqlite_only
def test_no_turn_within_the_busy_timeout_is_a_database_error_naming_the_wait(turn_held, short_busy_timeout):
    with pytest.raises(OperationalError, match=r"no turn to write within 0\.2 s"), db.write_turn():
        pass


@sqlite_only
def test_a_webhook_that_gets_no_turn_answers_503_and_stores_nothing(
    client, line_account, turn_held, short_busy_timeout
):
    response = post_webhook(client, line_account, load_payload("message_text__user", fresh=True))
    assert response.status_code == 503
    assert LineWebhookEvent.objects.count() == 0


@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="PostgreSQL only")
def test_on_postgresql_writers_take_no_turns(turn_held):
    with db.write_turn(), db.write_turn():  # would wait for ever (then fail) if this were a lock
        pass
