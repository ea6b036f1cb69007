"""/api/v1/agents/ (supervisors: every agent; PATCH of capacity and skills), /api/v1/agents/me/ (an
agent's own profile; PATCH of their presence) and /api/v1/offers/ (the caller's pending offers; accept,
reject). Real database; the routing tasks that events queue are not run here."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import AgentProfile, AgentSkill, Presence, Skill
from omnichannel import events, lifecycle
from omnichannel.models import ConversationState
from routing.models import Offer, OfferState
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    ContactFactory,
    SocialProfileFactory,
    SupervisorFactory,
)
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents/"
ME = "/api/v1/agents/me/"
OFFERS = "/api/v1/offers/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(pk=user.pk))  # no permissions cached
    return client


def skill(name: str) -> Skill:
    return Skill.objects.create(name=name)


@pytest.fixture
def queue():
    return queue_make("Support")


@pytest.fixture
def workstream(queue):
    return workstream_make("Support ws", fallback=queue, offer_timeout_seconds=90)


def offer_to(agent, queue, workstream, **item_fields) -> Offer:
    return lifecycle.offer_make(
        conversation=item_make(queue, workstream, **item_fields), agent=agent, queue=queue, timeout_seconds=90
    )


class TestTheAgentList:
    def test_a_supervisor_lists_every_agent_with_presence_capacity_skills_and_queues(self, queue):
        other_queue = queue_make("Billing")
        mei = agent_make(queue, other_queue, presence=Presence.AVAILABLE, capacity=4, used=1)
        mei.first_name, mei.last_name = "Mei", "Tan"
        mei.save(update_fields=["first_name", "last_name"])
        profile = AgentProfile.objects.get(user=mei)
        AgentSkill.objects.create(profile=profile, skill=skill("Billing"), level=7)
        AgentSkill.objects.create(profile=profile, skill=skill("Thai"), level=3)
        newcomer = AgentFactory()  # in the Agent group, no profile yet: made on demand

        response = api_for(SupervisorFactory()).get(AGENTS)

        assert response.status_code == 200, response.content
        rows = {row["user"]: row for row in response.json()["results"]}
        assert set(rows) == {mei.pk, newcomer.pk}
        assert rows[mei.pk] == {
            "user": mei.pk,
            "username": mei.username,
            "name": "Mei Tan",
            "presence": "available",
            "capacity": 4,
            "capacity_used": 1,
            "skills": [{"name": "Billing", "level": 7}, {"name": "Thai", "level": 3}],
            "queues": sorted([queue.pk, other_queue.pk]),
        }
        assert rows[newcomer.pk]["presence"] == "offline" and rows[newcomer.pk]["queues"] == []
        assert AgentProfile.objects.filter(user=newcomer).exists()

    def test_the_list_takes_a_fixed_number_of_queries(self, queue, django_assert_num_queries):
        for _ in range(2):
            profile = AgentProfile.objects.get(user=agent_make(queue))
            AgentSkill.objects.create(profile=profile, skill=skill(f"Skill {profile.pk}"), level=2)
        supervisor = SupervisorFactory()
        # Permissions (two), missing profiles, count, page, skills, memberships.
        client = api_for(supervisor)
        with django_assert_num_queries(7):
            assert client.get(AGENTS).json()["count"] == 2
        for _ in range(3):
            profile = AgentProfile.objects.get(user=agent_make(queue, queue_make(f"Q{_}")))
            AgentSkill.objects.create(profile=profile, skill=skill(f"Skill {profile.pk}"), level=2)
        client = api_for(supervisor)
        with django_assert_num_queries(7):
            assert client.get(AGENTS).json()["count"] == 5

    def test_an_agent_gets_403_on_the_list_and_on_a_colleague(self, queue):
        agent = agent_make(queue)
        colleague = agent_make(queue)
        client = api_for(agent)

        assert client.get(AGENTS).status_code == 403
        assert client.get(f"{AGENTS}{colleague.pk}/").status_code == 403
        assert client.patch(f"{AGENTS}{colleague.pk}/", {"capacity": 99}, format="json").status_code == 403
        assert AgentProfile.objects.get(user=colleague).capacity == 10

    def test_an_administrator_lists_agents_too(self, queue):
        agent = agent_make(queue)
        response = api_for(AdministratorFactory()).get(AGENTS)
        assert response.status_code == 200
        assert [row["user"] for row in response.json()["results"]] == [agent.pk]


class TestASupervisorChangesAnAgent:
    def test_capacity_and_skills_are_replaced_and_a_raised_capacity_is_announced(self, queue, monkeypatch):
        agent = agent_make(queue, capacity=2)
        profile = AgentProfile.objects.get(user=agent)
        AgentSkill.objects.create(profile=profile, skill=skill("Billing"), level=2)
        skill("Thai")
        announced: list = []
        monkeypatch.setattr(events, "emit", lambda name, **data: announced.append((name, data)))

        response = api_for(SupervisorFactory()).patch(
            f"{AGENTS}{agent.pk}/",
            {"capacity": 5, "skills": [{"name": "thai", "level": 8}]},
            format="json",
        )

        assert response.status_code == 200, response.content
        assert response.json()["capacity"] == 5
        assert response.json()["skills"] == [{"name": "Thai", "level": 8}]
        profile.refresh_from_db()
        assert profile.capacity == 5
        assert list(profile.agent_skills.values_list("skill__name", "level")) == [("Thai", 8)]
        assert announced == [(events.AGENT_CAPACITY_RELEASED, {"agent_id": agent.pk, "units": 3})]

    def test_an_unknown_or_repeated_skill_or_a_bad_level_is_refused_with_nothing_changed(self, queue):
        agent = agent_make(queue, capacity=2)
        skill("Billing")
        client = api_for(SupervisorFactory())
        url = f"{AGENTS}{agent.pk}/"

        unknown = client.patch(
            url, {"capacity": 7, "skills": [{"name": "Klingon", "level": 2}]}, format="json"
        )
        repeated = client.patch(
            url, {"skills": [{"name": "Billing", "level": 2}, {"name": "billing", "level": 3}]}, format="json"
        )
        bad_level = client.patch(url, {"skills": [{"name": "Billing", "level": 11}]}, format="json")

        assert unknown.status_code == 400
        assert "Unknown skill(s): Klingon" in unknown.json()["skills"][0]
        assert repeated.status_code == 400 and "billing repeated" in repeated.json()["skills"][0]
        assert bad_level.status_code == 400 and "skills" in bad_level.json()
        profile = AgentProfile.objects.get(user=agent)
        assert profile.capacity == 2 and not profile.agent_skills.exists()


class TestMe:
    def test_an_agent_reads_their_own_profile_made_on_demand(self):
        agent = AgentFactory()

        response = api_for(agent).get(ME)

        assert response.status_code == 200, response.content
        assert response.json()["user"] == agent.pk and response.json()["presence"] == "offline"
        assert AgentProfile.objects.filter(user=agent).exists()

    def test_an_agent_sets_their_presence_and_that_is_announced_once(self, monkeypatch):
        agent = AgentFactory()
        announced: list = []
        monkeypatch.setattr(events, "emit", lambda name, **data: announced.append(name))
        client = api_for(agent)

        first = client.patch(ME, {"presence": "available"}, format="json")
        again = client.patch(ME, {"presence": "available"}, format="json")

        assert first.status_code == again.status_code == 200, first.content
        assert first.json()["presence"] == "available"
        profile = AgentProfile.objects.get(user=agent)
        assert profile.presence == Presence.AVAILABLE and profile.presence_changed_at is not None
        assert announced == [events.AGENT_PRESENCE_CHANGED]

    def test_an_agent_cannot_change_their_capacity_or_set_an_unknown_presence(self):
        agent = AgentFactory()
        client = api_for(agent)

        capacity = client.patch(ME, {"capacity": 99, "presence": "busy"}, format="json")
        unknown = client.patch(ME, {"presence": "asleep"}, format="json")

        assert capacity.status_code == 400
        assert capacity.json() == {"capacity": ["Only your presence can be changed here."]}
        assert unknown.status_code == 400 and "presence" in unknown.json()
        profile = AgentProfile.objects.get(user=agent)
        assert profile.capacity == 10 and profile.presence == Presence.OFFLINE

    def test_a_user_without_a_role_gets_403(self):
        client = APIClient()
        client.force_authenticate(get_user_model().objects.create_user("nobody"))
        assert client.get(ME).status_code == 403


class TestOffers:
    def test_an_agent_lists_their_pending_unexpired_offers_with_queue_and_customer(self, queue, workstream):
        agent = agent_make(queue)
        customer = SocialProfileFactory(
            display_name="Somchai", language="th", contact=ContactFactory(name="S. P.")
        )
        mine = offer_to(agent, queue, workstream, account=customer.messaging_account)
        # item_make makes its own customer: give this offer's conversation the one above.
        mine.conversation.social_profile = customer
        mine.conversation.thread_id = customer.external_id
        mine.conversation.save(update_fields=["social_profile", "thread_id"])
        expired = offer_to(agent, queue, workstream)
        Offer.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
        offer_to(agent_make(queue), queue, workstream)  # someone else's

        response = api_for(agent).get(OFFERS)

        assert response.status_code == 200, response.content
        assert response.json()["results"] == [
            {
                "id": mine.pk,
                "conversation": mine.conversation_id,
                "queue": queue.pk,
                "queue_name": "Support",
                "customer": {
                    "display_name": "Somchai",
                    "picture_url": customer.picture_url,
                    "language": "th",
                    "contact_name": "S. P.",
                },
                "created_at": mine.created_at.isoformat().replace("+00:00", "Z"),
                "expires_at": mine.expires_at.isoformat().replace("+00:00", "Z"),
            }
        ]

    def test_the_offer_list_takes_a_fixed_number_of_queries(
        self, queue, workstream, django_assert_num_queries
    ):
        agent = agent_make(queue)
        offer_to(agent, queue, workstream)
        client = api_for(agent)
        with django_assert_num_queries(4):  # permissions (two), count, page
            assert client.get(OFFERS).json()["count"] == 1
        for _ in range(3):
            offer_to(agent, queue, workstream)
        client = api_for(agent)
        with django_assert_num_queries(4):
            assert client.get(OFFERS).json()["count"] == 4

    def test_accepting_makes_the_conversation_active_with_the_agent(self, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)

        response = api_for(agent).post(f"{OFFERS}{offer.pk}/accept/")

        assert response.status_code == 200, response.content
        assert response.json()["id"] == offer.conversation_id
        assert response.json()["state"] == "active" and response.json()["assigned_agent"] == agent.pk
        offer.refresh_from_db()
        assert offer.state == OfferState.ACCEPTED
        assert offer.conversation.state == ConversationState.ACTIVE
        assert AgentProfile.objects.get(user=agent).capacity_used == 1

    def test_an_expired_or_answered_offer_is_409_with_the_reason(self, queue, workstream):
        agent = agent_make(queue)
        expired = offer_to(agent, queue, workstream)
        Offer.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
        accepted = offer_to(agent, queue, workstream)
        client = api_for(agent)
        assert client.post(f"{OFFERS}{accepted.pk}/accept/").status_code == 200

        late = client.post(f"{OFFERS}{expired.pk}/accept/")
        twice = client.post(f"{OFFERS}{accepted.pk}/accept/")

        assert late.status_code == 409
        assert late.json() == {"detail": "This offer has expired.", "code": "conflict"}
        assert twice.status_code == 409
        assert twice.json() == {"detail": "This offer was accepted already.", "code": "conflict"}
        expired.refresh_from_db()
        assert expired.state == OfferState.PENDING and expired.conversation.state == ConversationState.OPEN

    def test_rejecting_releases_the_capacity_and_a_second_reject_is_409(self, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)
        assert AgentProfile.objects.get(user=agent).capacity_used == 1
        client = api_for(agent)

        rejected = client.post(f"{OFFERS}{offer.pk}/reject/")
        again = client.post(f"{OFFERS}{offer.pk}/reject/")

        assert rejected.status_code == 204
        offer.refresh_from_db()
        assert offer.state == OfferState.REJECTED
        assert AgentProfile.objects.get(user=agent).capacity_used == 0
        assert offer.conversation.state == ConversationState.OPEN
        assert again.status_code == 409
        assert again.json() == {
            "detail": "This offer is not pending any more: it was rejected.",
            "code": "conflict",
        }
        assert client.get(OFFERS).json()["count"] == 0
