"""The demo LINE account that `make run` wires to the LINE stand-in."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from django.conf import settings

from omnichannel.models import MessagingAccount

from .accounts import line_account_create

DEMO_ACCOUNT_NAME = "Demo LINE shop"
DEMO_USERS = (
    {"display_name": "Yui Tanaka", "language": "ja", "status_message": "☕ Coffee first"},
    {"display_name": "Nattapong S.", "language": "th", "status_message": "On the road"},
)


def line_demo_account_ensure(*, channels_file: Path) -> tuple[MessagingAccount, bool]:
    """Create the demo account once, with fresh credentials, and write what the stand-in needs to
    play its LINE channel (credentials, callback URL, demo customers) to `channels_file` (mode 600)."""
    account = MessagingAccount.objects.select_related("line").filter(name=DEMO_ACCOUNT_NAME).first()
    created = account is None
    if account is None:
        account = line_account_create(
            name=DEMO_ACCOUNT_NAME,
            channel_id=str(2_000_000_000 + secrets.randbelow(10**8)),
            channel_secret=secrets.token_hex(16),
            channel_access_token=secrets.token_urlsafe(64),
        )
    previous = json.loads(channels_file.read_text()) if channels_file.exists() else {}
    users = previous.get("users") or [{"user_id": "U" + secrets.token_hex(16), **user} for user in DEMO_USERS]
    line = account.line
    channels_file.write_text(
        json.dumps(
            {
                "channel": {
                    "channel_id": line.channel_id,
                    "channel_secret": line.channel_secret,
                    "channel_access_token": line.channel_access_token,
                    "webhook_url": line.callback_url,
                    "bot_display_name": DEMO_ACCOUNT_NAME,
                    "bot_user_id": "U" + account.pk.hex,
                },
                "users": users,
                "demo_conversation_sent": bool(previous.get("demo_conversation_sent")) and not created,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    os.chmod(channels_file, 0o600)
    return account, created


def standin_channels_file() -> Path:
    return settings.VAR_DIR / "standin-channels.json"
