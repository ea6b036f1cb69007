"""Every write of the LINE channel: accounts, webhook intake, event processing, outbound delivery."""

from .accounts import (
    CredentialsCheck,
    line_account_check_credentials,
    line_account_create,
    line_account_delete,
    line_account_update,
)
from .chat import line_conversation_mark_read, line_conversation_typing
from .inbound import (
    line_attachment_fetch,
    line_attachments_sweep,
    line_event_process,
    line_events_process,
    line_profile_refresh,
)
from .intake import (
    WebhookReceipt,
    WebhookRejected,
    line_events_mark_enqueued,
    line_events_process_again,
    line_events_sweep,
    line_webhook_receive,
)
from .outbound import line_message_deliver, line_message_delivery_failed, line_message_delivery_retrying

__all__ = [
    "CredentialsCheck",
    "WebhookReceipt",
    "WebhookRejected",
    "line_account_check_credentials",
    "line_account_create",
    "line_account_delete",
    "line_account_update",
    "line_attachment_fetch",
    "line_attachments_sweep",
    "line_conversation_mark_read",
    "line_conversation_typing",
    "line_event_process",
    "line_events_mark_enqueued",
    "line_events_process",
    "line_events_process_again",
    "line_events_sweep",
    "line_message_deliver",
    "line_message_delivery_failed",
    "line_message_delivery_retrying",
    "line_profile_refresh",
    "line_webhook_receive",
]
