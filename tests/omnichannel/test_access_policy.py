"""The one access policy (omnichannel.selectors.conversations_visible): an agent sees the conversations
assigned or offered to them and the Open items of their pick queues, and acts only in those assigned to
them; supervisors and administrators see every conversation. Every endpoint, the attachment view and
the admin follow it: an ID the caller may not see is 404 (as one that does not exist), a conversation
they see but may not act on is 403 with the reason."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from omnichannel import lifecycle, selectors
from omnichannel.models import AttachmentState, ConversationState, MessageKind
from routing.models import DistributionMode, Offer
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    AttachmentFactory,
    ConversationFactory,
    MessageFactory,
    SupervisorFactory,
)
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/api/v1/conversations/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def listed(client: APIClient) -> set[int]:
    response = client.get(CONVERSATIONS)
    assert response.status_code == 200, response.content
    return {c["id"] for c in response.json()["results"]}


def worked_by(agent, **fields):
    """A conversation an agent works (Active with them)."""
    return ConversationFactory(state=ConversationState.ACTIVE, assigned_agent=agent, **fields)


@pytest.fixture
def pick_queue():
    queue = queue_make("Pick queue")
    return queue, workstream_make("Pick ws", fallback=queue, distribution_mode=DistributionMode.PICK)


@pytest.fixture
def push_queue():
    queue = queue_make("Push queue")
    return queue, workstream_make("Push ws", fallback=queue)


class TestWhatAnAgentSees:
    def test_an_agent_lists_what_is_assigned_or_offered_to_them_and_the_open_items_of_their_pick_queues(
        self, pick_queue, push_queue
    ):
        pick, pick_ws = pick_queue
        push, push_ws = push_queue
        other_pick = queue_make("Someone else's pick queue")
        agent = agent_make(pick, push)
        other = agent_make(pick, push)

        active = worked_by(agent)
        closed = ConversationFactory(
            state=ConversationState.CLOSED, closed_at=timezone.now(), assigned_agent=agent
        )
        offered = item_make(push, push_ws)
        lifecycle.offer_make(conversation=offered, agent=agent, queue=push, timeout_seconds=60)
        pickable = item_make(pick, pick_ws)

        # Not theirs: another agent's, offered to another, an expired offer, an Open push item of their
        # queue, an Open item of a pick queue they are not a member of, a taken pick item, and one
        # transferred away from them.
        worked_by(other)
        offered_to_other = item_make(push, push_ws)
        lifecycle.offer_make(conversation=offered_to_other, agent=other, queue=push, timeout_seconds=60)
        expired = item_make(push, push_ws)
        lifecycle.offer_make(conversation=expired, agent=agent, queue=push, timeout_seconds=60)
        Offer.objects.filter(conversation=expired).update(
            expires_at=timezone.now() - datetime.timedelta(seconds=1)
        )
        item_make(push, push_ws)
        item_make(other_pick, pick_ws)
        worked_by(other, workstream=pick_ws, queue=pick)
        ConversationFactory(
            state=ConversationState.OPEN, previous_agent=agent, queue=push, workstream=push_ws
        )

        assert listed(api_for(agent)) == {active.pk, closed.pk, offered.pk, pickable.pk}

    def test_supervisors_and_administrators_see_every_conversation(self):
        agent = AgentFactory()
        mine = worked_by(agent)
        conversations = {mine.pk, worked_by(AgentFactory()).pk, ConversationFactory().pk}

        assert listed(api_for(SupervisorFactory())) == conversations
        assert listed(api_for(AdministratorFactory())) == conversations
        assert listed(api_for(agent)) == {mine.pk}

    def test_the_agents_list_takes_a_fixed_number_of_queries(self, pick_queue, django_assert_num_queries):
        pick, pick_ws = pick_queue
        agent = agent_make(pick)
        for _ in range(2):
            worked_by(agent)
            item_make(pick, pick_ws)
        # A fresh user object each time: no permissions cached on it.
        client = api_for(get_user_model().objects.get(pk=agent.pk))
        # The user's permissions (two), count, page: the policy is part of the one query.
        with django_assert_num_queries(4):
            assert client.get(CONVERSATIONS).json()["count"] == 4
        for _ in range(3):
            worked_by(agent)
            item_make(pick, pick_ws)
        client = api_for(get_user_model().objects.get(pk=agent.pk))
        with django_assert_num_queries(4):
            assert client.get(CONVERSATIONS).json()["count"] == 10

    def test_conversation_get_answers_none_alike_for_another_agents_conversation_and_a_missing_id(self):
        agent = AgentFactory()
        mine = worked_by(agent)
        theirs = worked_by(AgentFactory())

        assert selectors.conversation_get(viewer=agent, id=mine.pk) == mine
        assert selectors.conversation_get(viewer=agent, id=mine.pk).last_activity_at is not None
        assert selectors.conversation_get(viewer=agent, id=theirs.pk) is None
        assert selectors.conversation_get(viewer=agent, id=999_999) is None
        assert selectors.conversation_get(viewer=SupervisorFactory(), id=theirs.pk) == theirs

    def test_only_supervisors_and_administrators_hold_the_permission_to_see_every_conversation(self):
        assert SupervisorFactory().has_perm(selectors.CONVERSATION_VIEW_ALL_PERMISSION)
        assert AdministratorFactory().has_perm(selectors.CONVERSATION_VIEW_ALL_PERMISSION)
        agent = AgentFactory()
        assert agent.has_perm(selectors.CONVERSATION_VIEW_PERMISSION)
        assert not agent.has_perm(selectors.CONVERSATION_VIEW_ALL_PERMISSION)


class TestAnAgentGuessingAnotherAgentsIds:
    """Every endpoint answers 404 for another agent's conversation, as for an ID that does not exist."""

    def test_every_conversation_and_message_endpoint_is_a_404(self, settings, tmp_path):
        settings.MEDIA_ROOT = tmp_path
        agent = AgentFactory()
        theirs = worked_by(AgentFactory())
        failed = MessageFactory(conversation=theirs, failed=True)
        client = api_for(agent)
        base = f"{CONVERSATIONS}{theirs.pk}/"

        answers = {
            "retrieve": client.get(base).status_code,
            "messages": client.get(f"{base}messages/").status_code,
            "message": client.get(f"{base}messages/{failed.uuid}/").status_code,
            "send": client.post(f"{base}messages/", {"text": "Hi"}, format="json").status_code,
            "retry": client.post(f"{base}messages/{failed.uuid}/retry/").status_code,
            "read": client.post(f"{base}read/").status_code,
            "typing": client.post(f"{base}typing/", {}, format="json").status_code,
        }
        for name in ("pick", "wait", "resume", "end", "close"):
            answers[name] = client.post(f"{base}{name}/").status_code
        answers["transfer"] = client.post(f"{base}transfer/", {"queue": 1}, format="json").status_code

        assert answers == dict.fromkeys(answers, 404)
        theirs.refresh_from_db()
        assert theirs.state == ConversationState.ACTIVE and theirs.messages.count() == 1

    def test_the_attachment_view_is_a_404(self, settings, tmp_path):
        settings.MEDIA_ROOT = tmp_path
        agent = AgentFactory()
        attachment = AttachmentFactory(
            message=MessageFactory(conversation=worked_by(AgentFactory()), kind=MessageKind.IMAGE, text=""),
            file=SimpleUploadedFile("photo.png", b"\x89PNG data", content_type="image/png"),
            external_url="",
            state=AttachmentState.READY,
        )
        client = Client()
        client.force_login(agent)

        assert client.get(reverse("attachment-open", args=[attachment.pk])).status_code == 404
        client.force_login(SupervisorFactory())
        assert client.get(reverse("attachment-open", args=[attachment.pk])).status_code == 200

    def test_another_agents_offer_is_a_404_and_stays_pending(self, push_queue):
        push, push_ws = push_queue
        owner = agent_make(push)
        offer = lifecycle.offer_make(
            conversation=item_make(push, push_ws), agent=owner, queue=push, timeout_seconds=60
        )
        client = api_for(AgentFactory())

        assert client.post(f"/api/v1/offers/{offer.pk}/accept/").status_code == 404
        assert client.post(f"/api/v1/offers/{offer.pk}/reject/").status_code == 404
        assert client.get("/api/v1/offers/").json()["results"] == []
        offer.refresh_from_db()
        assert offer.state == "pending"


