"""Routing set-up: workstreams, channel instances, queues (members, operating hours, overflow) and
routing rules (work classification, route-to-queue). Data and constraints only: the rules engine is
routing/conditions.py, the decisions and writes routing/services.py.

Conditions are data, never code: a JSON list of {"field", "operator", "value"} (routing/conditions.py
says which fields and operators exist). Every record is validated by its clean(), which the admin's
forms and routing.services run alike."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import pgettext_lazy

from agents.models import Presence


def timezone_validate(value: str) -> None:
    """An IANA time zone name, as zoneinfo knows it ("Asia/Tokyo", "UTC")."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not a known time zone: use an IANA name such as 'Asia/Bangkok' or 'UTC'."
        ) from None


def timezone_default() -> str:
    return settings.TIME_ZONE


def presences_default() -> list[str]:
    return [Presence.AVAILABLE, Presence.BUSY]


class DistributionMode(models.TextChoices):
    PUSH = "push", "Push (the system assigns)"
    PICK = "pick", "Pick (agents pick from their queues)"


class WrapUpCapacity(models.TextChoices):
    NEVER = "never", "Never"
    ALWAYS = "always", "Always"
    MINUTES = "minutes", "For N minutes"


class AssignmentMethod(models.TextChoices):
    HIGHEST_CAPACITY = "highest_capacity", "Highest capacity (ties: round robin)"
    ROUND_ROBIN = "round_robin", "Advanced round robin"


class SkillMatching(models.TextChoices):
    EXACT = "exact", "Exact match"
    CLOSEST = "closest", "Closest match"
    NONE = "none", "None"


class OverflowAction(models.TextChoices):
    """What happens to a new item when its queue overflows (before it is queued)."""

    END = "end", "End the conversation with a message"
    TRANSFER = "transfer", "Transfer to another queue"
    ASSIGN_ANYWAY = "assign_anyway", "Assign anyway"


class WaitAction(models.TextChoices):
    """What happens to an item that has waited in its queue for too long (after it was queued)."""

    END = "end", "End the conversation with a message"
    TRANSFER = "transfer", "Transfer to another queue"


