"""Agent profiles: one per user, created on demand (also when two requests ask at once), with
presence, capacity and skills with levels; the admin list creates the missing ones for the Agent group."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from agents.models import AgentProfile, AgentSkill, Presence, Skill
from agents.services import agent_profile_for, agent_profiles_ensure
from tests.factories import AdministratorFactory, AgentFactory, SupervisorFactory, UserFactory


@pytest.mark.django_db
class TestOnDemand:
    def test_a_profile_is_made_on_first_use_offline_with_the_default_capacity_and_then_reused(self):
        agent = AgentFactory()

        profile = agent_profile_for(agent)

        assert (profile.presence, profile.capacity) == (Presence.OFFLINE, 10)
        assert agent_profile_for(agent).pk == profile.pk
        assert AgentProfile.objects.filter(user=agent).count() == 1

    def test_every_agent_without_a_profile_gets_one_and_no_one_else(self):
        first, second = AgentFactory(), AgentFactory()
        agent_profile_for(first)
        supervisor = SupervisorFactory()
        UserFactory()

        assert agent_profiles_ensure() == 1
        assert agent_profiles_ensure() == 0
        assert set(AgentProfile.objects.values_list("user_id", flat=True)) == {first.pk, second.pk}
        assert not AgentProfile.objects.filter(user=supervisor).exists()

    def test_the_admin_list_shows_every_agent_with_a_profile_made_on_demand(self, client):
        agent = AgentFactory(username="mei")
        client.force_login(SupervisorFactory())

        response = client.get(reverse("admin:agents_agentprofile_changelist"))

        assert response.status_code == 200
        assert [p.user for p in response.context["cl"].result_list] == [agent]

    def test_a_supervisor_changes_an_agents_capacity_and_skills_on_the_profile_page(self, client):
        agent = AgentFactory()
        profile = agent_profile_for(agent)
        billing = Skill.objects.create(name="Billing")
        client.force_login(SupervisorFactory())

        response = client.post(
            reverse("admin:agents_agentprofile_change", args=[profile.pk]),
            {
                "presence": "available",
                "capacity": "6",
                "agent_skills-TOTAL_FORMS": "1",
                "agent_skills-INITIAL_FORMS": "0",
                "agent_skills-MIN_NUM_FORMS": "0",
                "agent_skills-MAX_NUM_FORMS": "1000",
                "agent_skills-0-skill": str(billing.pk),
                "agent_skills-0-level": "7",
                "agent_skills-0-profile": str(profile.pk),
            },
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        profile.refresh_from_db()
        assert (profile.presence, profile.capacity) == (Presence.AVAILABLE, 6)
        assert [(s.skill.name, s.level) for s in profile.agent_skills.all()] == [("Billing", 7)]

    def test_an_administrator_adds_a_profile_only_for_users_who_have_none(self, client):
        with_profile, without = AgentFactory(), AgentFactory()
        agent_profile_for(with_profile)
        client.force_login(AdministratorFactory())

        form = client.get(reverse("admin:agents_agentprofile_add")).context["adminform"].form

        users = set(form.fields["user"].queryset)
        assert without in users and with_profile not in users


@pytest.mark.django_db
class TestConstraints:
    def test_a_skill_level_is_from_1_to_10(self):
        profile = agent_profile_for(AgentFactory())
        skill = Skill.objects.create(name="Thai")

        with pytest.raises(IntegrityError), transaction.atomic():
            AgentSkill.objects.create(profile=profile, skill=skill, level=11)
        AgentSkill.objects.create(profile=profile, skill=skill, level=10)

    def test_a_skill_is_once_per_profile(self):
        profile = agent_profile_for(AgentFactory())
        skill = Skill.objects.create(name="Thai")
        AgentSkill.objects.create(profile=profile, skill=skill, level=3)

        with pytest.raises(IntegrityError), transaction.atomic():
            AgentSkill.objects.create(profile=profile, skill=skill, level=5)

    def test_skill_names_are_unique_without_regard_to_case(self):
        Skill.objects.create(name="Billing")

        with pytest.raises(IntegrityError), transaction.atomic():
            Skill.objects.create(name="BILLING")

    def test_a_presence_outside_the_five_is_refused_by_the_database(self):
        profile = agent_profile_for(AgentFactory())

        with pytest.raises(IntegrityError), transaction.atomic():
            AgentProfile.objects.filter(pk=profile.pk).update(presence="lunch")


@pytest.mark.django_db(transaction=True)
def test_two_first_uses_at_once_make_one_profile():
    agent = AgentFactory()
    barrier = threading.Barrier(4, timeout=30)
    profiles: list[int] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            barrier.wait()
            profiles.append(agent_profile_for(agent).pk)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(profiles) == 4 and len(set(profiles)) == 1
    assert AgentProfile.objects.filter(user=agent).count() == 1


@pytest.mark.django_db
def test_administrators_configure_routing_supervisors_view_it_and_change_agent_profiles_agents_view_theirs():
    administrator, supervisor, agent = AdministratorFactory(), SupervisorFactory(), AgentFactory()

    assert administrator.has_perms(["routing.change_workstream", "routing.add_queue", "agents.add_skill"])
    assert supervisor.has_perms(
        ["routing.view_workstream", "routing.view_queue", "agents.change_agentprofile"]
    )
    assert supervisor.has_perms(["agents.add_agentskill", "agents.delete_agentskill"])
    assert not supervisor.has_perm("routing.change_workstream")
    assert not supervisor.has_perm("routing.change_channelinstance")
    assert agent.has_perm("agents.view_agentprofile")
    assert not agent.has_perm("agents.change_agentprofile")
    assert not agent.has_perm("routing.view_workstream")
