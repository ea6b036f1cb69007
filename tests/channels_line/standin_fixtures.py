"""Fixtures for tests that talk to the LINE stand-in: the server on loopback, a registered channel and
user, the real line-bot-sdk clients pointed at it, and a webhook receiver (a stdlib HTTP server).

Import the fixtures you use into the test module (pytest finds fixtures by name in the module)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from linebot.v3.messaging import ApiClient, Configuration, MessagingApi, MessagingApiBlob

from channels_line.standin import StandinControl, StandinServer

# Every SDK call in the tests carries a timeout: the sync client has none by default.
SDK_TIMEOUT = 5.0


@dataclass
class LineChannel:
    """A channel registered in the stand-in, with one LINE user who is a friend of its account."""

    channel_id: str
    channel_secret: str
    access_token: str
    bot_user_id: str
    user_id: str


@dataclass
class LineApis:
    """The SDK's clients for both LINE hosts, as the product builds them."""

    messaging: MessagingApi
    blob: MessagingApiBlob


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    raw_body: bytes

    def json(self) -> Any:
        return json.loads(self.raw_body)


@dataclass
class WebhookReceiver:
    """A business webhook stand-in: records each POST and answers `status`."""

    url: str
    received: list[ReceivedWebhook] = field(default_factory=list)
    status: int = 200
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedWebhook]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"the webhook received {len(self.received)} requests, expected {count}")
                self.arrived.wait(remaining)
            return list(self.received)


def raw_call(
    standin: StandinServer,
    method: str,
    path: str,
    *,
    token: str,
    body: Any = None,
    headers: dict | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request the SDK would refuse to build (its models check some limits client-side)."""
    request = urllib.request.Request(  # noqa: S310 - loopback http URL of the stand-in
        standin.base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=SDK_TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def standin() -> Iterator[StandinServer]:
    """The stand-in on a free loopback port, validating against LINE_OPENAPI_DIR when it exists and
    against line-bot-sdk's models when it does not."""
    server = StandinServer(host="127.0.0.1", port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def control(standin: StandinServer) -> StandinControl:
    return StandinControl(standin.base_url)


@pytest.fixture
def line_channel(control: StandinControl) -> LineChannel:
    channel = control.channel_register(bot_display_name="Test Shop")
    user = control.user_create(channel["channel_id"], display_name="Aiko Tanaka", language="ja")
    return LineChannel(
        channel_id=channel["channel_id"],
        channel_secret=channel["channel_secret"],
        access_token=channel["channel_access_token"],
        bot_user_id=channel["bot_user_id"],
        user_id=user["user_id"],
    )


@pytest.fixture
def line_apis(standin: StandinServer, line_channel: LineChannel) -> Iterator[LineApis]:
    configuration = Configuration(host=standin.base_url, access_token=line_channel.access_token)
    with ApiClient(configuration) as api_client:
        yield LineApis(messaging=MessagingApi(api_client), blob=MessagingApiBlob(api_client))


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.arrived:
                receiver.received.append(
                    ReceivedWebhook(headers={k.lower(): v for k, v in self.headers.items()}, raw_body=body)
                )
                receiver.arrived.notify_all()
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}/line/webhook"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
