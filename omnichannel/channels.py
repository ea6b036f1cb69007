"""The one small interface through which the core, routing and agents talk to a messaging channel.

A channel app (channels_line) registers an adapter for its channel type in its AppConfig.ready();
nothing outside that app knows how the channel works."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .models import Message, MessagingAccount


class ChannelAdapter(Protocol):
    def message_delivery_schedule(self, *, message: Message) -> None:
        """Queue the delivery of an outbound message (called after the transaction commits)."""

    def conversation_mark_read_schedule(self, *, conversation_id: int) -> None:
        """Queue showing the customer that their messages were read."""

    def typing_indicator_schedule(self, *, conversation_id: int, seconds: int) -> None:
        """Queue showing the customer that an agent is typing."""


_adapters: dict[str, ChannelAdapter] = {}


def channel_register(channel_type: str, adapter: ChannelAdapter) -> None:
    _adapters[channel_type] = adapter


def channel_for(account: MessagingAccount) -> ChannelAdapter:
    try:
        return _adapters[account.channel_type]
    except KeyError:
        raise LookupError(f"No channel app handles channel type {account.channel_type!r}") from None
