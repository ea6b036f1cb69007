"""Agents as routing sees them: a profile per user with presence, capacity and skills. Queue
membership lives in routing (routing.QueueMembership)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _


class Presence(models.TextChoices):
    """An agent's presence; only the presences a workstream allows receive pushed work."""

    AVAILABLE = "available", _("Available")
    BUSY = "busy", _("Busy")
    BUSY_DND = "busy_dnd", _("Busy - do not disturb")
    AWAY = "away", _("Away")
    OFFLINE = "offline", _("Offline")


SKILL_LEVEL_MIN = 1
SKILL_LEVEL_MAX = 10
AGENT_CAPACITY_DEFAULT = 10


class Skill(models.Model):
    """A skill an agent has (with a level) and a conversation may need (classification writes it)."""

    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # "Billing" and "billing" are one skill to a person (rules name skills by text).
            models.UniqueConstraint(
                Lower("name"),
                name="skill_name_unique_ci",
                violation_error_message="A skill with this name exists already (names are compared "
                "without regard to case).",
            )
        ]

    def __str__(self) -> str:
        return self.name


class AgentProfile(models.Model):
    """What routing needs to know about one user who works conversations.

    Created on demand (agents.services.agent_profile_for) for every user of the Agent group."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_profile"
    )
    presence = models.CharField(max_length=10, choices=Presence.choices, default=Presence.OFFLINE)
    presence_changed_at = models.DateTimeField(null=True, blank=True)
    # Units of work the agent can hold at once; a conversation holds its workstream's capacity_units.
    capacity = models.PositiveIntegerField(default=AGENT_CAPACITY_DEFAULT)
    # Units held now by the agent's worked conversations and pending offers. Raised only by a
    # conditional UPDATE that keeps it within `capacity` (omnichannel.lifecycle.capacity_hold); no check
    # constraint says "<= capacity" because a supervisor may lower the capacity of an agent who holds
    # work: they get nothing new until they are below it again. Never below zero (positive field).
    capacity_used = models.PositiveIntegerField(default=0)
    skills = models.ManyToManyField(Skill, through="AgentSkill", related_name="agents", blank=True)
    # The agent's own pages: language (empty: the browser's) and time zone (empty: TIME_ZONE).
    language = models.CharField(max_length=10, choices=settings.LANGUAGES, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user__username"]
        constraints = [
            models.CheckConstraint(
                condition=Q(presence__in=Presence.values), name="agent_profile_presence_known"
            ),
            models.CheckConstraint(
                condition=Q(capacity_used__gte=0), name="agent_profile_capacity_used_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"Agent profile of {self.user}"


class AgentSkill(models.Model):
    """A skill of an agent, at a level from 1 (beginner) to 10 (expert)."""

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="agent_skills")
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="agent_skills")
    level = models.PositiveSmallIntegerField(
        default=SKILL_LEVEL_MIN,
        validators=[MinValueValidator(SKILL_LEVEL_MIN), MaxValueValidator(SKILL_LEVEL_MAX)],
        help_text=f"From {SKILL_LEVEL_MIN} (beginner) to {SKILL_LEVEL_MAX} (expert).",
    )

    class Meta:
        ordering = ["skill__name"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "skill"], name="agent_skill_once_per_profile"),
            models.CheckConstraint(
                condition=Q(level__gte=SKILL_LEVEL_MIN, level__lte=SKILL_LEVEL_MAX),
                name="agent_skill_level_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.skill} ({self.level})"
