"""The conversation lifecycle through the API: POST /api/v1/conversations/{id}/pick/, transfer/, wait/,
resume/, end/ and close/, with capacity held and released, who may do what, and the 409 answers of
conflicts (two agents picking at once on PostgreSQL included). Real database; routing's tasks that the
events queue are not run here."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from agents.models import AgentProfile
from omnichannel import lifecycle
from omnichannel.models import ConversationActivity, ConversationState
from routing.distribution import PICK_LOST, PICK_REFUSED_PUSH
from routing.models import DistributionMode, Offer, OfferState, QueueMembership
from tests.factories import AgentFactory, SupervisorFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

CONVERSATIONS = "/api/v1/conversations/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def act(client: APIClient, conversation, name: str, body: dict | None = None):
    return client.post(f"{CONVERSATIONS}{conversation.pk}/{name}/", body or {}, format="json")


def used(agent) -> int:
    return AgentProfile.objects.get(user=agent).capacity_used


@pytest.fixture
def pick_queue():
    queue = queue_make("Pick queue")
    return queue, workstream_make(
        "Pick ws", fallback=queue, distribution_mode=DistributionMode.PICK, capacity_units=2
    )


@pytest.mark.django_db
class TestPick:
    def test_an_agent_picks_an_open_item_of_their_queue_and_holds_its_capacity(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue, capacity=5)
        item = item_make(queue, workstream, priority=3, attributes={"skills": {"billing": 2}})
        item.routing = {"queue": queue.pk, "reason": "rule Billing matched", "attributes": {}}
        item.save(update_fields=["routing"])

        response = act(api_for(agent), item, "pick")

        assert response.status_code == 200, response.content
        data = response.json()
        assert data["state"] == "active" and data["assigned_agent"] == agent.pk
        assert data["capacity_held"] == 2 and data["priority"] == 3
        assert data["workstream"] == workstream.pk and data["queue"] == queue.pk
        assert data["routing"]["reason"] == "rule Billing matched"
        assert data["customer"]["external_id"] == item.social_profile.external_id
        assert used(agent) == 2
        item.refresh_from_db()
        assert item.assigned_agent == agent and item.state == ConversationState.ACTIVE

    def test_an_agent_without_capacity_left_gets_409_capacity(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue, capacity=1)
        item = item_make(queue, workstream)

        response = act(api_for(agent), item, "pick")

        assert response.status_code == 409
        assert response.json()["code"] == "capacity"
        assert "no capacity left" in response.json()["detail"]
        item.refresh_from_db()
        assert item.state == ConversationState.OPEN and used(agent) == 0

    def test_a_push_item_cannot_be_picked_409_and_a_non_member_gets_403(self, pick_queue):
        queue, workstream = pick_queue
        push_queue = queue_make("Push queue")
        push_item = item_make(push_queue, workstream_make("Push ws", fallback=push_queue))
        supervisor = SupervisorFactory()  # sees every conversation, is a member of no queue

        refused = act(api_for(supervisor), push_item, "pick")
        not_member = act(api_for(supervisor), item_make(queue, workstream), "pick")

        assert refused.status_code == 409
        assert refused.json() == {"detail": PICK_REFUSED_PUSH, "code": "conflict"}
        assert not_member.status_code == 403
        assert not_member.json() == {"detail": "You can pick only conversations of your queues."}

    def test_an_item_taken_meanwhile_is_not_visible_any_more_to_the_other_member(self, pick_queue):
        queue, workstream = pick_queue
        first, second = agent_make(queue), agent_make(queue)
        item = item_make(queue, workstream)

        assert act(api_for(first), item, "pick").status_code == 200
        assert act(api_for(second), item, "pick").status_code == 404


@pytest.mark.django_db
class TestTheWorkingAgentsActions:
    @pytest.fixture
    def picked(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue, capacity=4)
        item = item_make(queue, workstream)
        lifecycle.conversation_transition(
            conversation=item, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )
        return agent, item

    def test_wait_releases_capacity_and_resume_takes_it_again(self, picked):
        agent, item = picked
        client = api_for(agent)

        waiting = act(client, item, "wait")
        assert waiting.status_code == 200, waiting.content
        assert waiting.json()["state"] == "waiting" and waiting.json()["capacity_held"] == 0
        assert waiting.json()["assigned_agent"] == agent.pk
        assert used(agent) == 0

        resumed = act(client, item, "resume")
        assert resumed.status_code == 200, resumed.content
        assert resumed.json()["state"] == "active" and resumed.json()["capacity_held"] == 2
        assert used(agent) == 2

    def test_end_keeps_the_notes_and_close_closes(self, picked):
        agent, item = picked
        client = api_for(agent)

        ended = act(client, item, "end", {"notes": "Refund promised by Friday."})
        assert ended.status_code == 200, ended.content
        assert ended.json()["state"] == "wrap_up"
        item.refresh_from_db()
        assert item.wrap_up_notes == "Refund promised by Friday."
        assert used(agent) == 0  # the workstream does not block capacity for wrap-up

        closed = act(client, item, "close")
        assert closed.status_code == 200, closed.content
        assert closed.json()["state"] == "closed" and closed.json()["closed_at"] is not None
        assert list(item.activities.values_list("actor_id", "to_state")) == [
            (agent.pk, "active"),
            (agent.pk, "wrap_up"),
            (agent.pk, "closed"),
        ]

    def test_an_action_the_state_does_not_allow_is_409_with_the_reason(self, picked):
        agent, item = picked
        client = api_for(agent)
        assert act(client, item, "wait").status_code == 200

        response = act(client, item, "end")

        assert response.status_code == 409
        assert response.json() == {
            "detail": "A conversation that is Waiting cannot be ended.",
            "code": "conflict",
        }
        item.refresh_from_db()
        assert item.state == ConversationState.WAITING

    def test_a_supervisor_may_close_and_transfer_anyone_s_conversation_but_not_work_it(
        self, picked, pick_queue
    ):
        agent, item = picked
        supervisor = api_for(SupervisorFactory())

        for name in ("wait", "end", "resume"):
            response = act(supervisor, item, name)
            assert response.status_code == 403, name
            assert "only its agent can" in response.json()["detail"]
        other_queue = queue_make("Escalations")
        moved = act(supervisor, item, "transfer", {"queue": other_queue.pk, "note": "VIP"})
        assert moved.status_code == 200, moved.content
        assert moved.json()["state"] == "open" and moved.json()["queue"] == other_queue.pk
        closed = act(supervisor, item, "close")
        assert closed.status_code == 200 and closed.json()["state"] == "closed"
        assert used(agent) == 0


@pytest.mark.django_db
class TestTransfer:
    def test_an_agent_transfers_to_a_queue_with_a_note_and_loses_sight_of_it(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        item = item_make(queue, workstream)
        lifecycle.conversation_transition(
            conversation=item, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )
        billing = queue_make("Billing")
        client = api_for(agent)

        response = act(client, item, "transfer", {"queue": billing.pk, "note": "Invoice question"})

        assert response.status_code == 200, response.content
        data = response.json()
        assert data["state"] == "open" and data["queue"] == billing.pk and data["assigned_agent"] is None
        assert used(agent) == 0
        transfer = ConversationActivity.objects.get(conversation=item, kind="transferred")
        assert transfer.note == "Invoice question" and transfer.actor == agent
        assert client.get(f"{CONVERSATIONS}{item.pk}/").status_code == 404

    def test_a_transfer_to_an_agent_offers_it_to_them(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        colleague = agent_make(queue)
        item = item_make(queue, workstream)
        lifecycle.conversation_transition(
            conversation=item, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )

        response = act(api_for(agent), item, "transfer", {"agent": colleague.pk})

        assert response.status_code == 200, response.content
        offer = Offer.objects.get(conversation=item, state=OfferState.PENDING)
        assert offer.agent == colleague
        assert api_for(colleague).get(f"{CONVERSATIONS}{item.pk}/").status_code == 200

    def test_a_transfer_needs_a_queue_or_an_active_agent(self, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        item = item_make(queue, workstream)
        lifecycle.conversation_transition(
            conversation=item, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )
        client = api_for(agent)

        empty = act(client, item, "transfer", {"note": "?"})
        to_a_supervisor = act(client, item, "transfer", {"agent": SupervisorFactory().pk})
        to_nowhere = act(client, item, "transfer", {"queue": 999_999})

        assert empty.status_code == 400
        assert empty.json() == {"non_field_errors": ["Give the queue or the agent to transfer to (or both)."]}
        assert to_a_supervisor.status_code == 400 and "agent" in to_a_supervisor.json()
        assert to_nowhere.status_code == 400 and "queue" in to_nowhere.json()
        item.refresh_from_db()
        assert item.state == ConversationState.ACTIVE and item.assigned_agent == agent


@pytest.mark.django_db
def test_the_schema_lists_the_actions_with_their_409(tmp_path, client):
    client.force_login(AgentFactory())
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = json.loads(response.content)["paths"]
    for name in ("pick", "transfer", "wait", "resume", "end", "close"):
        assert "409" in paths[f"/api/v1/conversations/{{id}}/{name}/"]["post"]["responses"], name
    conversation = json.loads(response.content)["components"]["schemas"]["Conversation"]
    assert {"workstream", "queue", "assigned_agent", "priority", "routing", "capacity_held"} <= set(
        conversation["properties"]
    )


# --- Races (PostgreSQL: concurrent writers) -------------------------------------------------------


needs_concurrent_writers = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="Needs concurrent writers (PostgreSQL): on SQLite the two requests take turns.",
)


def picks_at_once(pickers: list, item) -> list:
    """Both pickers POST pick/ for `item` at the same moment (a thread and a connection each)."""
    clients = [api_for(picker) for picker in pickers]
    barrier = threading.Barrier(len(clients), timeout=30)
    answers: list = [None] * len(clients)

    def pick(index: int) -> None:
        try:
            barrier.wait()
            answers[index] = act(clients[index], item, "pick")
        finally:
            connection.close()

    threads = [threading.Thread(target=pick, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return answers


@pytest.mark.django_db(transaction=True)
@needs_concurrent_writers
def test_two_members_picking_one_item_at_once_one_gets_200_the_other_409():
    queue = queue_make("Race queue")
    workstream = workstream_make("Race ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    # Supervisors see the item whatever happens first, so the loser always reaches the pick itself.
    pickers = [SupervisorFactory(), SupervisorFactory()]
    for picker in pickers:
        AgentProfile.objects.create(user=picker, capacity=5)
        QueueMembership.objects.create(queue=queue, user=picker)
    item = item_make(queue, workstream)

    answers = picks_at_once(pickers, item)

    assert sorted(answer.status_code for answer in answers) == [200, 409], [a.content for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()["assigned_agent"]
    assert next(a for a in answers if a.status_code == 409).json() == {
        "detail": PICK_LOST,
        "code": "conflict",
    }
    item.refresh_from_db()
    assert item.assigned_agent_id == winner
    assert sorted(used(picker) for picker in pickers) == [0, 1]


@pytest.mark.django_db(transaction=True)
@needs_concurrent_writers
def test_two_agents_picking_the_same_items_at_once_each_item_goes_to_one_of_them():
    queue = queue_make("Race queue")
    workstream = workstream_make("Race ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agents = [agent_make(queue), agent_make(queue)]
    items = [item_make(queue, workstream) for _ in range(5)]

    for item in items:
        answers = picks_at_once(agents, item)
        statuses = sorted(answer.status_code for answer in answers)
        # The loser lost the conditional UPDATE (409), or its request began once the item was taken and
        # no longer in its view (404: an agent does not see another's conversation).
        assert statuses in ([200, 409], [200, 404]), [a.content for a in answers]
        loser = next(a for a in answers if a.status_code != 200)
        if loser.status_code == 409:
            assert loser.json() == {"detail": PICK_LOST, "code": "conflict"}
        item.refresh_from_db()
        assert (
            item.assigned_agent_id
            == next(a for a in answers if a.status_code == 200).json()["assigned_agent"]
        )
    assert sum(used(agent) for agent in agents) == 5
