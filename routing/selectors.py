"""Reads of routing shared by the admin, the services and (next) the API."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Min, Model, Prefetch, Q, QuerySet
from django.utils.translation import gettext

from omnichannel.models import Conversation, ConversationState, MessagingAccount

from .models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    Queue,
    RouteToQueueRule,
    Workstream,
)


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


def routing_record_uses(*, record: Model) -> list[str]:
    """What uses a routing record that no foreign key protects: for a queue, the percentage splits of
    route-to-queue rules (they name queues by ID inside JSON) and its open conversations (deleting it
    would leave them in no queue). Foreign keys (PROTECT) speak for themselves when it is deleted."""
    uses: list[str] = []
    if isinstance(record, Queue):
        for rule in RouteToQueueRule.objects.exclude(split=[]).select_related("workstream"):
            if any(part.get("queue") == record.pk for part in rule.split):
                uses.append(f"route-to-queue rule '{rule}' of workstream '{rule.workstream}' (its split)")
        open_items = Conversation.objects.filter(queue=record, state=ConversationState.OPEN).count()
        if open_items:
            uses.append(f"{open_items} open conversation(s) waiting in it (transfer them first)")
    return uses


def messaging_accounts_available(*, channel_type: str) -> QuerySet[MessagingAccount]:
    """Accounts of this channel type in no channel instance (an account is in one at most), by name."""
    return MessagingAccount.objects.filter(channel_type=channel_type, channel_instance__isnull=True).order_by(
        "name"
    )


@dataclass(frozen=True)
class AttachmentPolicy:
    """Who may send files through a messaging account's channel instance (its user features).
    `instance_name` is empty for an account in no channel instance: everyone may send files."""

    instance_name: str
    customers_can_send: bool
    agents_can_send: bool

    @property
    def customers_refusal(self) -> str:
        """Why a customer's file is refused (kept on the attachment, so in English whatever the page's
        language; the pages say it in the agent's); empty when it is accepted."""
        if self.customers_can_send:
            return ""
        return (
            "This channel does not accept customers' files (channel instance "
            f"'{self.instance_name}': user features): not downloaded."
        )

    @property
    def agents_refusal(self) -> str:
        """Why an agent's file is refused; empty when agents may send files."""
        if self.agents_can_send:
            return ""
        return gettext(
            "This channel does not let agents send files (channel instance '%(name)s': user features)."
        ) % {"name": self.instance_name}


def channel_instance_attachment_policy(*, messaging_account_id: object) -> AttachmentPolicy:
    """The attachment rule, in one place (inbound processing and message_send both ask here): a
    customer may send files iff the channel instance has file attachments on and customers can send;
    an agent iff file attachments are on and agents can send. An account in no channel instance
    accepts files both ways. One query."""
    row = (
        ChannelInstance.objects.filter(messaging_account_id=messaging_account_id)
        .values(
            "messaging_account__name",
            "file_attachments",
            "customers_can_send_attachments",
            "agents_can_send_attachments",
        )
        .first()
    )
    if row is None:
        return AttachmentPolicy(instance_name="", customers_can_send=True, agents_can_send=True)
    return AttachmentPolicy(
        instance_name=row["messaging_account__name"],
        customers_can_send=row["file_attachments"] and row["customers_can_send_attachments"],
        agents_can_send=row["file_attachments"] and row["agents_can_send_attachments"],
    )


def member_queue_ids(*, user: object) -> list[int]:
    """The queues `user` is a member of (their pages hear about those queues' open items)."""
    from .models import QueueMembership

    return list(
        QueueMembership.objects.filter(user_id=getattr(user, "pk", None)).values_list("queue_id", flat=True)
    )
