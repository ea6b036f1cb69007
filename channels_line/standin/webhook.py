"""How the stand-in calls a business's webhook the way the LINE Platform does: the body, the
signature, the headers, and what came back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

USER_AGENT = "LineBotWebhook/2.0"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNATURE_HEADER = "x-line-signature"
# LINE logs a webhook answered later than this as a timeout (PRODUCT.md); the stand-in waits longer
# so the test can see how slow the answer was, and flags it.
LINE_WEBHOOK_PATIENCE_SECONDS = 2.0
_RESPONSE_KEEP_CHARS = 2000

# Webhook URLs are on loopback; a proxy from the environment (http_proxy) must not get in the way.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def webhook_body(destination: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document LINE POSTs: the bot's user ID and the events (none for the console's Verify)."""
    return {"destination": destination, "events": events}


def encode_body(body: dict[str, Any]) -> bytes:
    """The raw bytes that are signed and sent (UTF-8, no ASCII escaping, as LINE sends)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(channel_secret: str, raw_body: bytes) -> str:
    """`x-line-signature`: base64 of HMAC-SHA256 over the raw body, keyed with the channel secret."""
    digest = hmac.new(channel_secret.encode("utf-8"), raw_body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class Delivery:
    """One POST to a webhook URL and its outcome."""

    url: str
    body: dict[str, Any]
    signature: str
    status: int | None
    latency_ms: float
    error: str | None
    response_body: str
    delivered_at_ms: int

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "body": self.body,
            "signature": self.signature,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "slower_than_line_allows": self.latency_ms > LINE_WEBHOOK_PATIENCE_SECONDS * 1000,
            "error": self.error,
            "response_body": self.response_body,
            "delivered_at_ms": self.delivered_at_ms,
        }


def deliver(*, url: str, channel_secret: str, body: dict[str, Any], timeout: float, now_ms: int) -> Delivery:
    """POST `body` to `url` signed with `channel_secret`. Never raises for network trouble: the
    outcome (status or error, latency) is in the returned Delivery."""
    raw = encode_body(body)
    signed = signature(channel_secret, raw)
    if not url:
        return Delivery(url, body, signed, None, 0.0, "the channel has no webhook_url", "", now_ms)
    request = urllib.request.Request(  # noqa: S310 - the URL is the channel's own webhook, any scheme it set
        url,
        data=raw,
        method="POST",
        headers={"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT, SIGNATURE_HEADER: signed},
    )
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    answer = b""
    try:
        with _opener.open(request, timeout=timeout) as response:
            status = response.status
            answer = response.read(_RESPONSE_KEEP_CHARS)
    except urllib.error.HTTPError as exc:
        status = exc.code
        answer = exc.read(_RESPONSE_KEEP_CHARS)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    latency_ms = (time.monotonic() - started) * 1000
    return Delivery(
        url=url,
        body=body,
        signature=signed,
        status=status,
        latency_ms=latency_ms,
        error=error,
        response_body=answer.decode("utf-8", errors="replace"),
        delivered_at_ms=now_ms,
    )
