"""Reads that pages and the API share, each a fixed number of queries."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.db.models.functions import Coalesce

from .models import Conversation, Message, WorkerHeartbeat


def worker_heartbeat_latest() -> datetime.datetime | None:
    return WorkerHeartbeat.objects.order_by("-created_at").values_list("created_at", flat=True).first()


def user_roles(*, user: AbstractBaseUser | AnonymousUser) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(user.groups.values_list("name", flat=True))


def conversation_list(
    *,
    states: Collection[str] = (),
    messaging_account_id: uuid.UUID | None = None,
    thread_type: str | None = None,
    social_profile_external_id: str | None = None,
    active_since: datetime.datetime | None = None,
) -> QuerySet[Conversation]:
    """Conversations with their account, customer and contact in one query, latest activity first.

    The last activity is the last message, or the creation for a conversation without any yet; it is
    annotated as `last_activity_at`."""
    conversations = Conversation.objects.select_related(
        "messaging_account", "social_profile__contact"
    ).annotate(last_activity_at=Coalesce("last_message_at", "created_at"))
    if states:
        conversations = conversations.filter(state__in=states)
    if messaging_account_id:
        conversations = conversations.filter(messaging_account_id=messaging_account_id)
    if thread_type:
        conversations = conversations.filter(thread_type=thread_type)
    if social_profile_external_id:
        conversations = conversations.filter(social_profile__external_id=social_profile_external_id)
    if active_since:
        conversations = conversations.filter(last_activity_at__gte=active_since)
    return conversations.order_by("-last_activity_at", "-id")


def conversation_messages(*, conversation: Conversation | int) -> QuerySet[Message]:
    """Every message of a conversation in the order it happened, with author and attachments."""
    conversation_id = conversation.pk if isinstance(conversation, Conversation) else conversation
    return (
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("author")
        .prefetch_related("attachments")
        .order_by("sent_at", "id")
    )
