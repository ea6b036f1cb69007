"""REST API of the routing set-up: /api/v1/queues/, /api/v1/workstreams/ (with their
route-to-queue-rules/ and classification-rulesets/, and test-routing/) and /api/v1/channel-instances/.

Administrators configure, supervisors read, agents get 403 (model permissions, reading included).
Every write goes through routing.services (workstream_save, channel_instance_save,
routing_record_save), which run each record's clean(): the API refuses what the admin refuses, with
the same messages, on the same fields. Deleting what something still uses answers 409 with the reason.

The three set-up services below the serializers (queue_save, classification_rule_set_save,
routing_record_delete) belong in routing/services.py; they are here until they move."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Model, Prefetch, ProtectedError, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from omnichannel.api import ModelPermissionsWithView, service_errors
from omnichannel.models import Conversation, ConversationState

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
from .serializers import (
    ChannelInstanceSerializer,
    ClassificationRuleSetSerializer,
    QueueSerializer,
    RouteToQueueRuleSerializer,
    RoutingTestResultSerializer,
    RoutingTestSerializer,
    WorkstreamSerializer,
)
from .services import (
    channel_instance_save,
    routing_decide,
    routing_facts_sample,
    routing_record_save,
    workstream_save,
)

logger = logging.getLogger(__name__)


# --- Set-up services (to move to routing/services.py) ----------------------------------------------


class RecordInUse(Exception):
    """A queue or workstream that something still uses: the message says what."""


def _nested_errors(error: DjangoValidationError, *, where: str) -> list[str]:
    """A nested record's errors as messages naming their place: "rules[1].conditions[0].field: ..."."""
    messages = []
    for field, field_messages in error.message_dict.items():
        for message in field_messages:
            if field == NON_FIELD_ERRORS:
                messages.append(f"{where}: {message}")
            elif message.startswith((f"{field}[", f"{field}.", f"{field}:")):
                messages.append(f"{where}.{message}")
            else:
                messages.append(f"{where}.{field}: {message}")
    return messages


def _nested_save(records: list[Model], *, name: str) -> None:
    """Save each record through routing_record_save; every record's errors, by place, in one
    ValidationError on `name` (nothing is kept: the caller's transaction rolls back)."""
    errors: list[str] = []
    for index, record in enumerate(records):
        try:
            routing_record_save(record=record)
        except DjangoValidationError as error:
            errors += _nested_errors(error, where=f"{name}[{index}]")
    if errors:
        raise DjangoValidationError({name: errors})


@transaction.atomic
def queue_save(
    *,
    queue: Queue,
    members: list[int] | None = None,
    operating_hours: list[dict[str, Any]] | None = None,
    holidays: list[dict[str, Any]] | None = None,
) -> Queue:
    """Create or change a queue and, for each of `members` (user IDs), `operating_hours` ({weekday,
    start, end}) and `holidays` ({date, name}) that is given, replace that part as a whole, in one
    transaction (None: unchanged). A member who stays keeps their row (and its round-robin place);
    each member added is announced (QUEUE_MEMBER_ADDED: assignment reruns) after the commit. Two
    writes of one queue take turns (its row is locked), so their replacements cannot interleave."""
    if queue.pk is not None:
        list(Queue.objects.select_for_update().filter(pk=queue.pk).values_list("pk", flat=True))
    routing_record_save(record=queue)
    if members is not None:
        current = set(QueueMembership.objects.filter(queue=queue).values_list("user_id", flat=True))
        QueueMembership.objects.filter(queue=queue, user_id__in=current - set(members)).delete()
        added = [user_id for user_id in members if user_id not in current]
        # routing_record_save announces each new member (QUEUE_MEMBER_ADDED).
        _nested_save([QueueMembership(queue=queue, user_id=user_id) for user_id in added], name="members")
    if operating_hours is not None:
        QueueOperatingHours.objects.filter(queue=queue).delete()
        _nested_save(
            [QueueOperatingHours(queue=queue, **period) for period in operating_hours], name="operating_hours"
        )
    if holidays is not None:
        QueueHoliday.objects.filter(queue=queue).delete()
        _nested_save([QueueHoliday(queue=queue, **holiday) for holiday in holidays], name="holidays")
    return queue


