"""Admin pages of LINE: messaging accounts (with the "New account" wizard), webhook events, rejected bodies.

The messaging account record is the core's (omnichannel.MessagingAccount), but every account today is a
LINE account and its page is mostly LINE details, so its admin lives here. A second channel would add
its type to the wizard's first step and hand over to its own steps from there.

Every write goes through channels_line.services: the wizard calls line_account_create, the change form
line_account_update, deletion line_account_delete, the "Check credentials" action and button
line_account_check_credentials. Secrets are write-only: no page ever renders one.
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import URLPattern, path, reverse
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timezone import localtime

from omnichannel.admin import ReadOnlyAdminMixin, json_block
from omnichannel.models import ChannelType, MessagingAccount

from .forms import AccountWizardChannelForm, AccountWizardCredentialsForm, MessagingAccountChangeForm
from .models import LineAccount, LineWebhookEvent, LineWebhookRejectedBody
from .services.accounts import (
    line_account_check_credentials,
    line_account_create,
    line_account_delete,
)
from .services.intake import line_events_process_again

WIZARD_STEPS = (
    ("channel", "Channel details"),
    ("account", "Account details"),
    ("callback", "Callback information"),
    ("done", "Done"),
)
# What the wizard carries between steps: the name and type, then the ID of the account it created.
# Never a secret: those go from the step-2 form straight into line_account_create.
WIZARD_SESSION_KEY = "channels_line.new_messaging_account"

SECRET_FIELDS = ["channel_id", "channel_secret", "channel_access_token"]
SECRET_FIELDS_READ_ONLY = ["channel_id_display", "channel_secret_status", "channel_access_token_status"]


def _line(account: MessagingAccount) -> LineAccount | None:
    try:
        return account.line
    except LineAccount.DoesNotExist:
        return None


@admin.register(MessagingAccount)
class MessagingAccountAdmin(admin.ModelAdmin):
    form = MessagingAccountChangeForm
    change_form_template = "admin/channels_line/messagingaccount/change_form.html"
    change_list_template = "admin/channels_line/messagingaccount/change_list.html"
    # No channel type column: every account is LINE today (the filter says so), and the room goes to the
    # callback URL. A second channel brings it back.
    list_display = [
        "name",
        "channel_id_display",
        "enabled",
        "callback_url",
        "credentials_check",
    ]
    list_display_links = ["name"]
    list_filter = ["channel_type", "enabled"]
    list_select_related = ["line"]
    search_fields = ["name", "line__channel_id"]
    readonly_fields = [
        "channel_type",
        "callback_url_copy",
        "credentials_check",
        "bot",
        "created_at",
        "updated_at",
        *SECRET_FIELDS_READ_ONLY,
    ]
    actions = ["check_credentials"]

    # --- Permissions: the LINE details are part of the account, so writing needs both apps' rights.
    # (A Supervisor holds omnichannel.* but only channels_line.view_*: they can look, not set up.)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and request.user.has_perm("channels_line.add_lineaccount")

    def has_change_permission(self, request: HttpRequest, obj: MessagingAccount | None = None) -> bool:
        return super().has_change_permission(request, obj) and request.user.has_perm(
            "channels_line.change_lineaccount"
        )

    def has_delete_permission(self, request: HttpRequest, obj: MessagingAccount | None = None) -> bool:
        return super().has_delete_permission(request, obj) and request.user.has_perm(
            "channels_line.delete_lineaccount"
        )

    # --- Change page

    def get_fieldsets(self, request: HttpRequest, obj: MessagingAccount | None = None) -> list:
        editable = self.has_change_permission(request, obj)
        return [
            (None, {"fields": ["name", "channel_type", "enabled"]}),
            ("Account details", {"fields": SECRET_FIELDS if editable else SECRET_FIELDS_READ_ONLY}),
            (
                "Callback information",
                {
                    "fields": ["callback_url_copy"],
                    "description": "In the LINE Developers console, <b>Messaging API</b> tab > <b>Webhook "
                    "settings</b>: paste this as the <b>Webhook URL</b>, click <i>Verify</i>, and turn "
                    "on <i>Use webhook</i>.",
                },
            ),
            ("Credentials check", {"fields": ["credentials_check", "bot"]}),
            ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessagingAccount]:
        return super().get_queryset(request).select_related("line")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        # "Save and add another" would leave the page for the wizard: not what saving here is for.
        extra_context = {**(extra_context or {}), "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: MessagingAccount, form: Any, change: bool) -> None:
        # Nothing to do: MessagingAccountChangeForm ran line_account_update while validating (so that
        # the service's errors show on the form), inside the transaction of this request. Accounts are
        # created by the wizard, never by this form (add_view redirects there).
        if not change:
            raise PermissionDenied("Messaging accounts are created by the New account wizard.")

    def delete_model(self, request: HttpRequest, obj: MessagingAccount) -> None:
        line_account_delete(account=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MessagingAccount]) -> None:
        for account in queryset:
            line_account_delete(account=account)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        # The account's conversations, messages and events go with it (line_account_delete); their
        # admin pages are read-only, which must not read as "no permission to delete them".
        return deleted, counts, set(), protected

    # --- Columns and read-only fields

    @admin.display(description="Callback URL")
    def callback_url(self, account: MessagingAccount) -> str:
        line = _line(account)
        if line is None:
            return "-"
        # One line per account: the URL is cut short with an ellipsis by CSS (change_list.html), the
        # title shows it whole, and Copy copies it whole.
        target = f"callback-url-{account.pk}"
        return format_html(
            '<div class="callback-url-cell"><span class="callback-url" id="{}" title="{}">{}</span> '
            '<button type="button" class="button" data-copy-target="{}" aria-label="Copy the callback URL '
            'of {}">Copy</button><span class="copy-status" role="status" aria-live="polite"></span></div>',
            target,
            line.callback_url,
            line.callback_url,
            target,
            account.name,
        )

    @admin.display(description="Callback URL")
    def callback_url_copy(self, account: MessagingAccount) -> str:
        line = _line(account)
        if line is None:
            return "-"
        return format_html(
            '<input type="text" id="callback-url" value="{}" readonly size="80" '
            'style="width: min(44rem, 100%); font-family: monospace" aria-label="Callback URL"> '
            '<button type="button" class="button" data-copy-target="callback-url">Copy</button> '
            '<span class="copy-status" role="status" aria-live="polite"></span>',
            line.callback_url,
        )

    @admin.display(description="Last credentials check", ordering="line__last_checked_at")
    def credentials_check(self, account: MessagingAccount) -> str:
        line = _line(account)
        if line is None or line.last_checked_at is None:
            return "Never checked"
        icon = "admin/img/icon-yes.svg" if line.last_check_ok else "admin/img/icon-no.svg"
        return format_html(
            '<img src="{}" alt="{}"> {} <span title="{}">{}</span>',
            static(icon),
            "OK" if line.last_check_ok else "Failed",
            date_format(localtime(line.last_checked_at), "Y-m-d H:i"),
            line.last_check_message,
            "OK" if line.last_check_ok else "Failed",
        )

    @admin.display(description="LINE bot")
    def bot(self, account: MessagingAccount) -> str:
        line = _line(account)
        if line is None or not line.bot_user_id:
            return "Not known yet: check the credentials."
        return f"{line.bot_display_name} ({line.bot_basic_id}), user ID {line.bot_user_id}"

    @admin.display(description="Channel ID", ordering="line__channel_id")
    def channel_id_display(self, account: MessagingAccount) -> str:
        line = _line(account)
        return line.channel_id if line else "-"

    @admin.display(description="Channel secret")
    def channel_secret_status(self, account: MessagingAccount) -> str:
        line = _line(account)
        return "•••• set" if line and line.channel_secret else "not set"

    @admin.display(description="Channel access token (long-lived)")
    def channel_access_token_status(self, account: MessagingAccount) -> str:
        line = _line(account)
        return "•••• set" if line and line.channel_access_token else "not set"

    # --- Check credentials

    @admin.action(description="Check credentials with LINE", permissions=["change"])
    def check_credentials(self, request: HttpRequest, queryset: QuerySet[MessagingAccount]) -> None:
        for account in queryset.select_related("line"):
            self._credentials_check_report(request, account)

    def _credentials_check_report(self, request: HttpRequest, account: MessagingAccount) -> None:
        if _line(account) is None:
            self.message_user(request, f"{account.name}: no LINE details to check.", messages.ERROR)
            return
        result = line_account_check_credentials(account=account)
        level = messages.SUCCESS if result.ok else messages.ERROR
        self.message_user(request, f"{account.name}: {result.message}", level)

    def check_credentials_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        account = self.get_object(request, unquote(object_id))
        if account is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        self._credentials_check_report(request, account)
        return redirect("admin:omnichannel_messagingaccount_change", account.pk)

    # --- The "New account" wizard

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "new/<str:step>/",
                self.admin_site.admin_view(self.wizard_view),
                name="omnichannel_messagingaccount_wizard",
            ),
            path(
                "<path:object_id>/check-credentials/",
                self.admin_site.admin_view(self.check_credentials_view),
                name="omnichannel_messagingaccount_check_credentials",
            ),
        ]
        # Before the default patterns: their "<path:object_id>/" would swallow these.
        return custom + super().get_urls()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        request.session.pop(WIZARD_SESSION_KEY, None)
        return redirect("admin:omnichannel_messagingaccount_wizard", "channel")

    def wizard_view(self, request: HttpRequest, step: str) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        steps = dict(WIZARD_STEPS)
        if step not in steps:
            return redirect("admin:omnichannel_messagingaccount_wizard", "channel")
        state: dict[str, Any] = request.session.get(WIZARD_SESSION_KEY, {})
        handler = getattr(self, f"_wizard_{step}")
        return handler(request, state)

    def _wizard_save(self, request: HttpRequest, state: dict[str, Any]) -> None:
        request.session[WIZARD_SESSION_KEY] = state

    def _wizard_goto(self, step: str) -> HttpResponseRedirect:
        return redirect("admin:omnichannel_messagingaccount_wizard", step)

    def _wizard_created_account(self, state: dict[str, Any]) -> MessagingAccount | None:
        account_id = state.get("account_id")
        if not account_id:
            return None
        return MessagingAccount.objects.select_related("line").filter(pk=account_id).first()

    def _wizard_channel(self, request: HttpRequest, state: dict[str, Any]) -> HttpResponse:
        if state.get("account_id"):
            # The previous run of the wizard created its account: this is a new one.
            state = {}
        if request.method == "POST":
            form = AccountWizardChannelForm(request.POST)
            if form.is_valid():
                self._wizard_save(request, {**form.cleaned_data})
                return self._wizard_goto("account")
        else:
            form = AccountWizardChannelForm(initial=state or None)
        return self._wizard_render(request, "channel", form=form)

    def _wizard_account(self, request: HttpRequest, state: dict[str, Any]) -> HttpResponse:
        if state.get("account_id"):
            return self._wizard_goto("callback")
        if not state.get("name"):
            return self._wizard_goto("channel")
        if state.get("channel_type") != ChannelType.LINE:
            return self._wizard_goto("channel")
        if request.method == "POST":
            form = AccountWizardCredentialsForm(request.POST)
            if form.is_valid():
                try:
                    account = line_account_create(name=state["name"], **form.cleaned_data)
                except ValidationError as error:
                    self._wizard_errors_onto_form(form, error)
                else:
                    self._wizard_save(request, {**state, "account_id": str(account.pk)})
                    return self._wizard_goto("callback")
        else:
            form = AccountWizardCredentialsForm()
        return self._wizard_render(request, "account", form=form, name=state["name"])

    def _wizard_errors_onto_form(self, form: AccountWizardCredentialsForm, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            form.add_error(None, error)
            return
        for field, field_errors in error.error_dict.items():
            if field == "name":
                # The name was chosen on step 1; someone took it meanwhile.
                form.add_error(None, [f"Name: {message}" for e in field_errors for message in e.messages])
            else:
                form.add_error(field if field in form.fields else None, field_errors)

    def _wizard_callback(self, request: HttpRequest, state: dict[str, Any]) -> HttpResponse:
        account = self._wizard_created_account(state)
        if account is None:
            return self._wizard_goto("channel")
        return self._wizard_render(request, "callback", account=account)

    def _wizard_done(self, request: HttpRequest, state: dict[str, Any]) -> HttpResponse:
        account = self._wizard_created_account(state)
        if account is None:
            return self._wizard_goto("channel")
        # The state stays: reloading this page shows the account again. "New account" (add_view) and
        # step 1 start afresh, so it never carries into the next account.
        return self._wizard_render(request, "done", account=account)

    def _wizard_render(
        self,
        request: HttpRequest,
        step: str,
        *,
        form: Any = None,
        account: MessagingAccount | None = None,
        name: str = "",
    ) -> TemplateResponse:
        step_names = [name for name, _ in WIZARD_STEPS]
        current = step_names.index(step)
        adminform = None
        if form is not None:
            adminform = helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}, model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"New messaging account: {dict(WIZARD_STEPS)[step]}",
            "step": step,
            "steps": [
                {"name": name, "title": title, "done": i < current, "current": i == current}
                for i, (name, title) in enumerate(WIZARD_STEPS)
            ],
            "step_number": current + 1,
            "form": form,
            "adminform": adminform,
            "errors": helpers.AdminErrorList(form, []) if form is not None and form.is_bound else None,
            "account": account,
            "account_name": account.name if account else name,
            "callback_url": account.line.callback_url if account else "",
            "has_view_permission": self.has_view_permission(request),
            "has_change_permission": self.has_change_permission(request, account),
        }
        if step == "done" and account is not None:
            context.update(_wizard_next_steps(account))
        return TemplateResponse(request, "admin/channels_line/messagingaccount/wizard.html", context)


def _wizard_next_steps(account: MessagingAccount) -> dict[str, Any]:
    """Links of the Done page to what exists today: the account's conversations and, where this server
    talks to the LINE stand-in instead of LINE (LINE_API_BASE_URL is set), the stand-in's phone page."""
    conversations = reverse("admin:omnichannel_conversation_changelist")
    standin_url = settings.LINE_API_BASE_URL
    return {
        "conversations_url": f"{conversations}?{urlencode({'messaging_account__id__exact': account.pk})}",
        "standin_url": standin_url,
        "standin_phone_url": (
            f"{standin_url}/?{urlencode({'channel': account.line.channel_id})}" if standin_url else ""
        ),
        "standin_register_command": f"python manage.py line_standin_register {shlex.quote(account.name)}",
    }


