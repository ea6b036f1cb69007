"""What the customer sees of the agent's side: "read" marks and the typing (loading) indicator."""

from __future__ import annotations

import logging

from linebot.v3.messaging import MarkMessagesAsReadByTokenRequest, ShowLoadingAnimationRequest

from omnichannel.models import Conversation, Direction, ThreadType

from ..client import LineApiError, line_client, line_errors

logger = logging.getLogger(__name__)

LOADING_SECONDS_MIN, LOADING_SECONDS_MAX = 5, 60


def line_conversation_mark_read(*, conversation_pk: int) -> bool:
    """Show the customer that their messages were read, with the newest inbound message's
    markAsReadToken (LINE marks everything up to it). Returns whether LINE was called."""
    conversation = (
        Conversation.objects.select_related("messaging_account__line").filter(pk=conversation_pk).first()
    )
    if conversation is None:
        return False
    token = (
        conversation.messages.filter(direction=Direction.INBOUND, payload__has_key="markAsReadToken")
        .order_by("-sent_at", "-id")
        .values_list("payload__markAsReadToken", flat=True)
        .first()
    )
    if not token:
        return False
    with line_client(conversation.messaging_account.line.channel_access_token) as client, line_errors():
        client.api.mark_messages_as_read_by_token(
            MarkMessagesAsReadByTokenRequest(mark_as_read_token=token), _request_timeout=client.timeout
        )
    return True


def line_conversation_typing(*, conversation_pk: int, seconds: int = 20) -> bool:
    """Show the loading animation in a one-to-one chat (LINE has none for groups). LINE hides it when
    the next message arrives or after `seconds` (5 to 60, in steps of 5). Returns whether LINE was called."""
    conversation = (
        Conversation.objects.select_related("messaging_account__line").filter(pk=conversation_pk).first()
    )
    if conversation is None or conversation.thread_type != ThreadType.USER:
        return False
    seconds = max(LOADING_SECONDS_MIN, min(LOADING_SECONDS_MAX, 5 * round(seconds / 5)))
    try:
        with line_client(conversation.messaging_account.line.channel_access_token) as client, line_errors():
            client.api.show_loading_animation(
                ShowLoadingAnimationRequest(chat_id=conversation.thread_id, loading_seconds=seconds),
                _request_timeout=client.timeout,
            )
    except LineApiError as error:
        # A missed indicator is cosmetic: log it, never retry it.
        logger.info("LINE loading animation not shown conversation=%s error=%s", conversation_pk, error)
        return False
    return True
