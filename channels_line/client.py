"""The Messaging API through line-bot-sdk v3, with the traps closed: every call has a timeout, the two
LINE hosts stay separate when a stand-in is configured, and errors come back in plain words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import urllib3
from django.conf import settings
from linebot.v3.messaging import ApiClient, Configuration, MessagingApi, MessagingApiBlob
from linebot.v3.messaging.exceptions import ApiException


class LineApiError(Exception):
    """A call to LINE that did not succeed, in words an administrator can act on."""

    def __init__(
        self,
        status: int | None,
        message: str,
        details: tuple[str, ...] = (),
        *,
        permanent: bool = False,
        may_have_arrived: bool = False,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.details = details
        # Set for refusals decided on our side (nothing to retry), whatever the status.
        self.permanent = permanent
        # The request was sent but no answer came (a timeout while waiting, a dropped connection):
        # LINE may have acted on it.
        self.may_have_arrived = may_have_arrived

    @property
    def retryable(self) -> bool:
        # No status: timeout or connection error. 429: rate limit or quota. 5xx: LINE's side.
        if self.permanent:
            return False
        return self.status is None or self.status == 429 or self.status >= 500

    def __str__(self) -> str:
        if self.permanent:
            return self.message
        prefix = f"LINE answered {self.status}" if self.status else "LINE could not be reached"
        detail = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{prefix}: {self.message}{detail}"


def error_from_exception(exc: Exception) -> LineApiError:
    if isinstance(exc, ApiException):
        message, details = exc.reason or "error", []
        try:
            body = json.loads(exc.body or b"{}")
            message = body.get("message") or message
            details = [
                f"{d.get('property')}: {d.get('message')}" if d.get("property") else str(d.get("message"))
                for d in body.get("details") or []
            ]
        except (ValueError, AttributeError):
            pass
        if exc.status == 401:
            message = f"the channel access token was refused ({message})"
        return LineApiError(exc.status, message, tuple(details))
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        # Checked first: urllib3 makes NewConnectionError a subclass of its timeout error.
        return LineApiError(None, f"connection failed ({exc.__class__.__name__})")
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return LineApiError(None, f"no connection within {settings.LINE_API_TIMEOUT:g} s")
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return LineApiError(None, f"no answer within {settings.LINE_API_TIMEOUT:g} s", may_have_arrived=True)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return LineApiError(None, f"connection failed ({exc.__class__.__name__})", may_have_arrived=True)
    raise exc


@dataclass
class LineClient:
    api: MessagingApi
    blob: MessagingApiBlob
    timeout: float


def _configuration(access_token: str, host: str) -> Configuration:
    # An empty host keeps the SDK's own per-API default (api.line.me or api-data.line.me).
    configuration = Configuration(access_token=access_token, host=host or None)
    # urllib3 would silently retry a timed-out GET three times (4 x LINE_API_TIMEOUT in a worker);
    # retries are the tasks' business, with backoff and a record of each failure.
    configuration.retries = 0
    return configuration


@contextmanager
def line_client(access_token: str) -> Iterator[LineClient]:
    """Two API clients: `api` for api.line.me, `blob` for api-data.line.me (or their stand-ins)."""
    with (
        ApiClient(_configuration(access_token, settings.LINE_API_BASE_URL)) as api_client,
        ApiClient(_configuration(access_token, settings.LINE_API_DATA_BASE_URL)) as data_client,
    ):
        yield LineClient(
            api=MessagingApi(api_client),
            blob=MessagingApiBlob(data_client),
            timeout=settings.LINE_API_TIMEOUT,
        )


@contextmanager
def line_errors() -> Iterator[None]:
    """Turn SDK and network exceptions into LineApiError."""
    try:
        yield
    except LineApiError:
        raise
    except Exception as exc:
        raise error_from_exception(exc) from exc


# LINE's data host, as the SDK's MessagingApiBlob names it, for when no stand-in is configured.
LINE_DATA_HOST = "https://api-data.line.me"


@dataclass
class LineContent:
    """A customer's media as LINE answers it, not yet read: `chunks()` streams the body."""

    status: int
    content_type: str
    content_length: int | None
    response: urllib3.BaseHTTPResponse

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        yield from self.response.stream(size, decode_content=True)


@contextmanager
def line_message_content(client: LineClient, message_id: str) -> Iterator[LineContent]:
    """GET /v2/bot/message/{id}/content on the data host, with the body left unread.

    The SDK cannot stream: even `get_message_content_with_http_info(..., _preload_content=False)`
    builds its ApiResponse with `raw_data=response.data`, which reads the whole body into memory
    (line-bot-sdk 3.27, urllib3 2). So the request goes through the SDK's own ApiClient (its
    configuration, headers, token, pool and error mapping) one level below, and the response is
    closed on exit, read to the end or not. Errors come as the SDK's ApiException (wrap the call in
    line_errors())."""
    api_client = client.blob.api_client
    host = (api_client.configuration.host or LINE_DATA_HOST).rstrip("/")
    path = f"/v2/bot/message/{quote(message_id, safe='')}/content"
    response = api_client.request(
        "GET",
        host + path,
        headers={**api_client.default_headers, "Accept": "*/*"},
        _preload_content=False,
        _request_timeout=client.timeout,
    )
    try:
        length = response.headers.get("Content-Length")
        yield LineContent(
            status=response.status,
            content_type=response.headers.get("Content-Type") or "application/octet-stream",
            content_length=int(length) if length and length.isdigit() else None,
            response=response,
        )
    finally:
        # Not drained: a body left unread over the cap is dropped with its connection.
        response.close()
        response.release_conn()