@transaction.atomic
def classification_rule_set_save(
    *, rule_set: ClassificationRuleSet, rules: list[dict[str, Any]] | None = None
) -> ClassificationRuleSet:
    """Create or change a work classification rule set and, when `rules` is given, make its rules
    exactly these ({id?, name, order?, conditions, set}), in one transaction. A rule given with its
    `id` is changed in place (its ID stays in recorded routing decisions), one without is created,
    the set's other rules are deleted. A rule without `order` takes its place in the list. Two
    writes of one rule set take turns (its row is locked)."""
    if rule_set.pk is not None:
        list(
            ClassificationRuleSet.objects.select_for_update()
            .filter(pk=rule_set.pk)
            .values_list("pk", flat=True)
        )
    routing_record_save(record=rule_set)
    if rules is None:
        return rule_set
    existing = {rule.pk: rule for rule in ClassificationRule.objects.filter(rule_set=rule_set)}
    unknown = [
        f"rules[{index}].id: no rule {item['id']} in this rule set."
        for index, item in enumerate(rules)
        if "id" in item and item["id"] not in existing
    ]
    if unknown:
        raise DjangoValidationError({"rules": unknown})
    kept = {item["id"] for item in rules if "id" in item}
    ClassificationRule.objects.filter(rule_set=rule_set).exclude(pk__in=kept).delete()
    records = []
    for index, item in enumerate(rules):
        rule = existing[item["id"]] if "id" in item else ClassificationRule(rule_set=rule_set)
        rule.name = item["name"]
        rule.order = item.get("order", index)
        rule.conditions = item.get("conditions", [])
        rule.set = item["set"]
        records.append(rule)
    _nested_save(records, name="rules")
    return rule_set


def _use_described(record: Model) -> str:
    if isinstance(record, Workstream):
        return f"workstream '{record}' (its fallback queue)"
    if isinstance(record, RouteToQueueRule):
        return f"route-to-queue rule '{record}' of workstream '{record.workstream}'"
    if isinstance(record, Queue):
        return f"queue '{record}' (its overflow transfers there)"
    if isinstance(record, ChannelInstance):
        return f"channel instance '{record}'"
    return f"{record._meta.verbose_name} '{record}'"


@transaction.atomic
def routing_record_delete(*, record: Model) -> None:
    """Delete a queue, workstream, rule set, rule or channel instance. Refused (RecordInUse, saying
    what uses it) for a queue that a workstream, a route-to-queue rule (its queue or a percentage
    split) or another queue's overflow points at, or that holds open conversations (they would be
    left in no queue), and for a workstream that channel instances use."""
    uses: list[str] = []
    if isinstance(record, Queue):
        # A split names its queues by ID inside JSON: no foreign key protects them.
        for rule in RouteToQueueRule.objects.exclude(split=[]).select_related("workstream"):
            if any(part.get("queue") == record.pk for part in rule.split):
                uses.append(f"route-to-queue rule '{rule}' of workstream '{rule.workstream}' (its split)")
        open_items = Conversation.objects.filter(queue=record, state=ConversationState.OPEN).count()
        if open_items:
            uses.append(f"{open_items} open conversation(s) waiting in it (transfer them first)")
    if not uses:
        try:
            with transaction.atomic():
                record.delete()
        except ProtectedError as error:
            uses = [_use_described(used_by) for used_by in error.protected_objects]
    if uses:
        shown = sorted(uses)[:10]
        more = f" and {len(uses) - len(shown)} more" if len(uses) > len(shown) else ""
        kind = record._meta.verbose_name
        raise RecordInUse(
            f"The {kind} '{record}' is in use: {'; '.join(shown)}{more}. Change or delete those first."
        )
    logger.info("Routing set-up deleted %s=%s", record._meta.model_name, record.pk)


# --- Shared ---------------------------------------------------------------------------------------


class RecordInUseConflict(exceptions.APIException):
    status_code = 409
    default_code = "in_use"


def _changed(record: Model, data: dict[str, Any]) -> Model:
    for name, value in data.items():
        setattr(record, name, value)
    return record


class RoutingSetUpViewSet(viewsets.ModelViewSet):
    """Model permissions (reading included). The serializers parse; `record_save` (a service call)
    writes, its ValidationError answered 400 field by field; deleting something in use is a 409 with
    the reason."""

    permission_classes = [ModelPermissionsWithView]

    def record_new(self) -> Model:
        return self.get_queryset().model()

    def record_save(self, *, record: Model, data: dict[str, Any]) -> Model:
        return routing_record_save(record=_changed(record, data))

    def _save(self, serializer: serializers.BaseSerializer, record: Model) -> None:
        try:
            serializer.instance = self.record_save(record=record, data=dict(serializer.validated_data))
        except DjangoValidationError as error:
            raise service_errors(error) from error

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        self._save(serializer, self.record_new())

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        self._save(serializer, serializer.instance)

    def perform_destroy(self, instance: Model) -> None:
        try:
            routing_record_delete(record=instance)
        except RecordInUse as in_use:
            raise RecordInUseConflict(str(in_use)) from None


