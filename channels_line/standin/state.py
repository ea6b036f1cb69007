"""The LINE stand-in's memory: channels, their LINE users and chats, the tokens LINE hands out, the
content customers sent, what the business sent back, and the faults tests ask for.

Everything is in memory, like a fresh LINE sandbox; `manage.py line_standin --state-file` keeps the
lasting part (channels, their users and chats, what was said in them) in a file across restarts
(`persistence.py`, from `snapshot()` and `restore()`). One re-entrant lock guards it all; nothing in this
module does I/O, so the lock is never held across a network call.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

DEFAULT_REPLY_TOKEN_TTL_SECONDS = 60.0
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 10.0

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
USER_ID_PATTERN = re.compile(r"^U[0-9a-f]{32}$")
GROUP_ID_PATTERN = re.compile(r"^C[0-9a-f]{32}$")
ROOM_ID_PATTERN = re.compile(r"^R[0-9a-f]{32}$")

# LINE message IDs are decimal strings of about 18 digits; a random start keeps IDs of two stand-in
# runs apart, which catches code that confuses IDs across test cases.
_message_numbers = itertools.count(400_000_000_000_000_000 + secrets.randbelow(10**16))
_numbers_lock = threading.Lock()


def new_user_id() -> str:
    """A LINE user ID: "U" and 32 lowercase hex digits."""
    return "U" + secrets.token_hex(16)


def new_message_id() -> str:
    """A LINE message ID (a decimal string, unique within this process)."""
    with _numbers_lock:
        return str(next(_message_numbers))


def new_webhook_event_id(now_ms: int) -> str:
    """A ULID as LINE gives in `webhookEventId`: 48-bit ms time and 80 random bits, Crockford base32."""
    value = ((now_ms & (2**48 - 1)) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_request_id() -> str:
    """The value of LINE's `x-line-request-id` response header."""
    return str(uuid.uuid4())


def new_reply_token() -> str:
    return secrets.token_hex(16)


def new_quote_token() -> str:
    return secrets.token_urlsafe(48)


def new_mark_as_read_token() -> str:
    return secrets.token_urlsafe(36)


@dataclass
class LineUser:
    """A LINE user as one channel sees them."""

    user_id: str
    display_name: str
    picture_url: str | None = None
    status_message: str | None = None
    language: str | None = None
    # A user who blocked the account is not a friend; unblocking sends follow with isUnblocked true.
    is_friend: bool = True
    has_blocked: bool = False

    def profile(self) -> dict[str, Any]:
        """The body of GET /v2/bot/profile/{userId}: optional fields are left out, as LINE does."""
        profile: dict[str, Any] = {"userId": self.user_id, "displayName": self.display_name}
        for key, value in (
            ("pictureUrl", self.picture_url),
            ("statusMessage", self.status_message),
            ("language", self.language),
        ):
            if value:
                profile[key] = value
        return profile

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "display_name": self.display_name,
            "picture_url": self.picture_url,
            "status_message": self.status_message,
            "language": self.language,
            "is_friend": self.is_friend,
            "has_blocked": self.has_blocked,
        }


@dataclass
class MessageContent:
    """The bytes behind an image, video, audio or file message a customer sent."""

    message_id: str
    data: bytes
    content_type: str
    file_name: str | None
    ready_at: float
    transcoding_fails: bool = False
    external_url: str | None = None

    def transcoding_status(self, now: float) -> str:
        if self.transcoding_fails:
            return "failed"
        return "succeeded" if now >= self.ready_at else "processing"


@dataclass
class ReplyToken:
    token: str
    chat_id: str
    user_id: str | None
    webhook_event_id: str
    issued_at: float
    used_at: float | None = None


@dataclass
class MarkAsReadToken:
    token: str
    chat_id: str
    message_id: str


@dataclass
class AcceptedPush:
    """A push accepted with an X-Line-Retry-Key: a second request with the key gets its answer."""

    request_id: str
    sent_messages: list[dict[str, str]]


