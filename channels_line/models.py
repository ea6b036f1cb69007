"""LINE details beside the core records: account credentials, and every webhook event as received."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from omnichannel.fields import EncryptedTextField
from omnichannel.models import Conversation, Message, MessagingAccount


class LineAccount(models.Model):
    """The LINE credentials of a messaging account. The secret and the token are encrypted at rest."""

    messaging_account = models.OneToOneField(
        MessagingAccount, on_delete=models.CASCADE, primary_key=True, related_name="line"
    )
    channel_id = models.CharField("Channel ID", max_length=20, unique=True)
    channel_secret = EncryptedTextField("Channel secret")
    channel_access_token = EncryptedTextField("Channel access token (long-lived)")
    # Filled in by "Check credentials" (bot info): the `destination` of our webhooks.
    bot_user_id = models.CharField(max_length=100, blank=True)
    bot_basic_id = models.CharField(max_length=100, blank=True)
    bot_display_name = models.CharField(max_length=200, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True)
    last_check_message = models.TextField(blank=True)

    class Meta:
        verbose_name = "LINE account details"

    def __str__(self) -> str:
        return f"LINE channel {self.channel_id}"

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/line/{self.messaging_account_id}/"

    @property
    def callback_url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}{self.webhook_path}"


class EventState(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"


class LineWebhookEvent(models.Model):
    """One webhook event exactly as LINE signed it, stored once per webhookEventId."""

    # No index of their own for these two foreign keys: the unique constraint (account first) and the
    # (conversation, time) index serve their lookups, and every index slows the webhook's insert.
    messaging_account = models.ForeignKey(
        MessagingAccount, on_delete=models.CASCADE, related_name="line_events", db_index=False
    )
    webhook_event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=40)
    mode = models.CharField(max_length=10, blank=True)
    source_type = models.CharField(max_length=10, blank=True)
    source_user_id = models.CharField(max_length=100, blank=True)
    source_group_id = models.CharField(max_length=100, blank=True)
    source_room_id = models.CharField(max_length=100, blank=True)
    line_timestamp = models.DateTimeField()
    is_redelivery = models.BooleanField(default=False)
    raw = models.JSONField()
    # Set when `raw` had to be altered to be stored (a NUL, a lone surrogate, NaN, nesting too deep):
    # the event exactly as LINE signed it, as ASCII JSON text. Its message is flagged for a human.
    raw_as_signed = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=10, choices=EventState.choices, default=EventState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    conversation = models.ForeignKey(
        Conversation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="line_events",
        db_index=False,
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="line_events"
    )
    # A reply token is single-use and short-lived; it is claimed by one outbound delivery at most.
    reply_token = models.CharField(max_length=100, blank=True)
    reply_token_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "LINE webhook event"
        ordering = ["line_timestamp", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["messaging_account", "webhook_event_id"], name="line_event_once_per_webhook_event_id"
            )
        ]
        indexes = [
            models.Index(
                fields=["state", "received_at"], name="line_event_pending_idx", condition=Q(state="pending")
            ),
            models.Index(fields=["conversation", "-line_timestamp"]),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_event_id}"


class LineWebhookRejectedBody(models.Model):
    """A signed body that could not be read (malformed JSON or events without an ID), kept for inspection."""

    messaging_account = models.ForeignKey(
        MessagingAccount, on_delete=models.CASCADE, related_name="line_rejected_bodies"
    )
    body = models.TextField()
    reason = models.CharField(max_length=500)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "rejected LINE webhook body"
        verbose_name_plural = "rejected LINE webhook bodies"

    def __str__(self) -> str:
        return f"Rejected body {self.pk}: {self.reason}"
