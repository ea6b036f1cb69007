"""Forms of the routing admin: the workstream (presences as check boxes), the channel instance (only
accounts not attached elsewhere), the "Test routing" sample and the steps of the "Set up LINE"
wizard (a LINE channel instance on a workstream)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import Q
from django.utils import timezone

from agents.models import Presence
from omnichannel.models import ChannelType, MessagingAccount

from .models import ChannelInstance, ChannelLanguage, Workstream
from .selectors import messaging_accounts_available


class WorkstreamForm(forms.ModelForm):
    allowed_presences = forms.MultipleChoiceField(
        choices=Presence.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Agents in these presences receive pushed work.",
    )

    class Meta:
        model = Workstream
        fields = [
            "name",
            "distribution_mode",
            "fallback_queue",
            "timezone",
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


ONLY_WITH_FILE_ATTACHMENTS = "Only matters when file attachments is on."
FILE_ATTACHMENTS_HELP = (
    "On: files (images, video, audio, documents) can go through this channel. Off: nobody can send files, "
    "whatever the two boxes below say."
)
CUSTOMERS_CAN_SEND_HELP = (
    f"{ONLY_WITH_FILE_ATTACHMENTS} A file a customer sends otherwise is kept as refused (never downloaded) "
    "and flagged to the agent."
)
AGENTS_CAN_SEND_HELP = f"{ONLY_WITH_FILE_ATTACHMENTS} Otherwise an agent's file is refused with the reason."


class ChannelInstanceForm(forms.ModelForm):
    class Meta:
        model = ChannelInstance
        fields = [
            "messaging_account",
            "workstream",
            "language",
            "custom_automated_messages",
            "post_conversation_survey",
            "file_attachments",
            "customers_can_send_attachments",
            "agents_can_send_attachments",
        ]
        help_texts = {
            "file_attachments": FILE_ATTACHMENTS_HELP,
            "customers_can_send_attachments": CUSTOMERS_CAN_SEND_HELP,
            "agents_can_send_attachments": AGENTS_CAN_SEND_HELP,
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields.get("messaging_account")
        if field is not None:
            # Only accounts not attached elsewhere (this instance's own stays). A race past this list
            # is still refused: the one-to-one's unique constraint, with the same message.
            free = Q(channel_instance__isnull=True)
            if self.instance.pk:
                free |= Q(pk=self.instance.messaging_account_id)
            field.queryset = MessagingAccount.objects.filter(free).order_by("name")


class RoutingTestForm(forms.Form):
    """Sample values for "Test routing": what a new conversation would bring."""

    display_name = forms.CharField(label="Customer display name", required=False, max_length=200)
    language = forms.CharField(
        label="Customer language",
        required=False,
        max_length=20,
        help_text=f"As LINE gives it, e.g. {', '.join(code for code, _ in ChannelLanguage.choices)}.",
    )
    text = forms.CharField(
        label="First message text", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    channel_instance = forms.CharField(
        label="Channel instance", required=False, help_text="Its messaging account's name."
    )
    context = forms.JSONField(
        label="Context variables",
        required=False,
        initial=dict,
        help_text='An object, e.g. {"vip": true, "order_id": "1042"}: read by context.<name> conditions.',
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    at = forms.DateTimeField(
        label="Time",
        required=False,
        help_text="When the conversation arrives (this server's time zone; YYYY-MM-DD HH:MM). Empty: now.",
    )
    split_key = forms.IntegerField(
        label="Conversation ID",
        required=False,
        initial=1,
        min_value=0,
        help_text="Picks the share of a percentage split, as a conversation's ID does.",
    )

    def clean_context(self) -> dict[str, Any]:
        context = self.cleaned_data.get("context")
        if context in (None, ""):
            return {}
        if not isinstance(context, dict):
            raise forms.ValidationError('Context variables are a JSON object, e.g. {"vip": true}.')
        return context

    def clean_at(self) -> Any:
        return self.cleaned_data.get("at") or timezone.now()


# --- The "Set up LINE" wizard: one form per step; what each step chose is kept in the session (plain
# JSON values) until Finish creates the channel instance with routing.services.channel_instance_save.

SETUP_LINE_STEPS = (
    ("line", "LINE"),
    ("language", "Language"),
    ("behaviors", "Behaviors"),
    ("features", "User features"),
    ("summary", "Summary"),
    ("done", "Done"),
)


def _default(field_name: str) -> Any:
    return ChannelInstance._meta.get_field(field_name).default


class SetupLineAccountForm(forms.Form):
    messaging_account = forms.ModelChoiceField(
        label="Available LINE accounts",
        queryset=MessagingAccount.objects.none(),
        widget=forms.RadioSelect(attrs={"class": "radiolist"}),  # the admin's look for radio lists
        empty_label=None,
        help_text="Only LINE accounts not attached to a channel instance: an account is in one at most.",
        error_messages={
            "required": "Pick a LINE account.",
            "invalid_choice": "This account is not available any more (attached to a channel instance "
            "meanwhile, or deleted): pick another.",
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["messaging_account"]
        field.queryset = messaging_accounts_available(channel_type=ChannelType.LINE).select_related("line")
        field.label_from_instance = lambda account: f"{account.name} (channel ID {account.line.channel_id})"

    def session_data(self) -> dict[str, Any]:
        return {"messaging_account": str(self.cleaned_data["messaging_account"].pk)}


class SetupLineLanguageForm(forms.Form):
    language = forms.ChoiceField(
        label="Language",
        choices=ChannelLanguage.choices,
        initial=_default("language"),
        help_text="The language of this channel's automated messages and post-conversation survey.",
        error_messages={"required": "Pick a language."},
    )

    def session_data(self) -> dict[str, Any]:
        return {"language": self.cleaned_data["language"]}


class SetupLineBehaviorsForm(forms.Form):
    custom_automated_messages = forms.BooleanField(
        label="Custom automated messages",
        required=False,
        initial=_default("custom_automated_messages"),
        help_text="On: this channel's own automated messages (greeting, queue position, agent assigned...) "
        "replace the default ones.",
    )
    post_conversation_survey = forms.BooleanField(
        label="Post-conversation survey",
        required=False,
        initial=_default("post_conversation_survey"),
        help_text="On: when a conversation ends, the customer is asked to rate it.",
    )

    def session_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in self.fields}


class SetupLineFeaturesForm(forms.Form):
    file_attachments = forms.BooleanField(
        label="File attachments",
        required=False,
        initial=_default("file_attachments"),
        help_text=FILE_ATTACHMENTS_HELP,
    )
    customers_can_send_attachments = forms.BooleanField(
        label="Customers can send file attachments",
        required=False,
        initial=_default("customers_can_send_attachments"),
        help_text=CUSTOMERS_CAN_SEND_HELP,
    )
    agents_can_send_attachments = forms.BooleanField(
        label="Agents can send file attachments",
        required=False,
        initial=_default("agents_can_send_attachments"),
        help_text=AGENTS_CAN_SEND_HELP,
    )

    def session_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in self.fields}


SETUP_LINE_FORMS: dict[str, type[forms.Form]] = {
    "line": SetupLineAccountForm,
    "language": SetupLineLanguageForm,
    "behaviors": SetupLineBehaviorsForm,
    "features": SetupLineFeaturesForm,
}


def setup_line_step_missing(*, state: dict[str, Any], step: str) -> str | None:
    """The first step before `step` whose values the wizard's state lacks (the page to go back to),
    or None when every earlier step is done."""
    for name, _ in SETUP_LINE_STEPS:
        if name == step:
            return None
        form_class = SETUP_LINE_FORMS.get(name)
        if form_class is not None and any(field not in state for field in form_class.base_fields):
            return name
    return None


def setup_line_instance(*, workstream: Workstream, state: dict[str, Any]) -> ChannelInstance:
    """The (unsaved) channel instance the wizard's state describes, for channel_instance_save."""
    fields = {
        name: state[name]
        for form_class in SETUP_LINE_FORMS.values()
        for name in form_class.base_fields
        if name != "messaging_account"
    }
    return ChannelInstance(workstream=workstream, messaging_account_id=state["messaging_account"], **fields)