@dataclass
class Channel:
    """One Messaging API channel (and its LINE Official Account bot)."""

    channel_id: str
    channel_secret: str
    channel_access_token: str
    webhook_url: str
    bot_user_id: str
    bot_basic_id: str
    bot_display_name: str
    bot_picture_url: str | None
    monthly_quota: int | None
    quota_used: int = 0
    users: dict[str, LineUser] = field(default_factory=dict)
    # Group and room IDs with the users seen in them.
    chats: dict[str, set[str]] = field(default_factory=dict)
    reply_tokens: dict[str, ReplyToken] = field(default_factory=dict)
    mark_as_read_tokens: dict[str, MarkAsReadToken] = field(default_factory=dict)
    contents: dict[str, MessageContent] = field(default_factory=dict)
    retry_keys: dict[str, AcceptedPush] = field(default_factory=dict)
    # Webhook events by webhookEventId, kept for redelivery.
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    sent_messages: list[dict[str, Any]] = field(default_factory=list)
    loading_calls: list[dict[str, Any]] = field(default_factory=list)
    read_marks: list[dict[str, Any]] = field(default_factory=list)
    # Both sides of every chat in order, for the phone page.
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "channel_secret": self.channel_secret,
            "channel_access_token": self.channel_access_token,
            "webhook_url": self.webhook_url,
            "bot_user_id": self.bot_user_id,
            "bot_basic_id": self.bot_basic_id,
            "bot_display_name": self.bot_display_name,
            "bot_picture_url": self.bot_picture_url,
            "monthly_quota": self.monthly_quota,
            "quota_used": self.quota_used,
            "users": len(self.users),
            "chats": sorted(self.chats),
        }


@dataclass
class Fault:
    """Make the next `remaining` LINE API requests that match answer `status` and/or hang first."""

    fault_id: int
    path: str
    regex: bool
    method: str | None
    status: int | None
    body: Any
    delay_seconds: float
    remaining: int
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.regex:
            return re.search(self.path, path) is not None
        return path.startswith(self.path)

    def as_json(self) -> dict[str, Any]:
        return {
            "fault_id": self.fault_id,
            "path": self.path,
            "regex": self.regex,
            "method": self.method,
            "status": self.status,
            "body": self.body,
            "delay_seconds": self.delay_seconds,
            "remaining": self.remaining,
            "hits": self.hits,
        }


SNAPSHOT_VERSION = 1
_CHANNEL_SETTINGS = (
    "channel_id",
    "channel_secret",
    "channel_access_token",
    "webhook_url",
    "bot_user_id",
    "bot_basic_id",
    "bot_display_name",
    "bot_picture_url",
    "monthly_quota",
)


