"""Live pages (omnichannel.live): notices commit with their change, reach the pages whose audience
they name, and a page that reconnects replays what it missed."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.db import transaction
from django.urls import reverse

from agents import roles
from omnichannel import live
from omnichannel.models import LiveNotice
from omnichannel.services import message_send
from tests.factories import TEST_PASSWORD, AgentFactory, ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def notice(**fields) -> dict:
    return {
        "id": 0,
        "kind": live.MESSAGE,
        "agent_id": None,
        "conversation_id": None,
        "queue_id": None,
        "supervisors": False,
        "data": {},
        **fields,
    }


def test_an_audience_wants_its_agent_s_conversation_s_queue_s_and_supervisors_notices_only():
    audience = live.Audience(agent_id=7, conversation_ids=frozenset({3}), queue_ids=frozenset({5}))
    assert audience.wants(notice(agent_id=7))
    assert audience.wants(notice(conversation_id=3))
    assert audience.wants(notice(queue_id=5))
    assert not audience.wants(notice(agent_id=8, conversation_id=4, queue_id=6))
    assert not audience.wants(notice(supervisors=True))
    assert live.Audience(agent_id=1, supervisor=True).wants(notice(supervisors=True))


def test_a_message_sent_tells_the_conversation_s_pages_and_a_rolled_back_one_tells_nobody():
    agent = AgentFactory()
    conversation = ConversationFactory(assigned_agent=agent, state="active")
    message = message_send(conversation=conversation, author=agent, text="Hello")

    assert list(LiveNotice.objects.values_list("kind", "conversation_id", "agent_id", "data")) == [
        (live.MESSAGE, conversation.pk, agent.pk, {"message": message.pk})
    ]

    with pytest.raises(RuntimeError), transaction.atomic():
        message_send(conversation=conversation, author=agent, text="Never")
        raise RuntimeError
    assert LiveNotice.objects.count() == 1


def test_the_hub_hands_notices_to_matching_listeners_and_waits_for_a_missing_id_before_passing_it(
    live_hub, monkeypatch
):
    conversation = ConversationFactory()
    first = LiveNotice.objects.create(kind=live.MESSAGE, conversation_id=conversation.pk)
    hub = live_hub
    hub.floor = first.pk - 1
    mine = live.Listener(audience=live.Audience(agent_id=0, conversation_ids=frozenset({conversation.pk})))
    other = live.Listener(
        audience=live.Audience(agent_id=0, conversation_ids=frozenset({conversation.pk + 1}))
    )
    hub.file(mine)
    hub.file(other)
    # An ID taken by a transaction still running (or rolled back): the next one is seen first.
    later = LiveNotice.objects.create(id=first.pk + 2, kind=live.MESSAGE, conversation_id=conversation.pk)

    clock = [1000.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    hub.poll()
    assert [row["id"] for _, row in list(mine.items.queue)] == [first.pk, later.pk]
    assert other.items.empty()
    assert hub.floor == first.pk  # not past the missing ID yet: it may still commit

    late = LiveNotice.objects.create(id=first.pk + 1, kind=live.MESSAGE, conversation_id=conversation.pk)
    hub.poll()
    assert [row["id"] for _, row in list(mine.items.queue)][-1] == late.pk
    assert hub.floor == later.pk

    LiveNotice.objects.create(id=later.pk + 2, kind=live.MESSAGE, conversation_id=conversation.pk)
    hub.poll()
    assert hub.floor == later.pk
    clock[0] += live.GAP_WAIT_SECONDS + 1  # that ID never came: a rolled-back transaction took it
    hub.poll()
    assert hub.floor == later.pk + 2


def read_events(response, until: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE response until the event `until` (the stream never ends)."""
    events, current = [], {}
    for chunk in response.streaming_content:
        for line in chunk.decode().splitlines():
            if line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = line[6:]
            elif not line and current:
                events.append((current.get("event"), current.get("data")))
                if current.get("event") == until:
                    response.close()
                    return events
                current = {}
    return events


def test_a_page_that_reconnects_gets_what_it_missed_for_its_audience_only(client):
    agent = AgentFactory()
    client.force_login(agent)
    mine = ConversationFactory(assigned_agent=agent, state="active")
    theirs = ConversationFactory()
    start = live.hub.cursor()
    live.publish(live.MESSAGE, agent_id=agent.pk, conversation_id=mine.pk, message=1)
    live.publish(live.MESSAGE, conversation_id=theirs.pk, message=2)
    live.publish(live.OFFER, agent_id=agent.pk, offer=3)
    live.hub.floor = LiveNotice.objects.order_by("-id").first().pk

    response = client.get(reverse("inbox:live"), headers={"last-event-id": str(start)})

    assert response["Content-Type"] == "text/event-stream"
    events = read_events(response, until="ready")
    assert [name for name, _ in events] == ["message", "offer", "ready"]
    assert f'"conversation":{mine.pk}' in events[0][1]


def test_a_conversation_the_user_may_not_see_cannot_be_listened_to(client):
    agent = AgentFactory()
    client.force_login(agent)
    theirs = ConversationFactory()
    assert client.get(reverse("inbox:live"), {"conversation": theirs.pk}).status_code == 404
    assert client.get(reverse("inbox:live"), {"conversation": "x"}).status_code == 404


def test_the_stream_asks_for_sign_in_and_refuses_users_without_an_inbox_role(client):
    response = client.get(reverse("inbox:live"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(UserFactory(role=None))
    assert client.get(reverse("inbox:live")).status_code == 403


def test_a_message_reaches_an_open_stream_over_http_within_a_second(live_server):
    agent = AgentFactory(role=roles.AGENT)
    conversation = ConversationFactory(assigned_agent=agent, state="active")
    session = requests.Session()
    login = session.get(f"{live_server.url}/accounts/login/")
    session.post(
        f"{live_server.url}/accounts/login/",
        data={
            "username": agent.username,
            "password": TEST_PASSWORD,
            "csrfmiddlewaretoken": login.cookies["csrftoken"],
        },
    )
    received: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with session.get(f"{live_server.url}/inbox/live/", stream=True, timeout=10) as response:
            for line in response.iter_lines(chunk_size=1, decode_unicode=True):
                if line == "event: ready":
                    opened.set()
                if line.startswith("event: message"):
                    received.append(line)
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(5)
    sent_at = time.monotonic()
    message_send(conversation=conversation, author=agent, text="Hello")
    listener.join(5)
    assert received == ["event: message"]
    assert time.monotonic() - sent_at < 1.0


def test_a_quiet_page_keeps_its_place_its_keep_alive_carries_the_hub_s_floor(client, live_hub, monkeypatch):
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.05)
    agent = AgentFactory()
    client.force_login(agent)
    live.publish(live.OFFER, agent_id=AgentFactory().pk, offer=1)  # not for this page

    response = client.get(reverse("inbox:live"))
    chunks = iter(response.streaming_content)
    assert b"event: ready" in next(chunk for chunk in chunks if b"ready" in chunk)
    keep_alive = next(chunks).decode()
    response.close()

    assert keep_alive == f"id: {live_hub.floor}\n\n"  # an ID, no data: the browser fires nothing
