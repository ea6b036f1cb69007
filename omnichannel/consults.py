"""Consults: the agent who works a conversation asks another agent to look at it.

The consulted agent (the consultant) sees the conversation read-only while the consult runs: the
access policy (`omnichannel.selectors.conversations_visible`) shows it to them, and
`conversation_worked_by` stays false, so they cannot write to the customer nor change its state.
The requester, the consultant, or a supervisor ends it; once nobody works the conversation any
more (closed, transferred, back in a queue: however it happens, pages, API, admin or sweeps) the
lifecycle ends its consults too (`consults_end_all`), and a Closed conversation is never visible
through a consult.

Every change writes a live notice (omnichannel.live) in its transaction, to the consultant's pages
(their inbox lists it) and to the pages showing the conversation (their toolbar shows it).
Lock order as in omnichannel.lifecycle: the conversation row first."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from agents.roles import AGENT

from . import live
from .lifecycle import LifecycleConflict
from .models import Conversation, ConversationConsult, ConversationState
from .selectors import viewer_sees_all_conversations

logger = logging.getLogger(__name__)

# The states in which the agent working a conversation may ask for a consult.
CONSULT_STATES = frozenset({ConversationState.ACTIVE, ConversationState.WAITING})


def consultants_available(*, conversation: Conversation, viewer: AbstractBaseUser) -> QuerySet:
    """The agents `viewer` may consult on `conversation`: active users of the Agent group, except
    the viewer and the conversation's agent, with their profile (presence, load). One query."""
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name=AGENT)
        .exclude(pk__in={viewer.pk, conversation.assigned_agent_id} - {None})
        .select_related("agent_profile")
        .order_by("first_name", "last_name", "username")
    )


def consult_start(
    *,
    conversation: Conversation,
    consultant: AbstractBaseUser,
    requested_by: AbstractBaseUser,
    note: str = "",
) -> ConversationConsult:
    """`requested_by` (the conversation's agent) asks `consultant` to look at `conversation`.

    Raises ValidationError when the consultant cannot be consulted (not an active agent, the
    requester or the conversation's agent themselves), LifecycleConflict when the conversation is
    not Active or Waiting any more, or the consultant is consulted on it already."""
    if not (consultant.is_active and consultant.groups.filter(name=AGENT).exists()):
        raise ValidationError(_("Only an active agent can be consulted."))
    if consultant.pk in (requested_by.pk, conversation.assigned_agent_id):
        raise ValidationError(_("Consult another agent than the one working the conversation."))
    with transaction.atomic():
        # 1. The conversation, locked: it stays in its state until the consult is in.
        state = (
            Conversation.objects.select_for_update()
            .filter(pk=conversation.pk)
            .values_list("state", flat=True)
            .first()
        )
        if state not in CONSULT_STATES:
            label = ConversationState(state).label if state else _("deleted")
            raise LifecycleConflict(
                _("A conversation that is %(state)s cannot be consulted on.") % {"state": label}
            )
        try:
            with transaction.atomic():
                consult = ConversationConsult.objects.create(
                    conversation_id=conversation.pk,
                    consultant=consultant,
                    requested_by=requested_by,
                    note=note,
                )
        except IntegrityError:
            raise LifecycleConflict(
                _("%(name)s is consulted on this conversation already.") % {"name": user_name(consultant)}
            ) from None
        live.publish(
            live.CONVERSATION,
            agent_id=consultant.pk,
            conversation_id=conversation.pk,
            consult=consult.pk,
        )
    logger.info(
        "Consult started consult=%s conversation=%s consultant=%s requested_by=%s",
        consult.pk,
        conversation.pk,
        consultant.pk,
        requested_by.pk,
    )
    return consult


def consult_can_end(*, viewer: AbstractBaseUser, consult: ConversationConsult) -> bool:
    """The requester, the consultant, the conversation's agent or a supervisor may end a consult."""
    return (
        viewer.pk in (consult.requested_by_id, consult.consultant_id)
        or viewer.pk == consult.conversation.assigned_agent_id
        or viewer_sees_all_conversations(viewer=viewer)
    )


def consult_end(*, consult: ConversationConsult, actor: AbstractBaseUser | None) -> ConversationConsult:
    """End a running consult: the consultant no longer sees the conversation. Raises
    LifecycleConflict when it has ended already (one conditional UPDATE decides a race)."""
    now = timezone.now()
    with transaction.atomic():
        # 1. The conversation (the lock order): the notice written below points at it, and a change of
        # the conversation that ends its consults (lifecycle) holds it and waits for this consult.
        Conversation.objects.select_for_update().filter(pk=consult.conversation_id).values_list("pk").first()
        ended = ConversationConsult.objects.filter(pk=consult.pk, ended_at__isnull=True).update(ended_at=now)
        if not ended:
            raise LifecycleConflict(_("This consult has ended already."))
        consult.ended_at = now
        _announce_end(consult)
    logger.info(
        "Consult ended consult=%s conversation=%s actor=%s",
        consult.pk,
        consult.conversation_id,
        getattr(actor, "pk", None),
    )
    return consult


def consults_end_all(*, conversation: Conversation, actor: AbstractBaseUser | None) -> int:
    """End every running consult of a conversation (it was closed or transferred). Returns how many."""
    now = timezone.now()
    with transaction.atomic():
        running = list(
            ConversationConsult.objects.select_for_update()
            .filter(conversation_id=conversation.pk, ended_at__isnull=True)
            .order_by("pk")
        )
        if not running:
            return 0
        ConversationConsult.objects.filter(pk__in=[c.pk for c in running], ended_at__isnull=True).update(
            ended_at=now
        )
        for consult in running:
            consult.ended_at = now
            _announce_end(consult)
    logger.info(
        "Consults ended conversation=%s count=%s actor=%s",
        conversation.pk,
        len(running),
        getattr(actor, "pk", None),
    )
    return len(running)


def _announce_end(consult: ConversationConsult) -> None:
    live.publish(
        live.CONVERSATION,
        agent_id=consult.consultant_id,
        conversation_id=consult.conversation_id,
        consult=consult.pk,
        ended=True,
    )


# --- Reads -----------------------------------------------------------------------------------------


def consults_running(*, conversation: Conversation | int) -> QuerySet[ConversationConsult]:
    """The running consults of a conversation with their consultant and requester, oldest first.
    One query."""
    conversation_id = conversation.pk if isinstance(conversation, Conversation) else conversation
    return (
        ConversationConsult.objects.filter(conversation_id=conversation_id, ended_at__isnull=True)
        .select_related("consultant", "requested_by")
        .order_by("created_at", "pk")
    )


def user_name(user: AbstractBaseUser | None) -> str:
    """How the pages name a user: their full name, else their username."""
    if user is None:
        return ""
    return user.get_full_name() or user.get_username()
