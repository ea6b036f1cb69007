"""Admin pages of agents: agent profiles (presence, capacity, skills with levels; queues through
queue membership) and skills. Every user of the Agent group gets a profile on demand: the list
creates the missing ones (agents.services.agent_profiles_ensure)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from .models import AgentProfile, AgentSkill, Skill
from .services import agent_profiles_ensure


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


class AgentSkillInline(admin.TabularInline):
    model = AgentSkill
    extra = 0
    autocomplete_fields = ["skill"]


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "presence", "capacity", "skill_levels", "queues"]
    list_select_related = ["user"]
    list_filter = ["presence"]
    search_fields = ["user__username", "user__first_name", "user__last_name"]
    fields = ["user", "presence", "presence_changed_at", "capacity", "queues"]
    readonly_fields = ["presence_changed_at", "queues"]
    inlines = [AgentSkillInline]

    def get_readonly_fields(self, request: HttpRequest, obj: AgentProfile | None = None) -> list[str]:
        # The user of a profile never changes.
        return [*self.readonly_fields, "user"] if obj is not None else list(self.readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentProfile]:
        queryset = (
            super()
            .get_queryset(request)
            .prefetch_related("agent_skills__skill", "user__queue_memberships__queue")
        )
        if request.user.has_perm("agents.change_agentprofile"):
            return queryset
        # An agent sees their own profile only.
        return queryset.filter(user=request.user)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if self.has_add_permission(request) or request.user.has_perm("agents.change_agentprofile"):
            agent_profiles_ensure()
        return super().changelist_view(request, extra_context)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            from django.contrib.auth import get_user_model

            kwargs["queryset"] = get_user_model().objects.filter(agent_profile__isnull=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Skills")
    def skill_levels(self, profile: AgentProfile) -> str:
        return ", ".join(f"{item.skill.name} ({item.level})" for item in profile.agent_skills.all()) or "-"

    @admin.display(description="Queues")
    def queues(self, profile: AgentProfile) -> str:
        names = sorted(membership.queue.name for membership in profile.user.queue_memberships.all())
        return ", ".join(names) or "-"
