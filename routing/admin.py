"""Admin pages of routing: workstreams (with their rules as ordered inlines and "Test routing"),
queues (members, operating hours, holidays, overflow; the list shows open items and the oldest wait),
classification rule sets (with their ordered rules) and channel instances.

Every write goes through routing.services: workstream_save (the distribution mode is fixed at
creation), channel_instance_save (one channel instance per account), routing_record_save for the rest;
each runs the record's clean(), which names the field at fault."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.timesince import timesince

from .forms import ChannelInstanceForm, RoutingTestForm, WorkstreamForm
from .models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    Queue,
    QueueHoliday,
    QueueMembership,
    QueueOperatingHours,
    RouteToQueueRule,
    Workstream,
)
from .selectors import queues_with_load
from .services import (
    channel_instance_save,
    routing_decide,
    routing_facts_sample,
    routing_record_save,
    workstream_save,
)


class ServiceSavedInlinesMixin:
    """Inline rows are saved through routing_record_save, like the page's own record."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        records = formset.save(commit=False)
        for record in formset.deleted_objects:
            record.delete()
        for record in records:
            routing_record_save(record=record)
        formset.save_m2m()


class QueueMembershipInline(admin.TabularInline):
    model = QueueMembership
    extra = 0
    fields = ["user", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]
    verbose_name = "member"
    verbose_name_plural = "members"


class QueueOperatingHoursInline(admin.TabularInline):
    model = QueueOperatingHours
    extra = 0
    verbose_name = "opening period"
    verbose_name_plural = "operating hours (weekly; none: open all day, every day)"


class QueueHolidayInline(admin.TabularInline):
    model = QueueHoliday
    extra = 0


