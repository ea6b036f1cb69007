"""The demo routing set-up that `make run` (manage.py demo_setup) creates beside the demo LINE account."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from agents.models import AgentProfile, Presence
from agents.roles import AGENT
from omnichannel.models import MessagingAccount

from .models import ChannelInstance, DistributionMode, Queue, QueueMembership, RouteToQueueRule, Workstream
from .services import channel_instance_save, routing_record_save, workstream_save

DEMO_WORKSTREAM_NAME = "Demo LINE workstream"
DEMO_QUEUES = ("General", "Billing")
DEMO_RULE_NAME = "Invoices go to Billing"


@dataclass
class RoutingDemo:
    workstream: Workstream
    queues: dict[str, Queue]
    instance: ChannelInstance
    created: bool


@transaction.atomic
def routing_demo_ensure(*, account: MessagingAccount) -> RoutingDemo:
    """A push workstream with two queues (General, the fallback; Billing) whose members are the demo
    agents (every user of the Agent group, Available), a route-to-queue rule (message.text contains
    "invoice" > Billing) and the account's channel instance. Creates what is missing, changes nothing
    that exists (an administrator's edits stay)."""
    queues = {}
    for name in DEMO_QUEUES:
        queue = Queue.objects.filter(name=name).first() or routing_record_save(record=Queue(name=name))
        queues[name] = queue
    agents = get_user_model().objects.filter(groups__name=AGENT).distinct()
    for user in agents:
        AgentProfile.objects.get_or_create(user=user, defaults={"presence": Presence.AVAILABLE})
        for queue in queues.values():
            QueueMembership.objects.get_or_create(queue=queue, user=user)
    workstream = Workstream.objects.filter(name=DEMO_WORKSTREAM_NAME).first()
    created = workstream is None
    if workstream is None:
        workstream = workstream_save(
            workstream=Workstream(
                name=DEMO_WORKSTREAM_NAME,
                distribution_mode=DistributionMode.PUSH,
                fallback_queue=queues["General"],
            )
        )
        routing_record_save(
            record=RouteToQueueRule(
                workstream=workstream,
                name=DEMO_RULE_NAME,
                order=1,
                conditions=[{"field": "message.text", "operator": "contains", "value": "invoice"}],
                queue=queues["Billing"],
            )
        )
    instance = ChannelInstance.objects.filter(messaging_account=account).first()
    if instance is None:
        instance = channel_instance_save(
            instance=ChannelInstance(messaging_account=account, workstream=workstream)
        )
    return RoutingDemo(workstream=workstream, queues=queues, instance=instance, created=created)
