"""Wire the stand-in to the product's demo account and play a first customer conversation.

The product's `demo_setup` writes a channels file (credentials, callback URL, demo customers); the
stand-in reads it at start, as if an administrator had set the channel up in the LINE console."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from .client import StandinControl, StandinControlError

logger = logging.getLogger(__name__)

DEMO_CONVERSATION = (
    ("follow", {}),
    ("text", {"text": "Hello! I ordered a kettle last week (order #A-1042) and it has not arrived yet."}),
    ("sticker", {"package_id": "11537", "sticker_id": "52002744"}),
    ("text", {"text": "Could you check where it is? I am at home all day."}),
    (
        "location",
        {"title": "Home", "address": "1-2-3 Shibuya, Tokyo", "latitude": 35.658, "longitude": 139.7016},
    ),
)
SECOND_CUSTOMER = (("text", {"text": "สวัสดีครับ Do you ship to Chiang Mai?"}),)


def channels_file_load(
    base_url: str, path: Path, *, demo_conversation: bool, wait_seconds: float = 120
) -> None:
    """Register the file's channel and users; then, once, send the demo conversation as soon as the
    product's webhook answers."""
    control = StandinControl(base_url)
    config = json.loads(path.read_text())
    channel = config["channel"]
    control.channel_register(**channel)
    channel_id = channel["channel_id"]
    for user in config.get("users", []):
        control.user_create(channel_id, **user)
    logger.info("Stand-in: channel %s registered from %s", channel_id, path)
    if not demo_conversation or config.get("demo_conversation_sent"):
        return
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            if control.verify(channel_id)["delivery"].get("status") == 200:
                break
        except StandinControlError:
            pass
        time.sleep(1)
    else:
        logger.warning("Stand-in: the product's webhook never answered; no demo conversation sent")
        return
    users = config.get("users", [])
    for user, script in zip(users, (DEMO_CONVERSATION, SECOND_CUSTOMER), strict=False):
        for action_type, fields in script:
            control.act(channel_id, {"type": action_type, "user_id": user["user_id"], **fields})
            time.sleep(0.3)
    config["demo_conversation_sent"] = True
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    os.chmod(path, 0o600)
    logger.info("Stand-in: demo conversation sent to %s", channel["webhook_url"])


def channels_file_load_in_background(
    base_url: str, path: Path, *, demo_conversation: bool
) -> threading.Thread:
    def run() -> None:
        try:
            channels_file_load(base_url, path, demo_conversation=demo_conversation)
        except Exception:
            logger.exception("Stand-in: could not load %s", path)

    thread = threading.Thread(target=run, name="standin-demo", daemon=True)
    thread.start()
    return thread
