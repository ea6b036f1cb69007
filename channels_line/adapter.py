"""LINE's implementation of the core's channel interface (omnichannel.channels)."""

from __future__ import annotations

from omnichannel.models import Message


class LineChannel:
    def message_delivery_schedule(self, *, message: Message) -> None:
        from .tasks import line_message_deliver

        line_message_deliver.delay(message.pk)

    def conversation_mark_read_schedule(self, *, conversation_id: int) -> None:
        from .tasks import line_conversation_mark_read

        line_conversation_mark_read.delay(conversation_id)

    def typing_indicator_schedule(self, *, conversation_id: int, seconds: int) -> None:
        from .tasks import line_conversation_typing

        line_conversation_typing.delay(conversation_id, seconds)