class StoredAlteredFilter(admin.SimpleListFilter):
    title = "stored altered"
    parameter_name = "altered"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes: content a database refuses, replaced"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[LineWebhookEvent]) -> QuerySet:
        if self.value() == "yes":
            return queryset.exclude(raw_as_signed="")
        if self.value() == "no":
            return queryset.filter(raw_as_signed="")
        return queryset


@admin.register(LineWebhookEvent)
class LineWebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "received_at",
        "event_type",
        "state",
        "messaging_account",
        "source_type",
        "source_user_id",
        "is_redelivery",
        "attempts",
        "last_error_preview",
    ]
    list_select_related = ["messaging_account"]
    list_filter = [
        "state",
        StoredAlteredFilter,
        "event_type",
        "source_type",
        "mode",
        "is_redelivery",
        "messaging_account",
    ]
    actions = ["process_again"]
    search_fields = ["=webhook_event_id", "=source_user_id", "=source_group_id", "=source_room_id"]
    date_hierarchy = "received_at"
    fields = [
        "messaging_account",
        "webhook_event_id",
        "event_type",
        "mode",
        "source_type",
        "source_user_id",
        "source_group_id",
        "source_room_id",
        "line_timestamp",
        "is_redelivery",
        "received_at",
        "enqueued_at",
        "state",
        "attempts",
        "last_error",
        "processed_at",
        "conversation",
        "message",
        "raw_json",
        "raw_as_signed_block",
    ]
    readonly_fields = fields

    @admin.display(description="Raw event, as stored")
    def raw_json(self, event: LineWebhookEvent) -> str:
        return json_block(event.raw)

    @admin.display(description="As LINE signed it (when it had to be altered to be stored)")
    def raw_as_signed_block(self, event: LineWebhookEvent) -> str:
        if not event.raw_as_signed:
            return "-"
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', event.raw_as_signed)

    @admin.display(description="Last error")
    def last_error_preview(self, event: LineWebhookEvent) -> str:
        return Truncator(event.last_error).chars(80)

    @admin.action(description="Process the selected failed events again", permissions=["change"])
    def process_again(self, request: HttpRequest, queryset: QuerySet[LineWebhookEvent]) -> None:
        count = line_events_process_again(event_pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} failed event(s) queued for processing again.", messages.SUCCESS)
        if skipped := queryset.count() - count:
            self.message_user(request, f"{skipped} event(s) skipped: only failed events are processed again.")


@admin.register(LineWebhookRejectedBody)
class LineWebhookRejectedBodyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "messaging_account", "reason"]
    list_select_related = ["messaging_account"]
    list_filter = ["messaging_account"]
    date_hierarchy = "received_at"
    fields = ["messaging_account", "received_at", "reason", "body_block"]
    readonly_fields = fields

    @admin.display(description="Body, as received")
    def body_block(self, rejected: LineWebhookRejectedBody) -> str:
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', rejected.body)
