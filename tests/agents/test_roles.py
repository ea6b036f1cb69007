import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse

from agents import roles, services

pytestmark = pytest.mark.django_db


def user_with_role(role: str, *, is_staff: bool = False, username: str | None = None) -> User:
    user = User.objects.create_user(
        username=username or role.lower(), password="pw-for-tests-123", is_staff=is_staff
    )
    user.groups.add(Group.objects.get(name=role))
    return user


def test_migrate_creates_the_three_roles_with_permissions():
    groups = {g.name: g for g in Group.objects.prefetch_related("permissions")}
    assert set(groups) >= {roles.ADMINISTRATOR, roles.SUPERVISOR, roles.AGENT}
    admin_perms = {p.codename for p in groups[roles.ADMINISTRATOR].permissions.all()}
    agent_perms = {p.codename for p in groups[roles.AGENT].permissions.all()}
    assert {"add_user", "change_user", "delete_user"} <= admin_perms
    assert "add_user" not in agent_perms
    assert "view_workerheartbeat" in agent_perms


def test_roles_sync_is_idempotent_and_restores_removed_permissions():
    group = Group.objects.get(name=roles.ADMINISTRATOR)
    expected = group.permissions.count()
    group.permissions.clear()

    counts = services.roles_sync()
    services.roles_sync()

    assert counts[roles.ADMINISTRATOR] == expected
    assert Group.objects.get(name=roles.ADMINISTRATOR).permissions.count() == expected
    assert Group.objects.filter(name=roles.ADMINISTRATOR).count() == 1


def test_an_administrator_may_manage_users_and_an_agent_may_not():
    admin = user_with_role(roles.ADMINISTRATOR, is_staff=True)
    supervisor = user_with_role(roles.SUPERVISOR, is_staff=True)
    agent = user_with_role(roles.AGENT)
    assert admin.has_perm("auth.add_user")
    assert supervisor.has_perm("auth.view_user") and not supervisor.has_perm("auth.add_user")
    assert not agent.has_perm("auth.view_user")


def test_an_administrator_may_see_and_clear_sign_in_lockouts_and_an_agent_may_not(client):
    admin = user_with_role(roles.ADMINISTRATOR, is_staff=True)
    agent = user_with_role(roles.AGENT)
    assert admin.has_perms(["axes.view_accessattempt", "axes.delete_accessattempt"])
    assert not agent.has_perm("axes.view_accessattempt")
    client.force_login(admin)
    assert client.get(reverse("admin:axes_accessattempt_changelist")).status_code == 200


def test_an_administrator_reaches_the_admin_user_list_and_an_agent_is_sent_to_login(client):
    admin = user_with_role(roles.ADMINISTRATOR, is_staff=True)
    agent = user_with_role(roles.AGENT)

    client.force_login(admin)
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 200

    client.force_login(agent)
    response = client.get(reverse("admin:auth_user_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_a_supervisor_can_view_users_in_the_admin_but_not_add_one(client):
    client.force_login(user_with_role(roles.SUPERVISOR, is_staff=True))
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 200
    assert client.get(reverse("admin:auth_user_add")).status_code == 403


def test_the_home_page_requires_login(client):
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_signing_in_on_the_login_page_lands_an_agent_on_their_inbox(client):
    user_with_role(roles.AGENT, username="mei")
    response = client.post(reverse("login"), {"username": "mei", "password": "pw-for-tests-123"}, follow=True)
    assert response.status_code == 200
    assert response.context["user"].username == "mei"
    assert response.redirect_chain[-1][0] == reverse("inbox:home")


def test_a_wrong_password_is_refused_with_a_message(client):
    user_with_role(roles.AGENT, username="mei")
    response = client.post(reverse("login"), {"username": "mei", "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
    assert not response.context["user"].is_authenticated


def test_an_api_token_is_created_by_drf_create_token_and_authenticates(client):
    user_with_role(roles.AGENT, username="mei")
    from rest_framework.authtoken.models import Token

    call_command("drf_create_token", "mei")
    assert Token.objects.filter(user__username="mei").exists()


def test_demo_setup_creates_four_users_with_roles_and_keeps_their_passwords(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("demo_setup")
    first = capsys.readouterr().out
    call_command("demo_setup")
    second = capsys.readouterr().out

    users = {u.username: u for u in User.objects.prefetch_related("groups")}
    assert {"admin", "supervisor", "agent1", "agent2"} <= set(users)
    assert [g.name for g in users["admin"].groups.all()] == [roles.ADMINISTRATOR]
    assert users["admin"].is_staff and not users["agent1"].is_staff
    import json

    passwords = json.loads((tmp_path / "demo-credentials.json").read_text())
    assert users["agent1"].check_password(passwords["agent1"])
    assert passwords["agent1"] in first and passwords["agent1"] in second
    assert "(new)" in first and "(new)" not in second
