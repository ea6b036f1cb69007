"""Admin pages of routing: workstreams (with their rules as ordered inlines and "Test routing"),
queues (members, operating hours, holidays, overflow; the list shows open items and the oldest wait),
classification rule sets (with their ordered rules) and channel instances.

Every write goes through routing.services: workstream_save (the distribution mode is fixed at
creation), channel_instance_save (one channel instance per account), routing_record_save for the rest;
each runs the record's clean(), which names the field at fault. Every delete goes through
routing_record_delete, one record at a time: a queue that open conversations or a percentage split
still use is refused with what uses it (no foreign key can say so), before the confirmation page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.timesince import timesince

from omnichannel.models import ChannelType

from .forms import (
    SETUP_LINE_FORMS,
    SETUP_LINE_STEPS,
    ChannelInstanceForm,
    RoutingTestForm,
    WorkstreamForm,
    setup_line_instance,
    setup_line_step_missing,
    setup_line_summary_rows,
)
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
from .selectors import messaging_accounts_available, queues_with_load, routing_record_uses
from .services import (
    RecordInUse,
    channel_instance_save,
    routing_decide,
    routing_facts_sample,
    routing_record_delete,
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


class ServiceDeletedMixin:
    """Deleted through routing_record_delete, one at a time (no bulk delete: each record's uses are
    checked). A record in use goes back to its page with what uses it instead of the confirmation."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        record = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if record is None:
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
        back = redirect(f"admin:{record._meta.app_label}_{record._meta.model_name}_change", record.pk)
        uses = routing_record_uses(record=record)
        if uses:
            messages.error(request, str(RecordInUse.naming(record=record, uses=uses)))
            return back
        try:
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
        except RecordInUse as in_use:  # came into use between the check and the delete
            messages.error(request, str(in_use))
            return back

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        routing_record_delete(record=obj)


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
class QueueAdmin(ServiceDeletedMixin, ServiceSavedInlinesMixin, admin.ModelAdmin):
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
class WorkstreamAdmin(ServiceDeletedMixin, ServiceSavedInlinesMixin, admin.ModelAdmin):
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
                    "away_after_missed_offer",
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
            ),
            path(
                "<path:object_id>/setup-line/",
                self.admin_site.admin_view(self.setup_line_start_view),
                name="routing_workstream_setup_line_start",
            ),
            path(
                "<path:object_id>/setup-line/<str:step>/",
                self.admin_site.admin_view(self.setup_line_view),
                name="routing_workstream_setup_line",
            ),
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

    # --- The "Set up LINE" wizard: LINE > Language > Behaviors > User features > Summary > Done. Each
    # step's form (routing.forms) validates before the next; the values wait in the session, one draft
    # per workstream, until Finish creates the channel instance with channel_instance_save.

    def _setup_line_workstream(self, request: HttpRequest, object_id: str) -> Workstream | None:
        if not request.user.has_perm("routing.add_channelinstance"):
            raise PermissionDenied
        workstream = self.get_object(request, unquote(object_id))
        if workstream is not None and not self.has_view_permission(request, workstream):
            raise PermissionDenied
        return workstream

    def setup_line_start_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The "Set up LINE" button: the wizard afresh for this workstream."""
        workstream = self._setup_line_workstream(request, object_id)
        if workstream is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        request.session.pop(_setup_line_key(workstream), None)
        return _setup_line_goto(workstream, "line")

    def setup_line_view(self, request: HttpRequest, object_id: str, step: str) -> HttpResponse:
        workstream = self._setup_line_workstream(request, object_id)
        if workstream is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if step not in dict(SETUP_LINE_STEPS):
            return _setup_line_goto(workstream, "line")
        state: dict[str, Any] = dict(request.session.get(_setup_line_key(workstream), {}))
        if step == "done":
            return self._setup_line_done(request, workstream, state)
        if state.get("instance_id"):
            # Finished: the Done page stays (a reload shows it) until step 1 starts another instance.
            if step != "line":
                return _setup_line_goto(workstream, "done")
            state = {}
        if (missing := setup_line_step_missing(state=state, step=step)) is not None:
            return _setup_line_goto(workstream, missing)
        if step == "summary":
            return self._setup_line_summary(request, workstream, state)
        return self._setup_line_form_step(request, workstream, state, step)

    def _setup_line_form_step(
        self, request: HttpRequest, workstream: Workstream, state: dict[str, Any], step: str
    ) -> HttpResponse:
        form_class = SETUP_LINE_FORMS[step]
        # Why Finish sent the user back here (the account was taken meanwhile): shown once.
        notice = state.pop("line_error", "") if step == "line" else ""
        if request.method == "POST":
            form = form_class(request.POST)
            valid = form.is_valid()
            if valid:
                state.update(form.session_data())
            if "_back" in request.POST:  # Back keeps what this step holds when it is valid
                _setup_line_save(request, workstream, state)
                return _setup_line_goto(workstream, _setup_line_neighbour(step, -1))
            if valid:
                _setup_line_save(request, workstream, state)
                return _setup_line_goto(workstream, _setup_line_neighbour(step, +1))
        else:
            if notice:
                _setup_line_save(request, workstream, state)
            form = form_class(initial=state)
        return self._setup_line_render(request, workstream, step, form=form, notice=notice)

    def _setup_line_summary(
        self, request: HttpRequest, workstream: Workstream, state: dict[str, Any]
    ) -> HttpResponse:
        instance = setup_line_instance(workstream=workstream, state=state)
        errors: list[str] = []
        if request.method == "POST":
            try:
                channel_instance_save(instance=instance)
            except ValidationError as error:
                by_field = (
                    error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
                )
                if "messaging_account" in by_field:
                    # Attached elsewhere (or deleted) since it was picked: back to the LINE step, with why.
                    state.pop("messaging_account", None)
                    state["line_error"] = " ".join(by_field["messaging_account"])
                    _setup_line_save(request, workstream, state)
                    return _setup_line_goto(workstream, "line")
                errors = [
                    message
                    if field == NON_FIELD_ERRORS
                    else f"{field.replace('_', ' ').capitalize()}: {message}"
                    for field, messages_ in by_field.items()
                    for message in messages_
                ]
            else:
                _setup_line_save(request, workstream, {"instance_id": instance.pk})
                return _setup_line_goto(workstream, "done")
        account = (
            messaging_accounts_available(channel_type=ChannelType.LINE)
            .select_related("line")
            .filter(pk=state["messaging_account"])
            .first()
        )
        if account is None:
            state.pop("messaging_account", None)
            state["line_error"] = (
                SETUP_LINE_FORMS["line"].base_fields["messaging_account"].error_messages["invalid_choice"]
            )
            _setup_line_save(request, workstream, state)
            return _setup_line_goto(workstream, "line")
        instance.messaging_account = account
        return self._setup_line_render(
            request, workstream, "summary", rows=setup_line_summary_rows(instance=instance), errors=errors
        )

    def _setup_line_done(
        self, request: HttpRequest, workstream: Workstream, state: dict[str, Any]
    ) -> HttpResponse:
        instance = (
            ChannelInstance.objects.select_related("messaging_account__line", "workstream")
            .filter(pk=state.get("instance_id") or 0, workstream=workstream)
            .first()
        )
        if instance is None:
            return _setup_line_goto(workstream, "line")
        return self._setup_line_render(
            request, workstream, "done", rows=setup_line_summary_rows(instance=instance), instance=instance
        )

    def _setup_line_render(
        self,
        request: HttpRequest,
        workstream: Workstream,
        step: str,
        *,
        form: Any = None,
        notice: str = "",
        rows: list[dict[str, str]] | None = None,
        errors: list[str] | None = None,
        instance: ChannelInstance | None = None,
    ) -> TemplateResponse:
        names = [name for name, _ in SETUP_LINE_STEPS]
        current = names.index(step)
        adminform = None
        if form is not None:
            adminform = helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}, model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": workstream,
            "title": f"Set up LINE: {dict(SETUP_LINE_STEPS)[step]}",
            "step": step,
            "steps": [
                {"name": name, "title": title, "done": i < current, "current": i == current}
                for i, (name, title) in enumerate(SETUP_LINE_STEPS)
            ],
            "previous_step": names[current - 1] if 0 < current < len(names) - 1 else "",
            "form": form,
            "adminform": adminform,
            "form_errors": helpers.AdminErrorList(form, []) if form is not None and form.is_bound else None,
            "notice": notice,
            "no_account_free": step == "line" and not form.fields["messaging_account"].queryset.exists(),
            "rows": rows or [],
            "errors": errors or [],
            "instance": instance,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/routing/workstream/setup_line.html", context)


def _setup_line_key(workstream: Workstream) -> str:
    return f"routing.setup_line.{workstream.pk}"


def _setup_line_save(request: HttpRequest, workstream: Workstream, state: dict[str, Any]) -> None:
    request.session[_setup_line_key(workstream)] = state


def _setup_line_goto(workstream: Workstream, step: str) -> HttpResponseRedirect:
    return redirect("admin:routing_workstream_setup_line", workstream.pk, step)


def _setup_line_neighbour(step: str, offset: int) -> str:
    names = [name for name, _ in SETUP_LINE_STEPS]
    return names[max(0, names.index(step) + offset)]


class ClassificationRuleInline(admin.StackedInline):
    model = ClassificationRule
    extra = 0
    fields = ["order", "name", "conditions", "set"]
    verbose_name_plural = "rules, in order (the first that matches writes)"


@admin.register(ClassificationRuleSet)
class ClassificationRuleSetAdmin(ServiceDeletedMixin, ServiceSavedInlinesMixin, admin.ModelAdmin):
    list_display = ["name", "workstream", "order"]
    list_select_related = ["workstream"]
    list_filter = ["workstream"]
    inlines = [ClassificationRuleInline]

    def save_model(self, request: HttpRequest, obj: ClassificationRuleSet, form: Any, change: bool) -> None:
        routing_record_save(record=obj)


@admin.register(ChannelInstance)
class ChannelInstanceAdmin(ServiceDeletedMixin, admin.ModelAdmin):
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