class TestWhatAnAgentMayDoInWhatTheySee:
    def test_an_item_of_their_pick_queue_or_an_offer_can_be_read_but_not_worked_403(
        self, pick_queue, push_queue
    ):
        pick, pick_ws = pick_queue
        push, push_ws = push_queue
        agent = agent_make(pick, push)
        pickable = item_make(pick, pick_ws)
        MessageFactory(conversation=pickable, text="Hello?")
        offered = item_make(push, push_ws)
        lifecycle.offer_make(conversation=offered, agent=agent, queue=push, timeout_seconds=60)
        client = api_for(agent)

        for conversation in (pickable, offered):
            base = f"{CONVERSATIONS}{conversation.pk}/"
            assert client.get(base).status_code == 200
            assert client.get(f"{base}messages/").status_code == 200
            send = client.post(f"{base}messages/", {"text": "Hi"}, format="json")
            assert send.status_code == 403
            assert send.json() == {
                "detail": "This conversation is not assigned to you: only its agent can send messages in it."
            }
            assert client.post(f"{base}read/").status_code == 403
            assert client.post(f"{base}typing/", {}, format="json").status_code == 403
            for name in ("wait", "resume", "end", "close"):
                response = client.post(f"{base}{name}/")
                assert response.status_code == 403, name
                assert "not assigned to you" in response.json()["detail"]
            transfer = client.post(f"{base}transfer/", {"queue": push.pk}, format="json")
            assert transfer.status_code == 403
        assert not pickable.messages.filter(direction="out").exists()
        pickable.refresh_from_db()
        offered.refresh_from_db()
        assert pickable.state == offered.state == ConversationState.OPEN
        assert pickable.queue == pick and offered.queue == push

    def test_an_agent_sends_in_their_own_conversation(self):
        agent = AgentFactory()
        mine = worked_by(agent)

        response = api_for(agent).post(
            f"{CONVERSATIONS}{mine.pk}/messages/", {"text": "Hello"}, format="json"
        )

        assert response.status_code == 202, response.content
        assert mine.messages.get().author == agent

    def test_a_supervisor_sends_in_any_conversation(self):
        supervisor = SupervisorFactory()
        theirs = worked_by(AgentFactory())

        response = api_for(supervisor).post(
            f"{CONVERSATIONS}{theirs.pk}/messages/", {"text": "Hi"}, format="json"
        )

        assert response.status_code == 202, response.content
        assert theirs.messages.get().author == supervisor