class Queue(models.Model):
    """Where open work waits for an agent. Members are the agents who may get (push) or pick its work.

    Operating hours: the weekly schedule (QueueOperatingHours) and holidays (QueueHoliday) in the
    queue's time zone; without any schedule row the queue is open every day, all day (holidays still
    close it). Overflow before queueing: out of operating hours (`out_of_hours_action`), or full: the
    queue holds `open_items_limit` open items already, so a new one would make more than that
    (`open_items_action`). Out of hours is checked first. Overflow after queueing: an item waiting
    longer than `wait_limit_seconds` (`wait_action`, applied by distribution)."""

    name = models.CharField(max_length=100, unique=True)
    # Lower number wins; equal priority: the oldest item first.
    priority = models.PositiveIntegerField(default=10, help_text="Lower number wins.")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="QueueMembership", related_name="routing_queues", blank=True
    )
    timezone = models.CharField(
        max_length=64,
        default=timezone_default,
        validators=[timezone_validate],
        help_text="IANA name (e.g. Asia/Tokyo): operating hours and holidays are in this time zone.",
    )

    out_of_hours_action = models.CharField(
        max_length=15,
        choices=OverflowAction.choices,
        blank=True,
        help_text="Empty: the item waits in the queue until it opens.",
    )
    out_of_hours_message = models.TextField(
        blank=True, help_text="Sent when the action ends the conversation."
    )
    out_of_hours_transfer_queue = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    open_items_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Overflow when the queue already holds this many open items. Empty: no limit.",
    )
    open_items_action = models.CharField(max_length=15, choices=OverflowAction.choices, blank=True)
    open_items_message = models.TextField(blank=True, help_text="Sent when the action ends the conversation.")
    open_items_transfer_queue = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    wait_limit_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overflow after queueing: an item waits longer than this."
    )
    wait_action = models.CharField(max_length=15, choices=WaitAction.choices, blank=True)
    wait_message = models.TextField(blank=True)
    wait_transfer_queue = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(open_items_limit__isnull=True) | ~Q(open_items_action=""),
                name="queue_open_items_limit_has_action",
                violation_error_message="A limit of open items needs an action.",
            ),
            models.CheckConstraint(
                condition=Q(wait_limit_seconds__isnull=True) | Q(wait_limit_seconds__gt=0),
                name="queue_wait_limit_positive",
            ),
            models.CheckConstraint(
                condition=Q(wait_limit_seconds__isnull=True) | ~Q(wait_action=""),
                name="queue_wait_limit_has_action",
                violation_error_message="A waiting time limit needs an action.",
            ),
            models.CheckConstraint(
                condition=~Q(out_of_hours_action="transfer") | Q(out_of_hours_transfer_queue__isnull=False),
                name="queue_out_of_hours_transfer_has_queue",
            ),
            models.CheckConstraint(
                condition=~Q(open_items_action="transfer") | Q(open_items_transfer_queue__isnull=False),
                name="queue_open_items_transfer_has_queue",
            ),
            models.CheckConstraint(
                condition=~Q(wait_action="transfer") | Q(wait_transfer_queue__isnull=False),
                name="queue_wait_transfer_has_queue",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for prefix in ("out_of_hours", "open_items", "wait"):
            action = getattr(self, f"{prefix}_action")
            target_id = getattr(self, f"{prefix}_transfer_queue_id")
            if action == OverflowAction.TRANSFER and target_id is None:
                errors[f"{prefix}_transfer_queue"] = "Pick the queue to transfer to."
            elif target_id is not None and self.pk is not None and target_id == self.pk:
                errors[f"{prefix}_transfer_queue"] = "A queue cannot transfer to itself."
            if action == OverflowAction.END and not getattr(self, f"{prefix}_message").strip():
                errors[f"{prefix}_message"] = (
                    "Write the message the customer gets when the conversation ends."
                )
        if self.open_items_limit is not None and not self.open_items_action:
            errors["open_items_action"] = "A limit of open items needs an action."
        if self.wait_limit_seconds is not None and not self.wait_action:
            errors["wait_action"] = "A waiting time limit needs an action."
        if errors:
            raise ValidationError(errors)


class QueueMembership(models.Model):
    """An agent in a queue (a row of its own so that "member added" can rerun assignment)."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queue_memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The last time this member was given work of this queue (round robin, and ties of highest capacity).
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["queue", "user"]
        constraints = [models.UniqueConstraint(fields=["queue", "user"], name="queue_membership_once")]

    def __str__(self) -> str:
        return f"{self.user} in {self.queue}"


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


class QueueOperatingHours(models.Model):
    """One opening period of a weekday, in the queue's time zone: open from `start` (included) to `end`
    (excluded). Several rows per day are several periods; a night shift is two rows (22:00-24:00 is
    written 22:00-23:59:59)."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="operating_hours")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    start = models.TimeField()
    end = models.TimeField()

    class Meta:
        ordering = ["weekday", "start"]
        verbose_name_plural = "operating hours"
        constraints = [
            models.CheckConstraint(
                condition=Q(start__lt=models.F("end")), name="operating_hours_start_before_end"
            ),
            models.CheckConstraint(
                condition=Q(weekday__gte=0, weekday__lte=6), name="operating_hours_weekday"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.start:%H:%M}-{self.end:%H:%M}"

    def clean(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValidationError(
                {"end": "The end must come after the start (split a night shift in two rows)."}
            )


class QueueHoliday(models.Model):
    """A day the queue is closed all day (a date in the queue's time zone)."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="holidays")
    date = models.DateField()
    name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [models.UniqueConstraint(fields=["queue", "date"], name="queue_holiday_once_per_date")]

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} {self.name}".strip()


class Workstream(models.Model):
    """Routing and work-distribution settings shared by one or more channel instances."""

    name = models.CharField(max_length=100, unique=True)
    # Fixed at creation: routing.services.workstream_save and Workstream.clean refuse a change.
    distribution_mode = models.CharField(
        max_length=10, choices=DistributionMode.choices, default=DistributionMode.PUSH
    )
    fallback_queue = models.ForeignKey(
        Queue,
        on_delete=models.PROTECT,
        related_name="fallback_for",
        help_text="Where work goes when no route-to-queue rule matches, or classification fails.",
    )
    capacity_units = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Capacity a conversation holds of its agent."
    )
    wrap_up_capacity = models.CharField(
        max_length=10,
        choices=WrapUpCapacity.choices,
        default=WrapUpCapacity.NEVER,
        help_text="Block the capacity during wrap-up.",
    )
    wrap_up_capacity_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="With 'For N minutes': N."
    )
    allowed_presences = models.JSONField(
        default=presences_default, help_text="The presences in which agents receive pushed work."
    )
    assignment_method = models.CharField(
        max_length=20, choices=AssignmentMethod.choices, default=AssignmentMethod.HIGHEST_CAPACITY
    )
    offer_timeout_seconds = models.PositiveIntegerField(default=120)
    away_after_missed_offer = models.BooleanField(
        default=True,
        verbose_name="Set the agent Away when an offer expires",
        help_text="An agent who lets an offer run out is likely away from their desk: their presence "
        "becomes Away (no more pushed work) until they make themselves available again.",
    )
    auto_accept = models.BooleanField(default=False)
    keep_same_agent = models.BooleanField(
        default=False, verbose_name="Keep the same agent for the entire conversation"
    )
    skill_matching = models.CharField(
        max_length=10, choices=SkillMatching.choices, default=SkillMatching.NONE
    )
    auto_close_after_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Close a waiting conversation after this much inactivity. Empty: never.",
    )
    timezone = models.CharField(
        max_length=64,
        default=timezone_default,
        validators=[timezone_validate],
        help_text="IANA name: the time.weekday and time.hour of routing conditions are read in it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(capacity_units__gt=0), name="workstream_capacity_units_positive"
            ),
            models.CheckConstraint(
                condition=Q(offer_timeout_seconds__gt=0), name="workstream_offer_timeout_positive"
            ),
            models.CheckConstraint(
                condition=Q(auto_close_after_minutes__isnull=True) | Q(auto_close_after_minutes__gt=0),
                name="workstream_auto_close_positive",
            ),
            models.CheckConstraint(
                condition=(
                    Q(wrap_up_capacity="minutes", wrap_up_capacity_minutes__gt=0)
                    | (~Q(wrap_up_capacity="minutes") & Q(wrap_up_capacity_minutes__isnull=True))
                ),
                name="workstream_wrap_up_minutes_with_mode",
                violation_error_message="'For N minutes' needs N (and only that mode takes minutes).",
            ),
            models.CheckConstraint(
                condition=Q(distribution_mode__in=DistributionMode.values),
                name="workstream_distribution_mode",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.pk is not None:
            stored = Workstream.objects.filter(pk=self.pk).values_list("distribution_mode", flat=True).first()
            if stored is not None and stored != self.distribution_mode:
                errors["distribution_mode"] = (
                    "The distribution mode is fixed when the workstream is created: create another "
                    "workstream for the other mode."
                )
        presences = self.allowed_presences
        if not isinstance(presences, list) or not presences:
            errors["allowed_presences"] = "Pick at least one presence."
        elif unknown := [p for p in presences if p not in Presence.values]:
            errors["allowed_presences"] = f"Unknown presence(s): {', '.join(map(str, unknown))}."
        if self.wrap_up_capacity == WrapUpCapacity.MINUTES and not self.wrap_up_capacity_minutes:
            errors["wrap_up_capacity_minutes"] = "Give the number of minutes."
        if self.wrap_up_capacity != WrapUpCapacity.MINUTES and self.wrap_up_capacity_minutes is not None:
            errors["wrap_up_capacity_minutes"] = "Minutes apply only to 'For N minutes'."
        if errors:
            raise ValidationError(errors)


class ChannelLanguage(models.TextChoices):
    ENGLISH = "en", "English"
    JAPANESE = "ja", "Japanese"
    THAI = "th", "Thai"
    CHINESE_TRADITIONAL = "zh-hant", "Chinese (Traditional)"
    KOREAN = "ko", "Korean"
    INDONESIAN = "id", "Indonesian"


class ChannelInstance(models.Model):
    """A messaging account attached to a workstream: its conversations are routed by the workstream's
    rules. An account is in one channel instance at most (the one-to-one's unique constraint)."""

    messaging_account = models.OneToOneField(
        "omnichannel.MessagingAccount",
        on_delete=models.PROTECT,
        related_name="channel_instance",
        error_messages={
            "unique": "This messaging account is attached to a channel instance already: an account can "
            "be in one channel instance only."
        },
    )
    workstream = models.ForeignKey(Workstream, on_delete=models.PROTECT, related_name="channel_instances")
    language = models.CharField(
        max_length=10, choices=ChannelLanguage.choices, default=ChannelLanguage.ENGLISH
    )
    # Behaviors
    custom_automated_messages = models.BooleanField(default=False)
    post_conversation_survey = models.BooleanField(default=False)
    # User features
    file_attachments = models.BooleanField(default=True)
    customers_can_send_attachments = models.BooleanField(default=True)
    agents_can_send_attachments = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["messaging_account__name"]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """Its messaging account's name: what the `channel_instance` routing condition compares."""
        return self.messaging_account.name


class ClassificationRuleSet(models.Model):
    """An ordered set of work classification rules: the first rule of the set that matches writes."""

    workstream = models.ForeignKey(
        Workstream, on_delete=models.CASCADE, related_name="classification_rule_sets"
    )
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["workstream", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workstream", "name"], name="classification_rule_set_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class ClassificationRule(models.Model):
    """When every condition holds, write `set`: {"priority": int, "capacity": int, "skills": {name:
    level} or [names], "context": {name: value}}."""

    rule_set = models.ForeignKey(ClassificationRuleSet, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0)
    conditions = models.JSONField(default=list, blank=True, help_text='[{"field", "operator", "value"}, ...]')
    set = models.JSONField(
        default=dict,
        help_text='{"priority": 1, "capacity": 2, "skills": {"billing": 5}, "context": {"vip": true}}',
    )

    class Meta:
        ordering = ["rule_set", "order", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from .conditions import classification_output_validate, conditions_validate

        errors: dict[str, list[str]] = {}
        try:
            self.conditions = conditions_validate(self.conditions)
        except ValidationError as error:
            errors["conditions"] = error.messages
        try:
            self.set = classification_output_validate(self.set)
        except ValidationError as error:
            errors["set"] = error.messages
        if errors:
            raise ValidationError(errors)


class RouteToQueueRule(models.Model):
    """When every condition holds, route to `queue`; or, with `split`, to one of several queues by
    percentage ([{"queue": <id>, "percent": 70}, {"queue": <id>, "percent": 30}], summing to 100; the
    share is picked from a hash of the conversation's ID, so one conversation always lands alike)."""

    workstream = models.ForeignKey(Workstream, on_delete=models.CASCADE, related_name="route_to_queue_rules")
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0)
    conditions = models.JSONField(default=list, blank=True, help_text='[{"field", "operator", "value"}, ...]')
    queue = models.ForeignKey(
        Queue, null=True, blank=True, on_delete=models.PROTECT, related_name="route_to_queue_rules"
    )
    split = models.JSONField(
        default=list,
        blank=True,
        help_text='Instead of a queue: [{"queue": 1, "percent": 70}, {"queue": 2, "percent": 30}]',
    )

    class Meta:
        ordering = ["workstream", "order", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from .conditions import conditions_validate, split_validate

        errors: dict[str, list[str]] = {}
        try:
            self.conditions = conditions_validate(self.conditions)
        except ValidationError as error:
            errors["conditions"] = error.messages
        try:
            self.split = split_validate(self.split)
        except ValidationError as error:
            errors["split"] = error.messages
        else:
            # A split names its queues by ID inside JSON: no foreign key checks that they exist.
            named = [part["queue"] for part in self.split]
            known = set(Queue.objects.filter(pk__in=named).values_list("pk", flat=True))
            if missing := [queue_id for queue_id in named if queue_id not in known]:
                errors["split"] = [f"split: no queue has the ID {queue_id}." for queue_id in missing]
            if self.split and self.queue_id is not None:
                errors["queue"] = ["Give a queue or a split, not both."]
            elif not self.split and self.queue_id is None:
                errors["queue"] = ["Give the queue to route to (or a percentage split)."]
        if errors:
            raise ValidationError(errors)


class OfferState(models.TextChoices):
    PENDING = "pending", pgettext_lazy("offer state", "Pending")
    ACCEPTED = "accepted", pgettext_lazy("offer state", "Accepted")
    REJECTED = "rejected", pgettext_lazy("offer state", "Rejected")
    EXPIRED = "expired", pgettext_lazy("offer state", "Expired")
    # The conversation left the queue while offered (closed, transferred, picked by someone else).
    WITHDRAWN = "withdrawn", pgettext_lazy("offer state", "Withdrawn")


# Declined offers (rejected or expired) after which an agent is no longer offered that conversation.
OFFER_DECLINES_MAX = 3


class Offer(models.Model):
    """A conversation offered to one agent (push distribution) until `expires_at`. A pending offer
    holds `capacity_units` of the agent's capacity, so that two offers cannot promise the same room;
    accepting hands them over to the conversation, anything else releases them
    (omnichannel.lifecycle)."""

    conversation = models.ForeignKey(
        "omnichannel.Conversation", on_delete=models.CASCADE, related_name="offers"
    )
    agent = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="offers")
    queue = models.ForeignKey(Queue, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=10, choices=OfferState.choices, default=OfferState.PENDING)
    capacity_units = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # An item is offered to one agent at a time, however many workers distribute at once.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(state="pending"),
                name="offer_one_pending_per_conversation",
            ),
            models.CheckConstraint(condition=Q(state__in=OfferState.values), name="offer_state_known"),
            models.CheckConstraint(
                condition=Q(state="pending", answered_at__isnull=True)
                | (~Q(state="pending") & Q(answered_at__isnull=False)),
                name="offer_answered_unless_pending",
            ),
        ]
        indexes = [
            # An agent's pending offers (the inbox, the API), and the expiry sweep.
            models.Index(fields=["agent", "state"], name="offer_agent_state_idx"),
            models.Index(
                fields=["expires_at"], name="offer_pending_expiry_idx", condition=Q(state="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"Offer of conversation {self.conversation_id} to {self.agent} ({self.get_state_display()})"
