"""Outbound delivery: an agent's (or the system's) message to the customer through LINE.

A fresh, unused reply token is used when there is one (free of the monthly quota); otherwise the
message is pushed with X-Line-Retry-Key = the message's UUID, so that a retry never sends twice
(LINE answers 409 to a key it has accepted: that is a delivery). A reply has no retry key: one that
got no answer may have arrived, so it is not retried; the message fails and an agent decides.

In order: a message is sent only once the conversation's earlier ones have left (delivered or
failed; omnichannel.services.message_delivery_in_turn); the end of each delivery queues the next."""

from __future__ import annotations

import datetime
import logging
import uuid

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from linebot.v3.messaging import (
    AudioMessage,
    ImageMessage,
    LocationMessage,
    MessageAction,
    PushMessageRequest,
    QuickReply,
    QuickReplyItem,
    ReplyMessageRequest,
    StickerMessage,
    TextMessage,
    VideoMessage,
)

from omnichannel import live
from omnichannel.files import attachment_signed_url
from omnichannel.models import DeliveryState, Message, MessageKind
from omnichannel.services import message_delivery_in_turn, message_next_delivery_schedule, sequence_split

from ..client import LineApiError, line_client, line_errors
from ..models import LineWebhookEvent

logger = logging.getLogger(__name__)

TEXT_MAX = 5000
MESSAGES_PER_REQUEST = 5
# LINE says "about one minute"; keep a margin for the time the message spends in the queue.
REPLY_TOKEN_MAX_AGE = datetime.timedelta(seconds=50)
# Attempts of one delivery, its retries and the sweep's included; an agent's retry starts again.
DELIVERY_MAX_ATTEMPTS = 10
REPLY_IN_DOUBT = (
    "The reply may have reached the customer, so it is not sent again automatically: check with the "
    "customer, then send it again if needed."
)


def _quick_reply(message: Message) -> QuickReply | None:
    items = message.payload.get("quick_replies") or []
    if not items:
        return None
    return QuickReply(
        items=[
            QuickReplyItem(
                action=MessageAction(label=str(i["label"])[:20], text=str(i.get("text") or i["label"]))
            )
            for i in items
        ]
    )


def line_messages_for(message: Message) -> list:
    """The LINE message objects that carry one stored message (long texts become several)."""
    kind = message.kind
    attachment = next(iter(message.attachments.all()), None)
    if kind == MessageKind.TEXT:
        built: list = [TextMessage(text=piece) for piece in sequence_split(message.text, TEXT_MAX)]
    elif kind == MessageKind.STICKER:
        built = [
            StickerMessage(
                package_id=str(message.payload["package_id"]), sticker_id=str(message.payload["sticker_id"])
            )
        ]
    elif kind == MessageKind.LOCATION:
        p = message.payload
        built = [
            LocationMessage(
                title=str(p["title"])[:100],
                address=str(p["address"])[:100],
                latitude=float(p["latitude"]),
                longitude=float(p["longitude"]),
            )
        ]
    elif kind == MessageKind.IMAGE and attachment:
        url = attachment_signed_url(attachment=attachment)
        built = [ImageMessage(original_content_url=url, preview_image_url=url)]
    elif kind == MessageKind.VIDEO and attachment:
        url = attachment_signed_url(attachment=attachment)
        preview = message.payload.get("preview_image_url") or url
        built = [VideoMessage(original_content_url=url, preview_image_url=preview)]
    elif kind == MessageKind.AUDIO and attachment:
        built = [
            AudioMessage(
                original_content_url=attachment_signed_url(attachment=attachment),
                duration=int(attachment.duration_ms or message.payload.get("duration_ms") or 1000),
            )
        ]
    elif kind == MessageKind.DOCUMENT and attachment:
        # LINE has no document message: the customer gets a signed, expiring link.
        intro = f"{message.text}\n\n" if message.text else ""
        built = [
            TextMessage(
                text=f"{intro}📄 {attachment.file_name}\n{attachment_signed_url(attachment=attachment)}"
            )
        ]
    else:
        raise LineApiError(None, f"A {kind} message cannot be sent to LINE.", permanent=True)
    quick_reply = _quick_reply(message)
    if quick_reply is not None:
        # LINE shows quick replies on the last message of a request.
        built[-1].quick_reply = quick_reply
    return built


def reply_token_claim(*, message: Message) -> str | None:
    """Take the conversation's newest fresh, unused reply token, so that no other delivery uses it."""
    candidate = (
        LineWebhookEvent.objects.filter(
            conversation_id=message.conversation_id,
            reply_token__gt="",
            reply_token_used_at__isnull=True,
            line_timestamp__gte=timezone.now() - REPLY_TOKEN_MAX_AGE,
        )
        .exclude(mode="standby")
        .order_by("-line_timestamp")
        .values_list("pk", "reply_token")
        .first()
    )
    if candidate is None:
        return None
    claimed = LineWebhookEvent.objects.filter(pk=candidate[0], reply_token_used_at__isnull=True).update(
        reply_token_used_at=timezone.now()
    )
    return candidate[1] if claimed else None


def _retry_key(message: Message, batch_index: int) -> str:
    return str(message.uuid if batch_index == 0 else uuid.uuid5(message.uuid, f"batch-{batch_index}"))


