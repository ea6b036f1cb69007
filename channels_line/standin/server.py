"""The LINE stand-in's HTTP server: one address plays both LINE hosts, the control API and the
customer phone page.

    server = StandinServer(host="127.0.0.1", port=0).start()   # background thread, any free port
    server.base_url        # e.g. http://127.0.0.1:41234 (LINE_API_BASE_URL and LINE_API_DATA_BASE_URL)
    server.state           # the StandinState, for tests that look inside
    server.stop()

`manage.py line_standin` runs the same server in the foreground.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from . import phone
from .control import PREFIX, ControlApi
from .messaging_api import MessagingApi
from .persistence import StateFile
from .protocol import StandinRequest, StandinResponse
from .state import DEFAULT_REPLY_TOKEN_TTL_SECONDS, DEFAULT_WEBHOOK_TIMEOUT_SECONDS, StandinState

logger = logging.getLogger(__name__)

# Uploads through the control API and pushes are small; this only stops a runaway client.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
_USE_SETTINGS: Any = object()

# What requests and webhook bodies are checked against: LINE's OpenAPI files (settings.LINE_OPENAPI_DIR)
# or, when they are not there, line-bot-sdk's models generated from them (channels_line.sdk_validation).
Validation = Literal["openapi", "line-bot-sdk"]


class StandinServer:
    """The stand-in on a ThreadingHTTPServer (stdlib, no dependency)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state: StandinState | None = None,
        openapi_dir: Path | str | None = _USE_SETTINGS,
        reply_token_ttl_seconds: float = DEFAULT_REPLY_TOKEN_TTL_SECONDS,
        webhook_timeout_seconds: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
        state_file: Path | str | None = None,
    ) -> None:
        """`openapi_dir` defaults to settings.LINE_OPENAPI_DIR; when the folder is missing the server
        validates with line-bot-sdk's models instead (see `validation`) and says so once in the log.

        With `state_file`, channels, users and chats are restored from it at start and written back
        after each request that may change them; without one (the tests), everything stays in memory."""
        self.state = state or StandinState(
            reply_token_ttl_seconds=reply_token_ttl_seconds,
            webhook_timeout_seconds=webhook_timeout_seconds,
        )
        self.state_file = StateFile(state_file) if state_file is not None else None
        if self.state_file is not None:
            self.state_file.load(self.state)
        self.openapi_dir = _usable_openapi_dir(openapi_dir)
        self.validation: Validation = "openapi" if self.openapi_dir is not None else "line-bot-sdk"
        self._stopping = threading.Event()
        self.messaging_api = MessagingApi(self.state, openapi_dir=self.openapi_dir, stopping=self._stopping)
        self.control_api = ControlApi(self.state, openapi_dir=self.openapi_dir)
        self._httpd = _HTTPServer((host, port), _Handler, app=self)
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL for LINE_API_BASE_URL and LINE_API_DATA_BASE_URL (no trailing slash)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def validates(self) -> bool:
        """Whether requests and webhook bodies are checked: always, against LINE's OpenAPI descriptions
        or, without them, line-bot-sdk's models (`validation` says which)."""
        return self.validation in ("openapi", "line-bot-sdk")

    def start(self) -> StandinServer:
        """Serve on a daemon thread and return at once."""
        if self._thread is not None:
            raise RuntimeError("the stand-in is already running")
        self._serving = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="line-standin", daemon=True
        )
        self._thread.start()
        logger.info("LINE stand-in listening on %s", self.base_url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() is called from another thread (or Ctrl-C)."""
        logger.info("LINE stand-in listening on %s", self.base_url)
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False
            self._stopping.set()
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket; requests held by a hang fault end at once."""
        self._stopping.set()
        if self._serving:
            # shutdown() waits for the serving loop; with no loop running it would wait forever.
            self._serving = False
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle(self, request: StandinRequest) -> StandinResponse:
        """Answer one request, then keep what it changed in the state file (when there is one)."""
        response = self._route(request)
        if self.state_file is not None and request.method != "GET":
            try:
                self.state_file.save(self.state)
            except OSError:
                logger.exception("LINE stand-in could not write its state file %s", self.state_file.path)
        return response

    def _route(self, request: StandinRequest) -> StandinResponse:
        """Route one request to the phone page, the control API or the Messaging API."""
        if request.method == "GET" and request.path in ("/", "/phone"):
            return StandinResponse(status=200, body=phone.page(), content_type="text/html; charset=utf-8")
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            if not _is_loopback(request.client_host):
                return StandinResponse.json(403, {"error": "the control API answers on loopback only"})
            return self.control_api.handle(request)
        return self.messaging_api.handle(request)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # A hung request must not hold up stop(); its thread ends with the process or the stop event.
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, app: StandinServer
    ):
        self.app = app
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as urllib3's pool in the SDK expects of LINE.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def version_string(self) -> str:
        return "LINE-standin"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(StandinResponse.json(411, {"message": "Length Required"}), close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(StandinResponse.json(400, {"message": "Invalid Content-Length"}), close=True)
            return
        if length > MAX_REQUEST_BYTES:
            self._send(StandinResponse.json(413, {"message": "Request Entity Too Large"}), close=True)
            return
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        request = StandinRequest(
            method=self.command,
            path=url.path,
            query=urllib.parse.parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            client_host=self.client_address[0],
        )
        try:
            response = self.server.app.handle(request)
        except Exception:
            logger.exception("LINE stand-in failed on %s %s", self.command, url.path)
            response = StandinResponse.json(500, {"message": "The stand-in failed; see its log"})
        self._send(response)

    def _send(self, response: StandinResponse, *, close: bool = False) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout against a hang fault): nothing left to tell it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def _usable_openapi_dir(openapi_dir: Path | str | None) -> Path | None:
    from channels_line.openapi import OpenAPIUnavailable, openapi_dir_available, openapi_preload

    if openapi_dir is _USE_SETTINGS:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            openapi_dir = getattr(settings, "LINE_OPENAPI_DIR", None)
        except ImproperlyConfigured:
            # Used outside Django (a plain script): no setting to read, so line-bot-sdk's models.
            openapi_dir = None
    if openapi_dir is None:
        return None
    folder = Path(openapi_dir)
    if not openapi_dir_available(folder):
        logger.warning(
            "LINE's OpenAPI descriptions are not in %s (LINE_OPENAPI_DIR): the LINE stand-in checks "
            "requests and webhook bodies against line-bot-sdk's models instead.",
            folder,
        )
        return None
    try:
        openapi_preload(folder)
    except OpenAPIUnavailable as exc:
        logger.warning("%s The LINE stand-in checks against line-bot-sdk's models instead.", exc)
        return None
    return folder.resolve()


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
