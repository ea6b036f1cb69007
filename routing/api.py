"""REST API of the routing set-up: /api/v1/queues/, /api/v1/workstreams/ (with their
route-to-queue-rules/ and classification-rulesets/, and test-routing/) and /api/v1/channel-instances/.

Administrators configure, supervisors read, agents get 403 (model permissions, reading included).
Every write goes through routing.services (workstream_save, channel_instance_save,
routing_record_save), which run each record's clean(): the API refuses what the admin refuses, with
the same messages, on the same fields. Deleting what something still uses answers 409 with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from omnichannel.api import ModelPermissionsWithView, service_errors

from .models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    Queue,
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
    RecordInUse,
    channel_instance_save,
    classification_rule_set_save,
    queue_save,
    routing_decide,
    routing_facts_sample,
    routing_record_delete,
    routing_record_save,
    workstream_save,
)

logger = logging.getLogger(__name__)


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
