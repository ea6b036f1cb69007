"""Reads of routing shared by the admin, the services and (next) the API."""

from __future__ import annotations

from django.db.models import Count, Min, Prefetch, Q, QuerySet

from omnichannel.models import Conversation, ConversationState

from .models import ClassificationRule, ClassificationRuleSet, Queue, RouteToQueueRule, Workstream


def open_items_filter(prefix: str = "") -> Q:
    """A queue's open items: conversations routed to it (queue set) that nobody works yet (state
    Open: not assigned, not closed). `prefix` is the path from the queried model to the conversation."""
    return Q(**{f"{prefix}queue__isnull": False, f"{prefix}state": ConversationState.OPEN})


def queues_with_load() -> QuerySet[Queue]:
    """Queues with `open_items` (how many) and `oldest_queued_at` (since when the oldest waits)."""
    waiting = Q(conversations__state=ConversationState.OPEN)
    return Queue.objects.annotate(
        open_items=Count("conversations", filter=waiting),
        oldest_queued_at=Min("conversations__queued_at", filter=waiting),
    )


def queue_open_items_count(*, queue_id: int) -> int:
    return Conversation.objects.filter(open_items_filter(), queue_id=queue_id).count()


def workstream_with_rules(*, workstream_id: int) -> Workstream:
    """A workstream with its fallback queue, classification rule sets (ordered, with their ordered
    rules) and route-to-queue rules (ordered): a fixed number of queries."""
    return (
        Workstream.objects.select_related("fallback_queue")
        .prefetch_related(
            Prefetch(
                "classification_rule_sets",
                queryset=ClassificationRuleSet.objects.order_by("order", "id").prefetch_related(
                    Prefetch("rules", queryset=ClassificationRule.objects.order_by("order", "id"))
                ),
            ),
            Prefetch("route_to_queue_rules", queryset=RouteToQueueRule.objects.order_by("order", "id")),
        )
        .get(pk=workstream_id)
    )


def queue_with_hours(*, queue_id: int) -> Queue:
    return Queue.objects.prefetch_related("operating_hours", "holidays").get(pk=queue_id)
