"""Consults (omnichannel.consults): the agent working a conversation asks a colleague to look at it. The
colleague sees it read-only through the one access policy while the consult runs, and loses it when
the consult ends or the conversation is closed; every change tells the consultant's pages."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from rest_framework.test import APIClient

from omnichannel import consults, lifecycle, selectors
from omnichannel.models import ConversationConsult, LiveNotice
from routing.models import DistributionMode
from tests.factories import AgentFactory, SupervisorFactory, UserFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def worked():
    """An Active conversation worked by `agent`, and a colleague of the same queue."""
    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agent, colleague = agent_make(queue), agent_make()
    conversation = item_make(queue, workstream)
    lifecycle.conversation_transition(
        conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
    )
    return agent, colleague, conversation


def sees(user, conversation) -> bool:
    return selectors.conversation_get(viewer=user, id=conversation.pk) is not None


def test_a_consulted_agent_sees_the_conversation_read_only_until_the_consult_ends(worked):
    agent, colleague, conversation = worked
    assert not sees(colleague, conversation)

    consult = consults.consult_start(
        conversation=conversation, consultant=colleague, requested_by=agent, note="Is this a refund case?"
    )

    seen = selectors.conversation_get(viewer=colleague, id=conversation.pk)
    assert seen is not None
    assert not selectors.conversation_worked_by(viewer=colleague, conversation=seen)
    assert consult.note == "Is this a refund case?" and consult.requested_by == agent
    assert [c.consultant for c in consults.consults_running(conversation=conversation)] == [colleague]

    consults.consult_end(consult=consult, actor=colleague)

    assert not sees(colleague, conversation)
    assert sees(agent, conversation)
    assert list(consults.consults_running(conversation=conversation)) == []
    consult.refresh_from_db()
    assert consult.ended_at is not None


def test_the_consultant_cannot_write_to_the_customer_through_the_api(worked):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    client = APIClient()
    client.force_authenticate(colleague)

    assert client.get(f"/api/v1/conversations/{conversation.pk}/").status_code == 200
    sent = client.post(f"/api/v1/conversations/{conversation.pk}/messages/", {"text": "Hi"}, format="json")
    closed = client.post(f"/api/v1/conversations/{conversation.pk}/close/", {}, format="json")

    assert sent.status_code == 403
    assert closed.status_code == 403
    conversation.refresh_from_db()
    assert conversation.state == "active"


def test_closing_the_conversation_however_it_happens_ends_its_consults(worked):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)

    # Closed outside the inbox pages (here the lifecycle itself, as the admin and the sweeps do).
    lifecycle.conversation_transition(conversation=conversation, action=lifecycle.CLOSE, actor=agent)

    assert not sees(colleague, conversation)
    assert sees(agent, conversation)
    assert list(consults.consults_running(conversation=conversation)) == []


def test_a_transfer_through_the_api_ends_the_conversation_s_consults(worked):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    client = APIClient()
    client.force_authenticate(agent)

    response = client.post(
        f"/api/v1/conversations/{conversation.pk}/transfer/", {"queue": conversation.queue_id}, format="json"
    )

    assert response.status_code == 200, response.content
    assert list(consults.consults_running(conversation=conversation)) == []
    assert not sees(colleague, conversation)


def test_putting_the_conversation_aside_keeps_its_consults(worked):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)

    lifecycle.conversation_transition(conversation=conversation, action=lifecycle.WAIT, actor=agent)

    assert [c.consultant for c in consults.consults_running(conversation=conversation)] == [colleague]


def test_consults_end_all_ends_every_running_consult_of_the_conversation(worked):
    agent, colleague, conversation = worked
    other = AgentFactory()
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    consults.consult_start(conversation=conversation, consultant=other, requested_by=agent)

    assert consults.consults_end_all(conversation=conversation, actor=agent) == 2
    assert consults.consults_end_all(conversation=conversation, actor=agent) == 0

    assert not sees(colleague, conversation) and not sees(other, conversation)
    assert not ConversationConsult.objects.filter(ended_at__isnull=True).exists()


def test_starting_and_ending_a_consult_tells_the_consultant_s_pages_and_the_conversation_s(worked):
    agent, colleague, conversation = worked
    LiveNotice.objects.all().delete()

    consult = consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    consults.consult_end(consult=consult, actor=agent)

    notices = list(LiveNotice.objects.order_by("id").values("kind", "agent_id", "conversation_id", "data"))
    assert notices == [
        {
            "kind": "conversation",
            "agent_id": colleague.pk,
            "conversation_id": conversation.pk,
            "data": {"consult": consult.pk},
        },
        {
            "kind": "conversation",
            "agent_id": colleague.pk,
            "conversation_id": conversation.pk,
            "data": {"consult": consult.pk, "ended": True},
        },
    ]


def test_only_another_active_agent_can_be_consulted(worked):
    agent, _colleague, conversation = worked
    inactive = AgentFactory(is_active=False)

    for consultant in (agent, UserFactory(), SupervisorFactory(), inactive):
        with pytest.raises(ValidationError):
            consults.consult_start(conversation=conversation, consultant=consultant, requested_by=agent)
    assert not ConversationConsult.objects.exists()


def test_a_consult_is_refused_while_one_runs_for_that_agent_or_once_the_conversation_is_over(worked):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)

    with pytest.raises(lifecycle.LifecycleConflict) as twice:
        consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    assert "is consulted on this conversation already" in twice.value.message

    lifecycle.conversation_transition(conversation=conversation, action=lifecycle.END, actor=agent)
    with pytest.raises(lifecycle.LifecycleConflict) as ended:
        consults.consult_start(conversation=conversation, consultant=AgentFactory(), requested_by=agent)
    assert ended.value.message == "A conversation that is Wrap-up cannot be consulted on."


def test_a_consult_ends_once(worked):
    agent, colleague, conversation = worked
    consult = consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    consults.consult_end(consult=consult, actor=agent)

    with pytest.raises(lifecycle.LifecycleConflict) as again:
        consults.consult_end(consult=consult, actor=colleague)

    assert again.value.message == "This consult has ended already."


def test_who_may_end_a_consult(worked):
    agent, colleague, conversation = worked
    consult = consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    consult = ConversationConsult.objects.select_related("conversation").get(pk=consult.pk)

    assert consults.consult_can_end(viewer=agent, consult=consult)
    assert consults.consult_can_end(viewer=colleague, consult=consult)
    assert consults.consult_can_end(viewer=SupervisorFactory(), consult=consult)
    assert not consults.consult_can_end(viewer=AgentFactory(), consult=consult)


def test_the_access_policy_stays_one_query_with_consults(worked, django_assert_num_queries):
    agent, colleague, conversation = worked
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    colleague.has_perm(selectors.CONVERSATION_VIEW_PERMISSION)  # the permission cache, as in a request

    with django_assert_num_queries(1):
        assert [c.pk for c in selectors.conversation_list(viewer=colleague)] == [conversation.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="Needs concurrent writers (PostgreSQL): on SQLite the two requests take turns.",
)
def test_two_consults_of_one_agent_started_at_once_one_wins_the_other_is_refused():
    queue = queue_make("Race queue")
    workstream = workstream_make("Race ws", fallback=queue)
    agent, colleague = agent_make(queue), agent_make()
    conversation = item_make(queue, workstream)
    lifecycle.conversation_transition(
        conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
    )
    barrier = threading.Barrier(2, timeout=30)
    outcomes: list[str] = []

    def start() -> None:
        try:
            barrier.wait()
            consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
            outcomes.append("started")
        except lifecycle.LifecycleConflict as conflict:
            outcomes.append(conflict.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == sorted(
        ["started", f"{consults.user_name(colleague)} is consulted on this conversation already."]
    )
    assert ConversationConsult.objects.filter(ended_at__isnull=True).count() == 1