IN_USE_409 = {409: OpenApiTypes.OBJECT}


# --- Queues ---------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List queues, by priority then name"),
    create=extend_schema(summary="Create a queue (Administrators)"),
    retrieve=extend_schema(summary="Get a queue with its members, operating hours and holidays"),
    update=extend_schema(summary="Replace a queue's settings (Administrators)"),
    partial_update=extend_schema(summary="Change some of a queue's settings (Administrators)"),
    destroy=extend_schema(
        summary="Delete a queue (Administrators)",
        description="409 while a workstream, a rule or another queue's overflow uses it, or open "
        "conversations wait in it.",
        responses={204: None, **IN_USE_409},
    ),
)
class QueueViewSet(RoutingSetUpViewSet):
    serializer_class = QueueSerializer
    queryset = Queue.objects.none()

    def get_queryset(self) -> QuerySet[Queue]:
        return Queue.objects.prefetch_related(
            Prefetch("members", queryset=get_user_model().objects.only("pk")),
            "operating_hours",
            "holidays",
        ).order_by("priority", "name", "id")

    def record_save(self, *, record: Model, data: dict[str, Any]) -> Queue:
        parts = {name: data.pop(name, None) for name in ("members", "operating_hours", "holidays")}
        return queue_save(queue=_changed(record, data), **parts)


# --- Workstreams ----------------------------------------------------------------------------------


class RoutingTestPermissions(ModelPermissionsWithView):
    """Test routing writes nothing: reading the workstream is enough (as on the admin page)."""

    perms_map = {**ModelPermissionsWithView.perms_map, "POST": ModelPermissionsWithView.perms_map["GET"]}


@extend_schema_view(
    list=extend_schema(summary="List workstreams, by name"),
    create=extend_schema(summary="Create a workstream (Administrators)"),
    retrieve=extend_schema(summary="Get a workstream"),
    update=extend_schema(
        summary="Replace a workstream's settings (Administrators)",
        description="The distribution mode is fixed at creation: a change is refused with 400.",
    ),
    partial_update=extend_schema(
        summary="Change some of a workstream's settings (Administrators)",
        description="The distribution mode is fixed at creation: a change is refused with 400.",
    ),
    destroy=extend_schema(
        summary="Delete a workstream with its rules (Administrators)",
        description="409 while channel instances use it.",
        responses={204: None, **IN_USE_409},
    ),
)
class WorkstreamViewSet(RoutingSetUpViewSet):
    serializer_class = WorkstreamSerializer
    queryset = Workstream.objects.none()

    def get_queryset(self) -> QuerySet[Workstream]:
        return Workstream.objects.order_by("name", "id")

    def record_save(self, *, record: Model, data: dict[str, Any]) -> Workstream:
        return workstream_save(workstream=_changed(record, data))

    @extend_schema(
        summary="Test routing: where would a new conversation go?",
        description="Sample values in; out the rules that matched, the attributes written, the queue "
        "and the reason, from the function that routes real conversations. Nothing is written.",
        request=RoutingTestSerializer,
        responses=RoutingTestResultSerializer,
    )
    @action(
        detail=True, methods=["post"], url_path="test-routing", permission_classes=[RoutingTestPermissions]
    )
    def test_routing(self, request: Request, pk: str | None = None) -> Response:
        workstream = self.get_object()
        sample = RoutingTestSerializer(data=request.data)
        sample.is_valid(raise_exception=True)
        data = sample.validated_data
        customer, message = data.get("customer", {}), data.get("message", {})
        facts = routing_facts_sample(
            display_name=customer.get("display_name", ""),
            language=customer.get("language", ""),
            text=message.get("text", ""),
            channel_instance=data["channel_instance"],
            contact=data["contact"],
            context=data["context"],
        )
        at = data.get("at") or timezone.now()
        decision = routing_decide(
            workstream=workstream, facts=facts, at=at, split_key=data["conversation_id"]
        )
        record = decision.as_record(at=at)
        fields = ("queue", "outcome", "reason", "matched", "attributes", "overflow", "error")
        return Response({name: record[name] for name in fields})


