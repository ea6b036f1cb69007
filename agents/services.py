from __future__ import annotations

import fnmatch
import logging
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext

from omnichannel import events

from .models import AgentProfile, AgentSkill, Presence, Skill
from .roles import ADMINISTRATOR, AGENT, ROLE_PERMISSIONS, SUPERVISOR

logger = logging.getLogger(__name__)


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


def agent_presence_set(
    *, user: AbstractBaseUser, presence: str, actor: AbstractBaseUser | None = None
) -> AgentProfile:
    """Set an agent's presence (Available, Busy, ...) and return their profile.

    Refuses an unknown presence (ValidationError on `presence`). The change is a conditional UPDATE on
    the value, so a repeat of the same presence changes nothing (neither `presence_changed_at` nor an
    event); a real change announces AGENT_PRESENCE_CHANGED after the commit (distribution offers work
    to an agent who becomes available). `actor` is who made the change (the agent, a supervisor)."""
    if presence not in Presence.values:
        raise ValidationError(
            {
                "presence": gettext("Unknown presence %(presence)r: use one of %(presences)s.")
                % {"presence": presence, "presences": ", ".join(Presence.values)}
            }
        )
    profile = agent_profile_for(user)
    now = timezone.now()
    with transaction.atomic():
        changed = (
            AgentProfile.objects.filter(pk=profile.pk)
            .exclude(presence=presence)
            .update(presence=presence, presence_changed_at=now, updated_at=now)
        )
        if changed:
            events.emit(
                events.AGENT_PRESENCE_CHANGED,
                agent_id=user.pk,
                presence=presence,
                actor_id=getattr(actor, "pk", None),
            )
    profile.refresh_from_db()
    return profile


def agent_preferences_set(*, user: AbstractBaseUser, language: str, time_zone: str) -> AgentProfile:
    """Save the language (a code of settings.LANGUAGES; empty: the browser's) and time zone (an IANA
    name zoneinfo knows; empty: TIME_ZONE) of the user's own pages; agents.middleware applies them
    from the next request on. Raises ValidationError naming the field for an unknown value."""
    errors = {}
    if language and language not in dict(settings.LANGUAGES):
        errors["language"] = gettext("Unknown language %(language)r.") % {"language": language}
    if time_zone and time_zone not in zoneinfo.available_timezones():
        errors["time_zone"] = gettext(
            "Unknown time zone %(time_zone)r: use an IANA name such as 'Asia/Tokyo'."
        ) % {"time_zone": time_zone}
    if errors:
        raise ValidationError(errors)
    profile = agent_profile_for(user)
    AgentProfile.objects.filter(pk=profile.pk).update(
        language=language, time_zone=time_zone, updated_at=timezone.now()
    )
    profile.language, profile.time_zone = language, time_zone
    return profile


def agent_profile_update(
    *,
    profile: AgentProfile,
    actor: AbstractBaseUser | None,
    capacity: int | None = None,
    skills: list[dict[str, Any]] | None = None,
) -> AgentProfile:
    """Set an agent's capacity and/or replace their skills ([{"name", "level"}], names compared without
    regard to case, every name an existing skill) and return the profile.

    A capacity below the units in use is allowed (the agent gets nothing new until they are below it
    again); a raised capacity is announced like released capacity (assignment may give them work).
    Raises ValidationError on `skills` for an unknown or repeated skill."""
    wanted: dict[int, int] = {}
    if skills is not None:
        names = [item["name"].strip() for item in skills]
        lowered = [name.lower() for name in names]
        repeated = sorted({name for name in lowered if lowered.count(name) > 1})
        if repeated:
            raise ValidationError(
                {"skills": gettext("Each skill once: %(skills)s repeated.") % {"skills": ", ".join(repeated)}}
            )
        known = dict(
            Skill.objects.annotate(key=Lower("name")).filter(key__in=lowered).values_list("key", "pk")
        )
        unknown = [name for name in names if name.lower() not in known]
        if unknown:
            raise ValidationError(
                {
                    "skills": gettext(
                        "Unknown skill(s): %(skills)s. An administrator adds skills in the admin "
                        "(Agents > Skills)."
                    )
                    % {"skills": ", ".join(unknown)}
                }
            )
        wanted = {known[name.lower()]: item["level"] for name, item in zip(names, skills, strict=True)}
    now = timezone.now()
    with transaction.atomic():
        locked = AgentProfile.objects.select_for_update().get(pk=profile.pk)
        if capacity is not None and capacity != locked.capacity:
            AgentProfile.objects.filter(pk=locked.pk).update(capacity=capacity, updated_at=now)
            if capacity > locked.capacity:
                events.emit(
                    events.AGENT_CAPACITY_RELEASED, agent_id=locked.user_id, units=capacity - locked.capacity
                )
        if skills is not None:
            AgentSkill.objects.filter(profile=locked).exclude(skill_id__in=wanted).delete()
            for skill_id, level in wanted.items():
                AgentSkill.objects.update_or_create(
                    profile=locked, skill_id=skill_id, defaults={"level": level}
                )
    logger.info(
        "Agent profile updated profile=%s user=%s capacity=%s skills=%s actor=%s",
        profile.pk,
        profile.user_id,
        capacity,
        None if skills is None else sorted(wanted),
        getattr(actor, "pk", None),
    )
    return profile
