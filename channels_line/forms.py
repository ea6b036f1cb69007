"""Admin forms for LINE messaging accounts: the "New account" wizard steps and the change form.

Secrets are write-only everywhere: no widget ever renders a stored or submitted secret back into a page.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from omnichannel.models import ChannelType, MessagingAccount

from .services.accounts import (
    NAME_TAKEN,
    channel_id_validator,
    channel_secret_validator,
    line_account_update,
    messaging_account_name_taken,
)

CHANNEL_ID_HELP = (
    "LINE Developers console > your provider > your Messaging API channel > <b>Basic settings</b> tab > "
    "<b>Channel ID</b> (a number)."
)
CHANNEL_SECRET_HELP = (
    "Same <b>Basic settings</b> tab, further down: <b>Channel secret</b> (32 hexadecimal characters: "
    "digits and the letters a to f). "
    "It signs the webhooks LINE sends us."
)
CHANNEL_ACCESS_TOKEN_HELP = (
    "<b>Messaging API</b> tab > <b>Channel access token (long-lived)</b>: click <i>Issue</i> if there is "
    "none yet, then copy it."
)


class SecretInput(forms.PasswordInput):
    """A password input that never renders a value, even after a validation error."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"autocomplete": "new-password", "spellcheck": "false", **(attrs or {})})


class SecretReplaceInput(SecretInput):
    """Shows whether a secret is stored ("•••• set") beside an empty "Replace with…" input."""

    is_set = False

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"placeholder": "Replace with…", "size": 50, **(attrs or {})})

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> str:
        status = "•••• set" if self.is_set else "not set"
        return format_html(
            '<span class="secret-status" style="margin-right:1em">{}</span>{}',
            status,
            super().render(name, None, attrs, renderer),
        )


class AccountWizardChannelForm(forms.Form):
    """Step 1, Channel details."""

    name = forms.CharField(
        max_length=MessagingAccount._meta.get_field("name").max_length,
        help_text="How agents and administrators will recognise this account, e.g. “Bangkok shop on LINE”.",
    )
    channel_type = forms.ChoiceField(
        choices=ChannelType.choices, initial=ChannelType.LINE, widget=forms.RadioSelect, label="Channel"
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        # An early, friendly answer; line_account_create checks again when the account is made.
        if messaging_account_name_taken(name=name):
            raise ValidationError(NAME_TAKEN)
        return name


class AccountWizardCredentialsForm(forms.Form):
    """Step 2, Account details. The view hands these straight to line_account_create."""

    channel_id = forms.CharField(
        label="Channel ID", max_length=20, help_text=CHANNEL_ID_HELP, validators=[channel_id_validator]
    )
    channel_secret = forms.CharField(
        label="Channel secret",
        widget=SecretInput(),
        help_text=CHANNEL_SECRET_HELP,
        validators=[channel_secret_validator],
    )
    channel_access_token = forms.CharField(
        label="Channel access token (long-lived)",
        widget=SecretInput(attrs={"size": 60}),
        help_text=CHANNEL_ACCESS_TOKEN_HELP,
    )


class MessagingAccountChangeForm(forms.ModelForm):
    """The change form of a LINE messaging account; saving it is `line_account_update`.

    The secrets are shown masked, with an empty "Replace with…" field: left empty, they stay as stored."""

    channel_id = forms.CharField(
        label="Channel ID", max_length=20, help_text=CHANNEL_ID_HELP, validators=[channel_id_validator]
    )
    channel_secret = forms.CharField(
        label="Channel secret",
        required=False,
        widget=SecretReplaceInput(),
        help_text="Leave empty to keep the stored secret. " + CHANNEL_SECRET_HELP,
        validators=[channel_secret_validator],
    )
    channel_access_token = forms.CharField(
        label="Channel access token (long-lived)",
        required=False,
        widget=SecretReplaceInput(),
        help_text="Leave empty to keep the stored token. " + CHANNEL_ACCESS_TOKEN_HELP,
    )

    class Meta:
        model = MessagingAccount
        fields = ["name", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        line = self.instance.line
        self.fields["channel_id"].initial = line.channel_id
        self.fields["channel_secret"].widget.is_set = bool(line.channel_secret)
        self.fields["channel_access_token"].widget.is_set = bool(line.channel_access_token)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        # On the field, before the model's constraints are checked (which would say it less clearly).
        if messaging_account_name_taken(name=name, exclude_pk=self.instance.pk):
            raise ValidationError(NAME_TAKEN)
        return name

    def _post_clean(self) -> None:
        # The service is the one place that validates and writes an account, so it runs here, once
        # every other check has passed, and its ValidationErrors land on the fields they name. The admin
        # runs the whole request in one transaction; its save_model has nothing left to write.
        super()._post_clean()
        if self.errors:
            return
        try:
            line_account_update(
                account=self.instance,
                name=self.cleaned_data["name"],
                enabled=self.cleaned_data["enabled"],
                channel_id=self.cleaned_data["channel_id"],
                channel_secret=self.cleaned_data.get("channel_secret") or None,
                channel_access_token=self.cleaned_data.get("channel_access_token") or None,
            )
        except ValidationError as error:
            self.add_error(None, error)
