"""Forms of the routing admin: the workstream (presences as check boxes), the channel instance (only
accounts not attached elsewhere) and the "Test routing" sample."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import Q
from django.utils import timezone

from agents.models import Presence
from omnichannel.models import MessagingAccount

from .models import ChannelInstance, ChannelLanguage, Workstream


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
