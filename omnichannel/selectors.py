"""Reads that pages and the API share, each a fixed number of queries."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.db.models.functions import Coalesce

from .models import Attachment, AttachmentState, Conversation, Message, WorkerHeartbeat

# The access rule for conversations, their messages and their files: one place, used by the API, the
# attachment view and (later) the inbox pages. Today a user sees every conversation or none, by the
# role's permission; per-agent access (routing) narrows conversations_visible below.
CONVERSATION_VIEW_PERMISSION = "omnichannel.view_conversation"


def worker_heartbeat_latest() -> datetime.datetime | None:
    return WorkerHeartbeat.objects.order_by("-created_at").values_list("created_at", flat=True).first()


def user_roles(*, user: AbstractBaseUser | AnonymousUser) -> list[str]:
    if not user.is_authenticated:
        return []
    return sorted(user.groups.values_list("name", flat=True))


def conversations_visible(*, viewer: AbstractBaseUser | AnonymousUser) -> QuerySet[Conversation]:
    """The conversations `viewer` may see (with their messages and files): all of them for an
    active user whose role grants CONVERSATION_VIEW_PERMISSION (superusers included), none otherwise."""
    if not (viewer.is_authenticated and viewer.is_active and viewer.has_perm(CONVERSATION_VIEW_PERMISSION)):
        return Conversation.objects.none()
    return Conversation.objects.all()


def conversation_list(
    *,
    viewer: AbstractBaseUser | AnonymousUser,
    states: Collection[str] = (),
    messaging_account_id: uuid.UUID | None = None,
    thread_type: str | None = None,
    social_profile_external_id: str | None = None,
    active_since: datetime.datetime | None = None,
) -> QuerySet[Conversation]:
    """Conversations with their account, customer and contact in one query, latest activity first.

    The last activity is the last message, or the creation for a conversation without any yet; it is
    annotated as `last_activity_at`."""
    conversations = (
        conversations_visible(viewer=viewer)
        .select_related("messaging_account", "social_profile__contact")
        .annotate(last_activity_at=Coalesce("last_message_at", "created_at"))
    )
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


def attachment_stored_for_viewer(
    *, viewer: AbstractBaseUser | AnonymousUser, attachment_id: int
) -> Attachment | None:
    """A downloaded attachment (state ready, with its file) of a conversation `viewer` may see, with
    its message; None when there is no such attachment or the viewer may not see it (one answer for
    both, so that IDs cannot be probed). One query."""
    return (
        Attachment.objects.select_related("message")
        .filter(
            pk=attachment_id,
            state=AttachmentState.READY,
            message__conversation__in=conversations_visible(viewer=viewer),
        )
        .exclude(file="")
        .first()
    )
