"""Shapes of the routing set-up API (routing/api.py): queues, workstreams, route-to-queue rules,
classification rule sets, channel instances and "Test routing". The field names are fixed (issue 12:
integrators depend on them).

Serializers parse and present; they validate types only. Every rule about what may be saved is the
records' own clean() (run by routing.services), so the API refuses exactly what the admin refuses,
with the same messages ("conditions[0].field: unknown field 'customer.nme'.")."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Presence

from .conditions import OPERATORS, OUTPUT_KEYS
from .models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    Queue,
    QueueHoliday,
    QueueOperatingHours,
    RouteToQueueRule,
    Workstream,
)

# --- Schema-only shapes of the JSON fields (the records' clean() validates them) --------------------


class RoutingConditionSerializer(serializers.Serializer):
    field = serializers.CharField(
        help_text="customer.display_name, customer.language, message.text, channel_instance, "
        "contact.<field>, context.<name>, work.priority, work.capacity, work.skills, time.weekday, "
        "time.hour."
    )
    operator = serializers.ChoiceField(choices=OPERATORS)
    value = serializers.JSONField(
        required=False,
        help_text="A text, a number or true/false; `in`: a list of them; `exists`: true (default) or false.",
    )


class QueueShareSerializer(serializers.Serializer):
    queue = serializers.IntegerField(help_text="A queue's ID.")
    percent = serializers.IntegerField(min_value=1, max_value=100)


class ClassificationOutputSerializer(serializers.Serializer):
    priority = serializers.IntegerField(required=False, min_value=0, help_text="Lower goes first.")
    capacity = serializers.IntegerField(required=False, min_value=1)
    skills = serializers.JSONField(
        required=False, help_text='{"billing": 5} (name: level 1-10) or ["billing"] (level 1).'
    )
    context = serializers.DictField(required=False, help_text="Context variables: name: value.")


@extend_schema_field(RoutingConditionSerializer(many=True))
class ConditionsField(serializers.JSONField):
    """`[{"field", "operator", "value"}, ...]`: all must hold (an empty list always holds)."""


@extend_schema_field(QueueShareSerializer(many=True))
class SplitField(serializers.JSONField):
    """`[{"queue": <id>, "percent": 70}, ...]` summing to 100."""


@extend_schema_field(ClassificationOutputSerializer)
class ClassificationOutputField(serializers.JSONField):
    """What a classification rule writes when it matches."""


class UserIdsField(serializers.ListField):
    """Users by ID: written as a list, read from the related manager (prefetched by the view)."""

    child = serializers.IntegerField(min_value=1)

    def to_representation(self, data: Any) -> list[int]:
        return sorted(user.pk for user in data.all())


def _duplicates(values: list[Any]) -> list[Any]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


# --- Queues ---------------------------------------------------------------------------------------


class OperatingHoursSerializer(serializers.ModelSerializer):
    class Meta:
        model = QueueOperatingHours
        fields = ["weekday", "start", "end"]
        extra_kwargs = {
            "weekday": {"help_text": "0 = Monday ... 6 = Sunday."},
            "end": {"help_text": "Excluded; after the start (a night shift is two periods)."},
        }


class HolidaySerializer(serializers.ModelSerializer):
    class Meta:
        model = QueueHoliday
        fields = ["date", "name"]


class QueueSerializer(serializers.ModelSerializer):
    members = UserIdsField(
        required=False,
        help_text="The agents' user IDs. Replaces the members as a whole; omitted: unchanged.",
    )
    operating_hours = OperatingHoursSerializer(
        many=True,
        required=False,
        help_text="Weekly opening periods in the queue's time zone (none: open all day, every day). "
        "Replaced as a whole; omitted: unchanged.",
    )
    holidays = HolidaySerializer(
        many=True,
        required=False,
        help_text="Days closed all day (in the queue's time zone). Replaced as a whole; omitted: unchanged.",
    )

    class Meta:
        model = Queue
        fields = [
            "id",
            "name",
            "priority",
            "members",
            "timezone",
            "operating_hours",
            "holidays",
            "out_of_hours_action",
            "out_of_hours_message",
            "out_of_hours_transfer_queue",
            "open_items_limit",
            "open_items_action",
            "open_items_message",
            "open_items_transfer_queue",
            "wait_limit_seconds",
            "wait_action",
            "wait_message",
            "wait_transfer_queue",
        ]

    def validate_members(self, value: list[int]) -> list[int]:
        if twice := _duplicates(value):
            raise serializers.ValidationError(f"User ID(s) given twice: {', '.join(map(str, twice))}.")
        found = set(get_user_model().objects.filter(pk__in=value).values_list("pk", flat=True))
        if unknown := sorted(set(value) - found):
            raise serializers.ValidationError(f"Unknown user ID(s): {', '.join(map(str, unknown))}.")
        return value

    def validate_holidays(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if twice := _duplicates([holiday["date"] for holiday in value]):
            raise serializers.ValidationError(
                f"Date(s) given twice: {', '.join(date.isoformat() for date in twice)}."
            )
        return value


# --- Workstreams ----------------------------------------------------------------------------------


class WorkstreamSerializer(serializers.ModelSerializer):
    allowed_presences = serializers.ListField(
        child=serializers.ChoiceField(choices=Presence.choices),
        required=False,
        help_text="The presences in which agents receive pushed work (at least one).",
    )

    class Meta:
        model = Workstream
        fields = [
            "id",
            "name",
            "distribution_mode",
            "fallback_queue",
            "capacity_units",
            "wrap_up_capacity",
            "wrap_up_capacity_minutes",
            "assignment_method",
            "offer_timeout_seconds",
            "away_after_missed_offer",
            "auto_accept",
            "keep_same_agent",
            "skill_matching",
            "allowed_presences",
            "auto_close_after_minutes",
            "timezone",
        ]
        extra_kwargs = {
            "distribution_mode": {
                "help_text": "push (the system assigns) or pick (agents pick): fixed at creation, a "
                "change is refused with 400."
            }
        }


# --- Rules ----------------------------------------------------------------------------------------


class RouteToQueueRuleSerializer(serializers.ModelSerializer):
    conditions = ConditionsField(required=False, help_text="All must hold; empty: always.")
    split = SplitField(
        required=False, help_text="Instead of `queue`: route by percentage over several queues."
    )

    class Meta:
        model = RouteToQueueRule
        fields = ["id", "name", "order", "conditions", "queue", "split"]
        extra_kwargs = {
            "order": {"help_text": "Rules are tried in this order (then by ID)."},
            "queue": {"help_text": "The queue to route to (or null with a `split`)."},
        }


class ClassificationRuleSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(
        required=False,
        help_text="Give a rule's ID to keep it (routing records name it); leave it out for a new rule.",
    )
    conditions = ConditionsField(required=False, help_text="All must hold; empty: always.")
    set = ClassificationOutputField(help_text=f"One or more of {', '.join(OUTPUT_KEYS)}.")
    order = serializers.IntegerField(
        required=False, min_value=0, help_text="Omitted: the rule's place in the list."
    )

    class Meta:
        model = ClassificationRule
        fields = ["id", "name", "order", "conditions", "set"]


class ClassificationRuleSetSerializer(serializers.ModelSerializer):
    rules = ClassificationRuleSerializer(
        many=True,
        required=False,
        help_text="In order: the first that matches writes. Replaced as a whole (rules left out are "
        "deleted); omitted: unchanged.",
    )

    class Meta:
        model = ClassificationRuleSet
        fields = ["id", "name", "order", "rules"]
        extra_kwargs = {
            "order": {"help_text": "Rule sets run in this order; later sets read earlier outputs."}
        }

    def validate_rules(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [rule["id"] for rule in value if "id" in rule]
        if twice := _duplicates(ids):
            raise serializers.ValidationError(f"Rule ID(s) given twice: {', '.join(map(str, twice))}.")
        return value


# --- Channel instances ----------------------------------------------------------------------------


class ChannelInstanceSerializer(serializers.ModelSerializer):
    name = serializers.CharField(
        source="messaging_account.name",
        read_only=True,
        help_text="Its messaging account's name (what the `channel_instance` condition compares).",
    )

    class Meta:
        model = ChannelInstance
        fields = [
            "id",
            "name",
            "workstream",
            "messaging_account",
            "language",
            "custom_automated_messages",
            "post_conversation_survey",
            "file_attachments",
            "customers_can_send_attachments",
            "agents_can_send_attachments",
        ]
        extra_kwargs = {
            # One channel instance per account: routing.services.channel_instance_save decides (also
            # when two requests race), with the model's message.
            "messaging_account": {"validators": []},
        }


# --- Test routing ---------------------------------------------------------------------------------


class RoutingTestCustomerSerializer(serializers.Serializer):
    display_name = serializers.CharField(required=False, allow_blank=True, default="")
    language = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="e.g. ja, th, en."
    )


class RoutingTestMessageSerializer(serializers.Serializer):
    text = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False, help_text="The first message."
    )


class RoutingTestSerializer(serializers.Serializer):
    """Sample values of a new conversation (every one optional)."""

    customer = RoutingTestCustomerSerializer(required=False)
    message = RoutingTestMessageSerializer(required=False)
    channel_instance = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="A channel instance's (account's) name."
    )
    contact = serializers.DictField(required=False, default=dict, help_text="contact.<field> values.")
    context = serializers.DictField(required=False, default=dict, help_text="context.<name> values.")
    at = serializers.DateTimeField(
        required=False,
        help_text="When the conversation arrives (time.weekday, time.hour, hours). Default: now.",
    )
    conversation_id = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="Picks the share of a percentage split."
    )


class QueueReferenceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class MatchedRuleSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["classification", "route"])
    id = serializers.IntegerField()
    name = serializers.CharField()
    rule_set = serializers.CharField(required=False, help_text="Classification: the rule set's name.")
    queue = serializers.CharField(required=False, help_text="Route: the queue's name.")
    overflowing = serializers.BooleanField(required=False, help_text="Route: the queue overflowed.")


class RoutingTestResultSerializer(serializers.Serializer):
    queue = QueueReferenceSerializer(allow_null=True)
    outcome = serializers.ChoiceField(choices=["queued", "ended", "unrouted"])
    reason = serializers.CharField()
    matched = MatchedRuleSerializer(many=True)
    attributes = ClassificationOutputSerializer(help_text="What classification wrote.")
    overflow = serializers.DictField(allow_null=True, help_text="The overflow applied, if any.")
    error = serializers.CharField(allow_blank=True, help_text="A rule that could not be evaluated.")