def line_message_deliver(*, message_pk: int) -> Message | None:
    """Send one outbound message. Raises LineApiError when LINE refuses or cannot be reached (the
    task decides between retry and failure). Safe to run twice: a delivered message is left alone."""
    message = (
        Message.objects.select_related(
            "conversation__messaging_account__line", "conversation__social_profile"
        )
        .prefetch_related("attachments")
        .filter(pk=message_pk)
        .first()
    )
    if message is None or message.delivery_state != DeliveryState.PENDING:
        return message
    if not message_delivery_in_turn(message=message):
        return message  # an earlier message of the conversation is on its way: it queues this one next
    conversation = message.conversation
    if conversation.social_profile_id and not conversation.social_profile.is_reachable:
        raise LineApiError(None, "The customer has blocked the account.", permanent=True)
    try:
        line_messages = line_messages_for(message)
    except (KeyError, TypeError, ValueError) as exc:
        # Stored data that LINE's message objects refuse (the SDK's pydantic ValidationError is a
        # ValueError): no retry can help, and the message must not stay "sending" for ever.
        raise LineApiError(None, f"The message cannot be sent to LINE: {exc}", permanent=True) from exc
    if message.delivery_attempts >= DELIVERY_MAX_ATTEMPTS:
        # Every attempt ended without an answer (workers lost, or an error no retry passed).
        raise LineApiError(None, f"Gave up after {message.delivery_attempts} attempts.", permanent=True)
    if message.delivery_method == "reply":
        # The last attempt was a reply whose worker was lost during the call (the sweep took it up):
        # it may have reached the customer, and a reply has no retry key. An agent decides.
        raise LineApiError(None, REPLY_IN_DOUBT, permanent=True)
    # One attempt at a time: a copy of this task (a redelivery, the sweep) finds it claimed.
    claimed = Message.objects.filter(pk=message.pk, delivery_state=DeliveryState.PENDING).update(
        delivery_state=DeliveryState.SENDING,
        delivery_attempts=F("delivery_attempts") + 1,
        delivery_due_at=timezone.now(),
    )
    if not claimed:
        return message
    batches = [
        line_messages[i : i + MESSAGES_PER_REQUEST]
        for i in range(0, len(line_messages), MESSAGES_PER_REQUEST)
    ]
    # A reply cannot be retried safely (no retry key), so only a one-request message uses one.
    reply_token = reply_token_claim(message=message) if len(batches) == 1 else None
    method = "push"
    with line_client(conversation.messaging_account.line.channel_access_token) as client:
        for index, batch in enumerate(batches):
            if reply_token:
                _delivery_method_record(message, "reply")  # in doubt, should this worker be lost
                try:
                    with line_errors():
                        client.api.reply_message(
                            ReplyMessageRequest(reply_token=reply_token, messages=batch),
                            _request_timeout=client.timeout,
                        )
                    method = "reply"
                    continue
                except LineApiError as error:
                    if error.may_have_arrived or (error.status or 0) >= 500:
                        # A reply has no retry key, and its token is spent if LINE took it: pushing
                        # now could give the customer the message twice. An agent decides.
                        raise LineApiError(None, f"{error}. {REPLY_IN_DOUBT}", permanent=True) from error
                    _delivery_method_record(message, "")  # LINE answered: it did not take the reply
                    if error.status != 400:
                        raise
                    # Expired or already used after all: push instead.
                    logger.info("LINE reply token refused, pushing message=%s error=%s", message.uuid, error)
            _delivery_method_record(message, "push")
            try:
                with line_errors():
                    client.api.push_message(
                        PushMessageRequest(to=conversation.thread_id, messages=batch),
                        x_line_retry_key=_retry_key(message, index),
                        _request_timeout=client.timeout,
                    )
            except LineApiError as error:
                if error.status != 409:
                    raise
                # 409: LINE accepted this retry key before; the message went out then.
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(
            delivery_state=DeliveryState.DELIVERED,
            delivery_method=method,
            delivered_at=timezone.now(),
            delivery_error="",
        )
        live.message_changed(message_id=message.pk, conversation_id=message.conversation_id)
        _next_delivery_after_commit(conversation_id=message.conversation_id)
    message.refresh_from_db()
    return message


def _delivery_method_record(message: Message, method: str) -> None:
    Message.objects.filter(pk=message.pk).update(delivery_method=method)
    message.delivery_method = method


def line_message_delivery_retrying(*, message_pk: int, error: LineApiError, countdown: float) -> None:
    """Record a failed try that will be retried in `countdown` seconds; the message goes back to
    pending, due then (the sweep queues it should the retry's task be lost)."""
    logger.warning("LINE delivery will be retried message=%s error=%s", message_pk, error)
    with transaction.atomic():
        Message.objects.filter(pk=message_pk).exclude(delivery_state=DeliveryState.DELIVERED).update(
            delivery_state=DeliveryState.PENDING,
            delivery_error=f"Retrying: {error}"[:2000],
            delivery_due_at=timezone.now() + datetime.timedelta(seconds=countdown),
        )
        live.message_changed(message_id=message_pk)


def line_message_delivery_failed(*, message_pk: int, error: LineApiError) -> None:
    """Mark a message failed with LINE's reason; an agent can retry it (message_retry)."""
    logger.warning("LINE delivery failed message=%s error=%s", message_pk, error)
    with transaction.atomic():
        Message.objects.filter(pk=message_pk).exclude(delivery_state=DeliveryState.DELIVERED).update(
            delivery_state=DeliveryState.FAILED, delivery_error=str(error)[:2000]
        )
        live.message_changed(message_id=message_pk)
        conversation_id = (
            Message.objects.filter(pk=message_pk).values_list("conversation_id", flat=True).first()
        )
        if conversation_id is not None:
            _next_delivery_after_commit(conversation_id=conversation_id)


def _next_delivery_after_commit(*, conversation_id: int) -> None:
    # Looked up once this delivery's end is committed: a next message stored meanwhile, whose own task
    # found this one still sending, is seen then.
    transaction.on_commit(lambda: message_next_delivery_schedule(conversation_id=conversation_id))