# --- Rules of a workstream ------------------------------------------------------------------------

WORKSTREAM_PATH_PARAMETER = OpenApiParameter(
    "workstream_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The workstream's ID."
)


class WorkstreamRecordViewSet(RoutingSetUpViewSet):
    """Records of one workstream (/workstreams/{workstream_pk}/...): an unknown workstream is a 404."""

    def workstream(self) -> Workstream:
        if not hasattr(self, "_workstream"):
            self._workstream = get_object_or_404(Workstream, pk=self.kwargs["workstream_pk"])
        return self._workstream

    def workstream_records(self, queryset: QuerySet) -> QuerySet:
        # No lookup of the workstream here: the permission check calls get_queryset first, and a user
        # without the role must get 403, not 404.
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        return queryset.filter(workstream_id=int(self.kwargs["workstream_pk"]))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.workstream()
        return super().list(request, *args, **kwargs)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.workstream()  # 404 before the body is read
        return super().create(request, *args, **kwargs)

    def record_new(self) -> Model:
        return self.get_queryset().model(workstream=self.workstream())


@extend_schema(parameters=[WORKSTREAM_PATH_PARAMETER])
@extend_schema_view(
    list=extend_schema(summary="List a workstream's route-to-queue rules, in order"),
    create=extend_schema(summary="Add a route-to-queue rule (Administrators)"),
    retrieve=extend_schema(summary="Get a route-to-queue rule"),
    update=extend_schema(summary="Replace a route-to-queue rule (Administrators)"),
    partial_update=extend_schema(summary="Change a route-to-queue rule (Administrators)"),
    destroy=extend_schema(summary="Delete a route-to-queue rule (Administrators)"),
)
class RouteToQueueRuleViewSet(WorkstreamRecordViewSet):
    serializer_class = RouteToQueueRuleSerializer
    queryset = RouteToQueueRule.objects.none()

    def get_queryset(self) -> QuerySet[RouteToQueueRule]:
        return self.workstream_records(RouteToQueueRule.objects.order_by("order", "id"))


@extend_schema(parameters=[WORKSTREAM_PATH_PARAMETER])
@extend_schema_view(
    list=extend_schema(
        summary="List a workstream's work classification rule sets, in order, with their rules"
    ),
    create=extend_schema(summary="Add a classification rule set with its rules (Administrators)"),
    retrieve=extend_schema(summary="Get a classification rule set with its rules"),
    update=extend_schema(summary="Replace a classification rule set and its rules (Administrators)"),
    partial_update=extend_schema(
        summary="Change a classification rule set; `rules`, if given, replace its rules (Administrators)"
    ),
    destroy=extend_schema(summary="Delete a classification rule set with its rules (Administrators)"),
)
class ClassificationRuleSetViewSet(WorkstreamRecordViewSet):
    serializer_class = ClassificationRuleSetSerializer
    queryset = ClassificationRuleSet.objects.none()

    def get_queryset(self) -> QuerySet[ClassificationRuleSet]:
        rules = Prefetch("rules", queryset=ClassificationRule.objects.order_by("order", "id"))
        return self.workstream_records(
            ClassificationRuleSet.objects.prefetch_related(rules).order_by("order", "id")
        )

    def record_save(self, *, record: Model, data: dict[str, Any]) -> ClassificationRuleSet:
        rules = data.pop("rules", None)
        return classification_rule_set_save(rule_set=_changed(record, data), rules=rules)


# --- Channel instances ----------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List channel instances, by their account's name"),
    create=extend_schema(
        summary="Attach a messaging account to a workstream (Administrators)",
        description="An account is in one channel instance at most: 400 on `messaging_account` otherwise.",
    ),
    retrieve=extend_schema(summary="Get a channel instance"),
    update=extend_schema(summary="Replace a channel instance's settings (Administrators)"),
    partial_update=extend_schema(summary="Change some of a channel instance's settings (Administrators)"),
    destroy=extend_schema(summary="Detach the account from its workstream (Administrators)"),
)
class ChannelInstanceViewSet(RoutingSetUpViewSet):
    serializer_class = ChannelInstanceSerializer
    queryset = ChannelInstance.objects.none()

    def get_queryset(self) -> QuerySet[ChannelInstance]:
        return ChannelInstance.objects.select_related("messaging_account").order_by(
            "messaging_account__name", "id"
        )

    def record_save(self, *, record: Model, data: dict[str, Any]) -> ChannelInstance:
        return channel_instance_save(instance=_changed(record, data))