@admin.register(Queue)
class QueueAdmin(ServiceSavedInlinesMixin, admin.ModelAdmin):
    list_display = ["name", "priority", "timezone", "open_items", "oldest_wait"]
    search_fields = ["name"]
    inlines = [QueueMembershipInline, QueueOperatingHoursInline, QueueHolidayInline]
    fieldsets = [
        (None, {"fields": ["name", "priority", "timezone"]}),
        (
            "Overflow before queueing: out of operating hours",
            {"fields": ["out_of_hours_action", "out_of_hours_message", "out_of_hours_transfer_queue"]},
        ),
        (
            "Overflow before queueing: too many open items",
            {
                "fields": [
                    "open_items_limit",
                    "open_items_action",
                    "open_items_message",
                    "open_items_transfer_queue",
                ]
            },
        ),
        (
            "Overflow after queueing: waiting too long",
            {"fields": ["wait_limit_seconds", "wait_action", "wait_message", "wait_transfer_queue"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Queue]:
        return queues_with_load()

    @admin.display(description="Open items", ordering="open_items")
    def open_items(self, queue: Queue) -> int:
        return queue.open_items  # type: ignore[attr-defined]

    @admin.display(description="Oldest wait", ordering="oldest_queued_at")
    def oldest_wait(self, queue: Queue) -> str:
        oldest = queue.oldest_queued_at  # type: ignore[attr-defined]
        if oldest is None:
            return "-"
        since = date_format(timezone.localtime(oldest), "Y-m-d H:i")
        return f"{timesince(oldest, timezone.now())} (since {since})"

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        routing_record_save(record=obj)


class ClassificationRuleSetInline(admin.TabularInline):
    model = ClassificationRuleSet
    extra = 0
    fields = ["order", "name"]
    show_change_link = True
    verbose_name = "work classification rule set"
    verbose_name_plural = "work classification: rule sets, in order (open one to edit its rules)"


class RouteToQueueRuleInline(admin.StackedInline):
    model = RouteToQueueRule
    extra = 0
    fields = ["order", "name", "conditions", "queue", "split"]
    verbose_name_plural = (
        "route-to-queue rules, in order (the first match whose queue is not overflowing wins)"
    )


class ChannelInstanceInline(admin.TabularInline):
    model = ChannelInstance
    extra = 0
    max_num = 0
    can_delete = False
    fields = ["messaging_account", "language"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Workstream)
class WorkstreamAdmin(ServiceSavedInlinesMixin, admin.ModelAdmin):
    form = WorkstreamForm
    change_form_template = "admin/routing/workstream/change_form.html"
    list_display = ["name", "distribution_mode", "fallback_queue", "assignment_method", "timezone"]
    list_select_related = ["fallback_queue"]
    search_fields = ["name"]
    inlines = [ChannelInstanceInline, ClassificationRuleSetInline, RouteToQueueRuleInline]
    fieldsets = [
        (None, {"fields": ["name", "distribution_mode", "fallback_queue", "timezone"]}),
        (
            "Work distribution",
            {
                "fields": [
                    "capacity_units",
                    "wrap_up_capacity",
                    "wrap_up_capacity_minutes",
                    "allowed_presences",
                    "assignment_method",
                    "offer_timeout_seconds",
                    "auto_accept",
                    "keep_same_agent",
                    "skill_matching",
                    "auto_close_after_minutes",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Workstream | None = None) -> list[str]:
        # Fixed at creation (workstream_save refuses a change whatever the page sends).
        return ["distribution_mode"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Workstream, form: Any, change: bool) -> None:
        workstream_save(workstream=obj)

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<path:object_id>/test-routing/",
                self.admin_site.admin_view(self.test_routing_view),
                name="routing_workstream_test_routing",
            )
        ]
        return custom + super().get_urls()

    def test_routing_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Sample values in; out the rules matched, the attributes written, the queue and the reason,
        from routing_decide: the function that routes real conversations. Nothing is written."""
        workstream = self.get_object(request, unquote(object_id))
        if workstream is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, workstream):
            raise PermissionDenied
        decision = None
        record = None
        if request.method == "POST":
            form = RoutingTestForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                facts = routing_facts_sample(
                    display_name=data["display_name"],
                    language=data["language"],
                    text=data["text"],
                    channel_instance=data["channel_instance"],
                    context=data["context"],
                )
                decision = routing_decide(
                    workstream=workstream, facts=facts, at=data["at"], split_key=data["split_key"] or 0
                )
                record = decision.as_record(at=data["at"])
        else:
            form = RoutingTestForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": workstream,
            "title": f"Test routing: {workstream}",
            "form": form,
            "decision": decision,
            "record": record,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/routing/workstream/test_routing.html", context)


class ClassificationRuleInline(admin.StackedInline):
    model = ClassificationRule
    extra = 0
    fields = ["order", "name", "conditions", "set"]
    verbose_name_plural = "rules, in order (the first that matches writes)"


@admin.register(ClassificationRuleSet)
class ClassificationRuleSetAdmin(ServiceSavedInlinesMixin, admin.ModelAdmin):
    list_display = ["name", "workstream", "order"]
    list_select_related = ["workstream"]
    list_filter = ["workstream"]
    inlines = [ClassificationRuleInline]

    def save_model(self, request: HttpRequest, obj: ClassificationRuleSet, form: Any, change: bool) -> None:
        routing_record_save(record=obj)


@admin.register(ChannelInstance)
class ChannelInstanceAdmin(admin.ModelAdmin):
    form = ChannelInstanceForm
    list_display = ["__str__", "workstream", "language", "file_attachments"]
    list_select_related = ["messaging_account", "workstream"]
    list_filter = ["workstream", "language"]
    fieldsets = [
        (None, {"fields": ["messaging_account", "workstream", "language"]}),
        ("Behaviors", {"fields": ["custom_automated_messages", "post_conversation_survey"]}),
        (
            "User features",
            {"fields": ["file_attachments", "customers_can_send_attachments", "agents_can_send_attachments"]},
        ),
    ]

    def save_model(self, request: HttpRequest, obj: ChannelInstance, form: Any, change: bool) -> None:
        channel_instance_save(instance=obj)