def setup_line_summary_rows(*, instance: ChannelInstance) -> list[dict[str, str]]:
    """What the Summary and Done pages show of a channel instance (saved or not): label, value and the
    wizard step that sets it."""

    def on_off(value: bool) -> str:
        return "On" if value else "Off"

    def can_send(value: bool) -> str:
        if not instance.file_attachments:
            return f"{'Yes' if value else 'No'} (no effect: file attachments is off)"
        return "Yes" if value else "No"

    account = instance.messaging_account
    return [
        {"label": "Workstream", "value": instance.workstream.name, "step": ""},
        {
            "label": "LINE account",
            "value": f"{account.name} (channel ID {account.line.channel_id})",
            "step": "line",
        },
        {"label": "Language", "value": ChannelLanguage(instance.language).label, "step": "language"},
        {
            "label": "Custom automated messages",
            "value": on_off(instance.custom_automated_messages),
            "step": "behaviors",
        },
        {
            "label": "Post-conversation survey",
            "value": on_off(instance.post_conversation_survey),
            "step": "behaviors",
        },
        {"label": "File attachments", "value": on_off(instance.file_attachments), "step": "features"},
        {
            "label": "Customers can send file attachments",
            "value": can_send(instance.customers_can_send_attachments),
            "step": "features",
        },
        {
            "label": "Agents can send file attachments",
            "value": can_send(instance.agents_can_send_attachments),
            "step": "features",
        },
    ]
