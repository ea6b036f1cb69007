"""Helpers of the routing tests: queues, workstreams, rules and conversations made through the same
services as the admin (each record validated by its clean())."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from omnichannel.models import Conversation, Direction, Message, MessageKind
from omnichannel.services import conversation_ensure_open
from routing.models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    Queue,
    QueueHoliday,
    QueueOperatingHours,
    RouteToQueueRule,
    Workstream,
)
from routing.services import channel_instance_save, routing_record_save, workstream_save
from tests.factories import LineMessagingAccountFactory, SocialProfileFactory


def queue_make(name: str, **fields: Any) -> Queue:
    return routing_record_save(record=Queue(name=name, **fields))


def workstream_make(name: str = "Support", *, fallback: Queue | None = None, **fields: Any) -> Workstream:
    fallback = fallback or queue_make(f"{name} fallback")
    return workstream_save(workstream=Workstream(name=name, fallback_queue=fallback, **fields))


def route_make(
    workstream: Workstream, name: str, conditions: list, queue: Queue | None = None, **fields
) -> RouteToQueueRule:
    return routing_record_save(
        record=RouteToQueueRule(
            workstream=workstream, name=name, conditions=conditions, queue=queue, **fields
        )
    )


def rule_set_make(workstream: Workstream, name: str, order: int, rules: list[tuple[str, list, dict]]):
    rule_set = routing_record_save(
        record=ClassificationRuleSet(workstream=workstream, name=name, order=order)
    )
    for index, (rule_name, conditions, output) in enumerate(rules):
        routing_record_save(
            record=ClassificationRule(
                rule_set=rule_set, name=rule_name, order=index, conditions=conditions, set=output
            )
        )
    return rule_set


def hours_add(queue: Queue, weekday: int, start: str, end: str) -> None:
    routing_record_save(
        record=QueueOperatingHours(
            queue=queue,
            weekday=weekday,
            start=datetime.time.fromisoformat(start),
            end=datetime.time.fromisoformat(end),
        )
    )


def holiday_add(queue: Queue, date: str, name: str = "") -> None:
    routing_record_save(record=QueueHoliday(queue=queue, date=datetime.date.fromisoformat(date), name=name))


def instance_make(workstream: Workstream, account=None) -> ChannelInstance:
    account = account or LineMessagingAccountFactory()
    return channel_instance_save(instance=ChannelInstance(messaging_account=account, workstream=workstream))


def conversation_arrives(
    account, *, text: str = "Hello", display_name: str = "Aiko", language: str = "ja"
) -> Conversation:
    """A customer's first message, stored as processing stores it: the conversation is created
    (due for routing) and its first message written in one transaction; the new-conversation hook
    runs after the commit."""
    profile = SocialProfileFactory(messaging_account=account, display_name=display_name, language=language)
    with transaction.atomic():
        conversation, created = conversation_ensure_open(
            account=account, thread_type="user", thread_id=profile.external_id, social_profile=profile
        )
        assert created
        Message.objects.create(
            conversation=conversation,
            direction=Direction.INBOUND,
            kind=MessageKind.TEXT,
            text=text,
            external_id=str(timezone.now().timestamp()),
            sender_profile=profile,
            sent_at=timezone.now(),
        )
    conversation.refresh_from_db()
    return conversation


@pytest.fixture
def routing_enqueued(monkeypatch) -> list[int]:
    """The routing tasks queued, kept here instead of sent (the real worker runs in test_routing_task.py)."""
    from routing import tasks

    calls: list[int] = []
    monkeypatch.setattr(tasks.conversation_route, "delay", lambda pk: calls.append(pk))
    return calls
