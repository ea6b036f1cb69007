"""The channel-agnostic core: messaging accounts, contacts, social profiles, conversations, messages,
attachments. Channel apps (channels_line) add their own details beside these records."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class WorkerHeartbeat(models.Model):
    """A row written by a Celery worker; proves that beat and a worker run (shown by /readyz)."""

    token = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.hostname} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ChannelType(models.TextChoices):
    LINE = "line", "LINE"


class MessagingAccount(models.Model):
    """Credentials of one external messaging account; the channel app keeps the details."""

    # The UUID is the primary key and the unguessable part of the account's webhook path.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    channel_type = models.CharField(max_length=20, choices=ChannelType.choices, default=ChannelType.LINE)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # Names are told apart without regard to case ("Bangkok shop" and "BANGKOK SHOP" are one name
            # to a person); the check compares with the database's lower() on both sides, as the
            # services' friendly check does (channels_line.services.accounts.messaging_account_name_taken).
            models.UniqueConstraint(
                Lower("name"),
                name="messaging_account_name_unique_ci",
                violation_error_message="A messaging account with this name exists already (names are "
                "compared without regard to case).",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_type_display()})"


class Contact(models.Model):
    """A customer record; social profiles link to it."""

    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    notes = models.TextField(blank=True)
    custom_fields = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SocialProfile(models.Model):
    """One person as seen by one messaging account (for LINE: a user ID)."""

    messaging_account = models.ForeignKey(
        MessagingAccount, on_delete=models.CASCADE, related_name="social_profiles"
    )
    external_id = models.CharField(max_length=100)
    display_name = models.CharField(max_length=200, blank=True)
    picture_url = models.URLField(max_length=1000, blank=True)
    status_message = models.CharField(max_length=1000, blank=True)
    language = models.CharField(max_length=20, blank=True)
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="social_profiles"
    )
    # False once the customer blocked the account (LINE unfollow): nothing can be sent any more.
    is_reachable = models.BooleanField(default=True)
    reachability_changed_at = models.DateTimeField(null=True, blank=True)
    profile_fetched_at = models.DateTimeField(null=True, blank=True)
    # The last attempt, successful or not: a failing channel is not asked again on every event.
    profile_attempted_at = models.DateTimeField(null=True, blank=True)
    profile_raw = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["messaging_account", "external_id"], name="social_profile_per_account_unique"
            )
        ]

    def __str__(self) -> str:
        return self.display_name or self.external_id


class ConversationState(models.TextChoices):
    OPEN = "open", _("Open")
    ACTIVE = "active", _("Active")
    WAITING = "waiting", _("Waiting")
    WRAP_UP = "wrap_up", _("Wrap-up")
    CLOSED = "closed", _("Closed")


class ThreadType(models.TextChoices):
    USER = "user", _("One-to-one")
    GROUP = "group", _("Group")
    ROOM = "room", _("Room")


class Conversation(models.Model):
    """A thread with a customer (or a group) on one messaging account, from first message to close."""

    messaging_account = models.ForeignKey(
        MessagingAccount, on_delete=models.CASCADE, related_name="conversations"
    )
    thread_type = models.CharField(max_length=10, choices=ThreadType.choices, default=ThreadType.USER)
    # Where replies go: the user ID for one-to-one threads, the group or room ID otherwise.
    thread_id = models.CharField(max_length=100)
    # Deleting a profile (the customer's right to erasure) deletes their conversations with it.
    social_profile = models.ForeignKey(
        SocialProfile, null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    state = models.CharField(max_length=10, choices=ConversationState.choices, default=ConversationState.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Routing (routing.services.conversation_route). An "open item" of a queue: queue set, state Open.
    workstream = models.ForeignKey(
        "routing.Workstream", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    queue = models.ForeignKey(
        "routing.Queue", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    # Lower number goes first (as for queues); classification may set it.
    priority = models.PositiveIntegerField(default=100)
    # The recorded decision: rules matched, attributes written, queue, reason, when.
    routing = models.JSONField(default=dict, blank=True)
    # Due for routing since then (set when the conversation is created, cleared when routed); the
    # routing sweep queues again what is still due QUEUE_SWEEP_AFTER_SECONDS later.
    routing_due_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    # Lifecycle (omnichannel.lifecycle.conversation_transition is the only writer of these and of
    # `state`). The agent working it (Active, Wrap-up) or who left it waiting (Waiting); cleared when it
    # goes back to a queue, where `previous_agent` keeps them for affinity ("keep the same agent").
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )
    previous_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Units of the assigned agent's capacity this conversation holds now (the workstream's units, or
    # what classification wrote); released exactly, whatever the workstream says by then.
    capacity_held = models.PositiveIntegerField(default=0)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    wrap_up_notes = models.TextField(blank=True)
    # Until when the assigned agent has read the customer's messages (the inbox's unread counts);
    # opening the conversation moves it forward.
    agent_read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_message_at", "-id"]
        # view_conversation lets an agent see their own conversations (omnichannel.selectors);
        # this one, every conversation (supervisors, administrators).
        permissions = [("view_all_conversations", "See every conversation")]
        constraints = [
            # One open conversation per thread: concurrent first messages cannot create two.
            models.UniqueConstraint(
                fields=["messaging_account", "thread_id"],
                condition=~Q(state="closed"),
                name="conversation_one_open_per_thread",
            ),
            models.CheckConstraint(
                condition=Q(state="closed", closed_at__isnull=False) | ~Q(state="closed"),
                name="conversation_closed_has_closed_at",
            ),
            # Capacity is held only while an agent works the conversation (Active, and Wrap-up when the
            # workstream blocks it); Open, Waiting and Closed hold none.
            models.CheckConstraint(
                condition=Q(capacity_held=0) | Q(state__in=["active", "wrap_up"]),
                name="conversation_capacity_held_when_worked",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "-last_message_at"]),
            # A queue's open items, oldest first (the queue list, and distribution next).
            models.Index(fields=["queue", "state", "queued_at"], name="conversation_queue_state_idx"),
            # An agent's conversations by state (the inbox, the access rule).
            models.Index(fields=["assigned_agent", "state"], name="conversation_agent_state_idx"),
            # The routing sweep's query.
            models.Index(
                fields=["routing_due_at"],
                name="conversation_routing_due_idx",
                condition=Q(routing_due_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk} with {self.social_profile or self.thread_id}"


class ActivityKind(models.TextChoices):
    STATE_CHANGED = "state_changed", _("State changed")
    ROUTED = "routed", _("Routed")
    OFFERED = "offered", _("Offered")
    OFFER_ANSWERED = "offer_answered", _("Offer answered")
    TRANSFERRED = "transferred", _("Transferred")


class ConversationActivity(models.Model):
    """What happened to a conversation besides its messages: state changes with who did them, offers,
    transfers with their note. Written in the transaction of the change (omnichannel.lifecycle); the
    timeline and the audit read it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="activities")
    kind = models.CharField(max_length=20, choices=ActivityKind.choices)
    from_state = models.CharField(max_length=10, choices=ConversationState.choices, blank=True)
    to_state = models.CharField(max_length=10, choices=ConversationState.choices, blank=True)
    # Who did it; None for the system (routing, sweeps, the customer writing again).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "conversation activities"
        indexes = [models.Index(fields=["conversation", "created_at", "id"], name="activity_timeline_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.from_state}>{self.to_state} of {self.conversation_id}"


class Direction(models.TextChoices):
    INBOUND = "in", _("From the customer")
    OUTBOUND = "out", _("To the customer")


class MessageKind(models.TextChoices):
    TEXT = "text", _("Text")
    IMAGE = "image", _("Image")
    VIDEO = "video", _("Video")
    AUDIO = "audio", _("Audio")
    FILE = "file", _("File")
    DOCUMENT = "document", _("Document")
    STICKER = "sticker", _("Sticker")
    LOCATION = "location", _("Location")
    POSTBACK = "postback", _("Customer action")
    EVENT = "event", _("Event")
    UNKNOWN = "unknown", _("Unknown")


class DeliveryState(models.TextChoices):
    RECEIVED = "received", pgettext_lazy("delivery state", "Received")
    PENDING = "pending", pgettext_lazy("delivery state", "Pending")
    SENDING = "sending", pgettext_lazy("delivery state", "Sending")
    DELIVERED = "delivered", pgettext_lazy("delivery state", "Delivered")
    FAILED = "failed", pgettext_lazy("delivery state", "Failed")


class Message(models.Model):
    """One message or customer action in a conversation, inbound or outbound, with its raw source."""

    # Outbound: the UUID is LINE's X-Line-Retry-Key, so that a retry never sends twice.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=10, choices=MessageKind.choices)
    text = models.TextField(blank=True)
    # Kind-specific data: sticker IDs, location, postback data and params, quick replies, event details.
    payload = models.JSONField(default=dict, blank=True)
    # The channel's own message ID (LINE message ID) for inbound messages; unique per conversation.
    external_id = models.CharField(max_length=100, blank=True)
    sender_profile = models.ForeignKey(
        SocialProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="sent_messages"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="authored_messages",
    )
    # When it happened: LINE's timestamp for inbound, creation time for outbound. Order key.
    sent_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivery_state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.RECEIVED
    )
    delivery_method = models.CharField(max_length=10, blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    delivery_error = models.TextField(blank=True)
    # Pending: when the next delivery attempt is due (queued now, or a retry's backoff). Sending: when
    # the attempt started. The sweep takes up deliveries overdue by QUEUE_SWEEP_AFTER_SECONDS (their
    # enqueue was lost) and attempts "sending" past DELIVERY_SENDING_TIMEOUT_SECONDS (their worker was).
    delivery_due_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The customer unsent it: content removed, the message stays as a marker.
    unsent_at = models.DateTimeField(null=True, blank=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # A type this version does not understand: kept raw, shown to agents as such.
    is_flagged = models.BooleanField(default=False)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["sent_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "external_id"],
                condition=~Q(external_id=""),
                name="message_external_id_unique_per_conversation",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "sent_at", "id"]),
            # The deliveries sweep's two queries, one partial index each.
            models.Index(
                fields=["delivery_due_at"],
                name="message_delivery_pending_idx",
                condition=Q(delivery_state="pending"),
            ),
            models.Index(
                fields=["delivery_due_at"],
                name="message_delivery_sending_idx",
                condition=Q(delivery_state="sending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.uuid}"


class MessageEdit(models.Model):
    """The text a message had before the customer edited it."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    previous_text = models.TextField(blank=True)
    new_text = models.TextField(blank=True)
    edited_at = models.DateTimeField()
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["edited_at", "id"]

    def __str__(self) -> str:
        return f"Edit of {self.message_id} at {self.edited_at:%Y-%m-%d %H:%M:%S}"


class AttachmentState(models.TextChoices):
    PENDING = "pending", pgettext_lazy("attachment state", "Downloading")
    READY = "ready", pgettext_lazy("attachment state", "Ready")
    EXTERNAL = "external", pgettext_lazy("attachment state", "Hosted elsewhere")
    TOO_LARGE = "too_large", pgettext_lazy("attachment state", "Too large")
    REMOVED = "removed", pgettext_lazy("attachment state", "Removed (unsent)")
    # A customer's file that the channel instance does not accept (its user features): kept as a marker
    # with its name and type, never downloaded, flagged to the agent.
    REFUSED = (
        "refused",
        pgettext_lazy("attachment state", "Refused (the channel does not accept customers' files)"),
    )
    FAILED = "failed", pgettext_lazy("attachment state", "Failed")


def attachment_upload_to(instance: Attachment, filename: str) -> str:
    return f"attachments/{instance.message.conversation_id}/{instance.message.uuid}/{filename}"


class Attachment(models.Model):
    """A file carried by a message: downloaded into storage, or a link to where it is hosted."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_upload_to, max_length=500, blank=True)
    # The name it is stored and offered under, made safe (omnichannel.files.file_name_clean)...
    file_name = models.CharField(max_length=255, blank=True)
    # ...and the name as the sender gave it, kept for the record only: never used in a path or header.
    original_name = models.CharField(max_length=1000, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    external_url = models.URLField(max_length=2000, blank=True)
    preview_url = models.URLField(max_length=2000, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=AttachmentState.choices, default=AttachmentState.PENDING)
    error = models.TextField(blank=True)
    fetch_attempts = models.PositiveIntegerField(default=0)
    # While downloading: when the next fetch is due (queued now, or a retry's backoff); the sweep
    # queues again a fetch overdue by QUEUE_SWEEP_AFTER_SECONDS (its enqueue or its worker was lost).
    fetch_due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["fetch_due_at"], name="attachment_fetch_open_idx", condition=Q(state="pending")
            )
        ]

    def __str__(self) -> str:
        return self.file_name or f"Attachment {self.pk}"


class ConversationConsult(models.Model):
    """Another agent asked to look at a conversation: they see it read-only until the consult ends."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="consults")
    consultant = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consults"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One running consult per agent and conversation.
            models.UniqueConstraint(
                fields=["conversation", "consultant"],
                condition=Q(ended_at__isnull=True),
                name="consult_one_running_per_agent",
            )
        ]
        indexes = [models.Index(fields=["consultant", "ended_at"], name="consult_consultant_idx")]

    def __str__(self) -> str:
        return f"Consult of {self.consultant_id} on {self.conversation_id}"


class QuickReply(models.Model):
    """A canned answer agents insert from the composer (type "/"): placeholders {CustomerName} and
    {AgentName} are filled in when inserted."""

    title = models.CharField(max_length=100)
    language = models.CharField(max_length=10, blank=True, help_text="Empty: any language.")
    tags = models.CharField(max_length=200, blank=True, help_text="Comma-separated words to search by.")
    text = models.TextField(help_text="Placeholders: {CustomerName}, {AgentName}.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]
        verbose_name_plural = "quick replies"

    def __str__(self) -> str:
        return self.title


class LiveNotice(models.Model):
    """Something an open page should show now: written in the transaction of the change it tells
    about, read by every web process in ID order (omnichannel.live) and pushed to the pages whose
    audience it names. A page that reconnects reads what it missed from here."""

    kind = models.CharField(max_length=30)
    # The audience: the agent concerned, everyone looking at the conversation, the members of a
    # (pick) queue, supervisors.
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    queue = models.ForeignKey(
        "routing.Queue", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    supervisors = models.BooleanField(default=False)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"