class TestTheAdminFollowsThePolicy:
    def test_an_agent_who_reaches_the_admin_lists_and_opens_their_own_conversations_only(self):
        agent = AgentFactory(is_staff=True)
        mine = worked_by(agent)
        theirs = worked_by(AgentFactory())
        client = Client()
        client.force_login(agent)

        changelist = client.get(reverse("admin:omnichannel_conversation_changelist"))

        assert changelist.status_code == 200
        shown = {row.pk for row in changelist.context["cl"].result_list}
        assert shown == {mine.pk}
        assert client.get(reverse("admin:omnichannel_conversation_change", args=[mine.pk])).status_code == 200
        other = client.get(reverse("admin:omnichannel_conversation_change", args=[theirs.pk]))
        assert other.status_code == 302  # the admin's answer for an object it cannot find
        assert theirs.pk not in {
            row.pk
            for row in client.get(reverse("admin:omnichannel_conversation_changelist"))
            .context["cl"]
            .result_list
        }

    def test_the_conversation_page_shows_its_agent_and_its_activity_in_one_query(
        self, pick_queue, django_assert_max_num_queries
    ):
        pick, pick_ws = pick_queue
        agent = agent_make(pick, capacity=5)
        agent.first_name = "Kenji"
        agent.save(update_fields=["first_name"])
        conversation = item_make(pick, pick_ws)
        lifecycle.conversation_transition(
            conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
        )
        lifecycle.conversation_transition(
            conversation=conversation, action=lifecycle.END, actor=agent, note="Refund promised by Friday"
        )
        client = Client()
        client.force_login(SupervisorFactory())
        url = reverse("admin:omnichannel_conversation_change", args=[conversation.pk])

        response = client.get(url)

        assert response.status_code == 200
        page = response.content.decode()
        assert "Refund promised by Friday" in page  # the wrap-up notes and the END activity's note
        assert page.count("Refund promised by Friday") >= 2
        assert "Wrap-up" in page and agent.username in page

        # More activity adds no query: the inline reads its rows with actor and agent at once.
        lifecycle.conversation_transition(conversation=conversation, action=lifecycle.CLOSE, actor=agent)
        with django_assert_max_num_queries(100) as first:
            client.get(url)
        for _ in range(3):
            conversation.activities.create(kind="routed", agent=agent, actor=agent, note="again")
        with django_assert_max_num_queries(100) as second:
            client.get(url)
        assert len(second.captured_queries) == len(first.captured_queries)