class StandinState:
    """All the stand-in knows. Hold `lock` while reading or changing channels or faults."""

    def __init__(
        self,
        *,
        reply_token_ttl_seconds: float = DEFAULT_REPLY_TOKEN_TTL_SECONDS,
        webhook_timeout_seconds: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
    ) -> None:
        self.lock = threading.RLock()
        self.reply_token_ttl_seconds = reply_token_ttl_seconds
        self.webhook_timeout_seconds = webhook_timeout_seconds
        self.channels: dict[str, Channel] = {}
        self.faults: list[Fault] = []
        self._fault_ids = itertools.count(1)
        self._sequence = itertools.count(1)
        # Tests move the stand-in's clock forward instead of sleeping through token and content delays.
        self.clock_offset_seconds = 0.0

    def now(self) -> float:
        """The stand-in's time in seconds since the epoch (real time plus any advance)."""
        return time.time() + self.clock_offset_seconds

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def next_sequence(self) -> int:
        """An increasing number that orders records across channels (for polling with `after`)."""
        return next(self._sequence)

    def advance_clock(self, seconds: float) -> None:
        with self.lock:
            self.clock_offset_seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        """What outlives a restart, as JSON-ready data: each channel's credentials and settings, its users,
        group and room members, both sides of its chats, the content its customers sent, its webhook events
        (for redelivery) and what the business sent. Short-lived things are left out: reply and read-mark
        tokens, retry keys, call logs, faults and the clock's advance."""
        with self.lock:
            return {
                "version": SNAPSHOT_VERSION,
                "channels": [
                    {
                        **{name: getattr(channel, name) for name in _CHANNEL_SETTINGS},
                        "quota_used": channel.quota_used,
                        "users": [user.as_json() for user in channel.users.values()],
                        "chats": {chat_id: sorted(members) for chat_id, members in channel.chats.items()},
                        "contents": [
                            {
                                "message_id": content.message_id,
                                "data_base64": base64.b64encode(content.data).decode("ascii"),
                                "content_type": content.content_type,
                                "file_name": content.file_name,
                                "transcoding_fails": content.transcoding_fails,
                                "external_url": content.external_url,
                            }
                            for content in channel.contents.values()
                        ],
                        "events": copy.deepcopy(channel.events),
                        "sent_messages": copy.deepcopy(channel.sent_messages),
                        "timeline": copy.deepcopy(channel.timeline),
                    }
                    for channel in self.channels.values()
                ],
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take back what `snapshot()` gave (channels already here with the same ID are replaced)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not a stand-in state of version {SNAPSHOT_VERSION}")
        with self.lock:
            last_sequence = 0
            for saved in snapshot["channels"]:
                channel = Channel(**{name: saved[name] for name in _CHANNEL_SETTINGS})
                channel.quota_used = saved.get("quota_used", 0)
                for user in saved.get("users", []):
                    channel.users[user["user_id"]] = LineUser(**user)
                channel.chats = {chat_id: set(members) for chat_id, members in saved.get("chats", {}).items()}
                for content in saved.get("contents", []):
                    channel.contents[content["message_id"]] = MessageContent(
                        message_id=content["message_id"],
                        data=base64.b64decode(content["data_base64"]),
                        content_type=content["content_type"],
                        file_name=content["file_name"],
                        ready_at=0.0,
                        transcoding_fails=content["transcoding_fails"],
                        external_url=content["external_url"],
                    )
                channel.events = saved.get("events", {})
                channel.sent_messages = saved.get("sent_messages", [])
                channel.timeline = saved.get("timeline", [])
                for record in (*channel.sent_messages, *channel.timeline):
                    last_sequence = max(last_sequence, int(record.get("seq", 0)))
                self.channels[channel.channel_id] = channel
            # The phone page polls with ?after=<seq>: numbering goes on after the restored records.
            self._sequence = itertools.count(last_sequence + 1)

    def reset(self, *, keep_channels: bool = False) -> None:
        """Forget everything (or everything but the channels' credentials and settings)."""
        with self.lock:
            self.faults.clear()
            self.clock_offset_seconds = 0.0
            if not keep_channels:
                self.channels.clear()
                return
            for channel_id, channel in list(self.channels.items()):
                self.channels[channel_id] = Channel(
                    channel_id=channel.channel_id,
                    channel_secret=channel.channel_secret,
                    channel_access_token=channel.channel_access_token,
                    webhook_url=channel.webhook_url,
                    bot_user_id=channel.bot_user_id,
                    bot_basic_id=channel.bot_basic_id,
                    bot_display_name=channel.bot_display_name,
                    bot_picture_url=channel.bot_picture_url,
                    monthly_quota=channel.monthly_quota,
                )

    def channel_upsert(
        self,
        *,
        channel_id: str | None = None,
        channel_secret: str | None = None,
        channel_access_token: str | None = None,
        webhook_url: str | None = None,
        bot_user_id: str | None = None,
        bot_basic_id: str | None = None,
        bot_display_name: str | None = None,
        bot_picture_url: str | None = None,
        monthly_quota: int | EllipsisType | None = ...,
    ) -> Channel:
        """Register a channel, or change the given fields of a registered one. Missing values of a
        new channel are made up the way LINE shapes them."""
        if bot_user_id is not None and not USER_ID_PATTERN.match(bot_user_id):
            raise ValueError("bot_user_id must be 'U' followed by 32 lowercase hex digits")
        if monthly_quota not in (None, ...) and (not isinstance(monthly_quota, int) or monthly_quota < 0):
            raise ValueError("monthly_quota must be a whole number >= 0, or null for no limit")
        with self.lock:
            if channel_access_token is not None:
                owner = self.channel_by_token(channel_access_token)
                if owner is not None and owner.channel_id != channel_id:
                    raise ValueError(f"channel {owner.channel_id} already uses this access token")
            channel = self.channels.get(channel_id) if channel_id else None
            if channel is None:
                channel = Channel(
                    channel_id=channel_id or str(1_000_000_000 + secrets.randbelow(9_000_000_000)),
                    channel_secret=channel_secret or secrets.token_hex(16),
                    channel_access_token=channel_access_token or secrets.token_urlsafe(128),
                    webhook_url=webhook_url or "",
                    bot_user_id=bot_user_id or new_user_id(),
                    bot_basic_id=bot_basic_id or f"@{secrets.randbelow(1000):03d}{secrets.token_hex(3)[:5]}",
                    bot_display_name=bot_display_name or "Stand-in Official Account",
                    bot_picture_url=bot_picture_url,
                    monthly_quota=None if monthly_quota is ... else monthly_quota,
                )
                self.channels[channel.channel_id] = channel
                return channel
            for name, value in (
                ("channel_secret", channel_secret),
                ("channel_access_token", channel_access_token),
                ("webhook_url", webhook_url),
                ("bot_user_id", bot_user_id),
                ("bot_basic_id", bot_basic_id),
                ("bot_display_name", bot_display_name),
                ("bot_picture_url", bot_picture_url),
            ):
                if value is not None:
                    setattr(channel, name, value)
            if monthly_quota is not ...:
                channel.monthly_quota = monthly_quota
            return channel

    def channel_by_token(self, token: str) -> Channel | None:
        with self.lock:
            for channel in self.channels.values():
                if secrets.compare_digest(channel.channel_access_token, token):
                    return channel
        return None

    def user_create(
        self,
        channel: Channel,
        *,
        user_id: str | None = None,
        display_name: str | None = None,
        picture_url: str | None = None,
        status_message: str | None = None,
        language: str | None = None,
    ) -> LineUser:
        """Add a LINE user to a channel (a friend of its account), or update the given fields."""
        if user_id is not None and not USER_ID_PATTERN.match(user_id):
            raise ValueError("user_id must be 'U' followed by 32 lowercase hex digits")
        with self.lock:
            user = channel.users.get(user_id) if user_id else None
            if user is None:
                user_id = user_id or new_user_id()
                user = LineUser(
                    user_id=user_id,
                    display_name=display_name or f"LINE user {user_id[1:7]}",
                    picture_url=picture_url,
                    status_message=status_message,
                    language=language,
                )
                channel.users[user_id] = user
                return user
            for name, value in (
                ("display_name", display_name),
                ("picture_url", picture_url),
                ("status_message", status_message),
                ("language", language),
            ):
                if value is not None:
                    setattr(user, name, value)
            return user

    def fault_add(
        self,
        *,
        path: str,
        regex: bool = False,
        method: str | None = None,
        status: int | None = None,
        body: Any = None,
        delay_seconds: float = 0.0,
        times: int = 1,
    ) -> Fault:
        """Arm a fault; it disarms itself after `times` matching requests."""
        if status is None and delay_seconds <= 0:
            raise ValueError("a fault needs a status, a delay_seconds, or both")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if times < 1:
            raise ValueError("times must be at least 1")
        if regex:
            re.compile(path)
        with self.lock:
            fault = Fault(
                fault_id=next(self._fault_ids),
                path=path,
                regex=regex,
                method=method,
                status=status,
                body=body,
                delay_seconds=delay_seconds,
                remaining=times,
            )
            self.faults.append(fault)
            return fault

    def fault_take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching this request, counted as used; None if there is none."""
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    fault.hits += 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                    return fault
        return None
