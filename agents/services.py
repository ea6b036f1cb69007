from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction

from .models import AgentProfile
from .roles import ADMINISTRATOR, AGENT, ROLE_PERMISSIONS, SUPERVISOR


@transaction.atomic
def roles_sync() -> dict[str, int]:
    """Create the Administrator, Supervisor and Agent groups and set exactly their permissions.

    Safe to run any number of times; returns the number of permissions each group holds."""
    permissions = list(Permission.objects.select_related("content_type"))
    counts: dict[str, int] = {}
    for role, patterns in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        granted = [
            perm
            for perm in permissions
            if any(
                fnmatch.fnmatchcase(f"{perm.content_type.app_label}.{perm.codename}", pattern)
                for pattern in patterns
            )
        ]
        group.permissions.set(granted)
        counts[role] = len(granted)
    return counts


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    role: str
    is_staff: bool


DEMO_USERS = (
    DemoUser("admin", "Aiko", ADMINISTRATOR, is_staff=True),
    DemoUser("supervisor", "Somchai", SUPERVISOR, is_staff=True),
    DemoUser("agent1", "Mei", AGENT, is_staff=False),
    DemoUser("agent2", "Kenji", AGENT, is_staff=False),
)


@transaction.atomic
def demo_users_ensure(*, passwords: dict[str, str]) -> list[str]:
    """Create the demo users that do not exist yet with the given passwords; returns the new names."""
    User = get_user_model()
    created = []
    for spec in DEMO_USERS:
        user, is_new = User.objects.get_or_create(
            username=spec.username, defaults={"first_name": spec.first_name, "is_staff": spec.is_staff}
        )
        if is_new:
            user.set_password(passwords[spec.username])
            user.save(update_fields=["password"])
            created.append(spec.username)
        user.groups.add(Group.objects.get(name=spec.role))
    return created


def agent_profile_for(user: AbstractBaseUser) -> AgentProfile:
    """The user's agent profile, created on first use (Offline, default capacity, no skills). Two
    concurrent first uses make one row: the one-to-one's unique constraint decides, the loser reads it."""
    profile, _ = AgentProfile.objects.get_or_create(user=user)
    return profile


def agent_profiles_ensure() -> int:
    """Give every user of the Agent group who has none an agent profile; returns how many were made."""
    User = get_user_model()
    missing = User.objects.filter(groups__name=AGENT, agent_profile__isnull=True).distinct()
    created = 0
    for user in missing:
        _, is_new = AgentProfile.objects.get_or_create(user=user)
        created += is_new
    return created
