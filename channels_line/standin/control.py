"""The control API under /_standin/: what tests, the demo and the phone page use to set the stand-in
up, make LINE users act, and read what the business sent. JSON in and out, no authentication; the
server answers it on loopback only.

Errors are `{"error": "..."}` with 400 (the request is wrong) or 404 (no such channel or record).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from . import customer
from .customer import ActionError, UploadedFile
from .protocol import BadRequest, StandinRequest, StandinResponse
from .state import Channel, StandinState
from .webhook import Delivery, deliver, webhook_body

logger = logging.getLogger(__name__)

PREFIX = "/_standin"


class NotFound(Exception):
    pass


ControlHandler = Callable[["ControlApi", StandinRequest, dict[str, str]], StandinResponse]


class ControlApi:
    """Answers /_standin/ requests."""

    def __init__(self, state: StandinState, *, openapi_dir: Path | None) -> None:
        self.state = state
        # None when the spec folder is absent: webhook bodies are then checked against line-bot-sdk's models.
        self.openapi_dir = openapi_dir

    def handle(self, request: StandinRequest) -> StandinResponse:
        for method, pattern, handler in _ROUTES:
            found = pattern.match(request.path)
            if found and method == request.method:
                try:
                    return handler(self, request, found.groupdict())
                except (BadRequest, ActionError, ValueError) as exc:
                    return _error(400, getattr(exc, "message", None) or str(exc))
                except NotFound as exc:
                    return _error(404, str(exc))
        return _error(404, f"no control endpoint {request.method} {request.path}")

    # --- stand-in ------------------------------------------------------------------------------------

    def health(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return _ok(
            {
                "ok": True,
                "validation": "openapi" if self.openapi_dir is not None else "line-bot-sdk",
                "now_ms": self.state.now_ms(),
                "channels": len(self.state.channels),
            }
        )

    def reset(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        self.state.reset(keep_channels=bool(request.json_object().get("keep_channels", False)))
        return _ok({"ok": True})

    def settings_get(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return _ok(self._settings())

    def settings_update(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        body = request.json_object()
        with self.state.lock:
            for name in ("reply_token_ttl_seconds", "webhook_timeout_seconds"):
                if name in body:
                    value = body[name]
                    if not isinstance(value, int | float) or value <= 0:
                        raise BadRequest(f"{name} must be a positive number of seconds")
                    setattr(self.state, name, float(value))
        return _ok(self._settings())

    def clock_advance(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        seconds = request.json_object().get("advance_seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise BadRequest("advance_seconds must be a number >= 0")
        self.state.advance_clock(float(seconds))
        return _ok({"now_ms": self.state.now_ms(), "offset_seconds": self.state.clock_offset_seconds})

    def faults_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            return _ok({"faults": [fault.as_json() for fault in self.state.faults]})

    def faults_add(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        body = request.json_object()
        if not isinstance(body.get("path"), str) or not body["path"]:
            raise BadRequest("path (a path prefix, or a regular expression with regex: true) is required")
        fault = self.state.fault_add(
            path=body["path"],
            regex=bool(body.get("regex", False)),
            method=body.get("method"),
            status=body.get("status"),
            body=body.get("body"),
            delay_seconds=float(body.get("delay_seconds", 0) or 0),
            times=int(body.get("times", 1)),
        )
        return _ok(fault.as_json(), status=201)

    def faults_clear(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            self.state.faults.clear()
        return _ok({"faults": []})

    # --- channels and users --------------------------------------------------------------------------

    def channels_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            return _ok({"channels": [channel.as_json() for channel in self.state.channels.values()]})

    def channel_upsert(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        body = request.json_object()
        fields = {
            name: _optional_str(body, name)
            for name in (
                "channel_id",
                "channel_secret",
                "channel_access_token",
                "webhook_url",
                "bot_user_id",
                "bot_basic_id",
                "bot_display_name",
                "bot_picture_url",
            )
        }
        quota = body.get("monthly_quota", ...)
        channel = self.state.channel_upsert(**fields, monthly_quota=quota)
        return _ok(channel.as_json(), status=201)

    def channel_detail(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            return _ok(self._channel(params).as_json())

    def users_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            channel = self._channel(params)
            return _ok({"users": [user.as_json() for user in channel.users.values()]})

    def user_create(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        body = request.json_object()
        channel = self._channel(params)
        user = self.state.user_create(
            channel,
            **{
                name: _optional_str(body, name)
                for name in ("user_id", "display_name", "picture_url", "status_message", "language")
            },
        )
        return _ok(user.as_json(), status=201)

    # --- customers act ---------------------------------------------------------------------------------

    def actions(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        channel = self._channel(params)
        actions, files, options = _read_actions(request)
        plan = customer.plan_actions(self.state, channel, actions, files)
        return self._send(channel, plan.events, options, plan=plan)

    def redeliver(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        channel = self._channel(params)
        body = request.json_object()
        event_ids = body.get("webhook_event_ids") or [body.get("webhook_event_id")]
        if not all(isinstance(event_id, str) and event_id for event_id in event_ids):
            raise BadRequest("webhook_event_id (or a list webhook_event_ids) is required")
        with self.state.lock:
            events = customer.redelivered_events(channel, event_ids)
        return self._send(channel, events, body)

    def verify(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        # The console's Verify button: a signed body without events.
        return self._send(self._channel(params), [], request.json_object())

    def _send(
        self,
        channel: Channel,
        events: list[dict[str, Any]],
        options: dict[str, Any],
        *,
        plan: customer.ActionPlan | None = None,
    ) -> StandinResponse:
        body = webhook_body(channel.bot_user_id, events)
        if self.openapi_dir is not None:
            from channels_line.openapi import validate_webhook_body

            problems = validate_webhook_body(body, directory=self.openapi_dir)
            checked_against = "webhook.yml"
        else:
            from channels_line.sdk_validation import sdk_webhook_body_problems

            problems = [str(problem) for problem in sdk_webhook_body_problems(body)]
            checked_against = "line-bot-sdk's webhook models"
        if problems:
            # Nothing is committed or sent: the body would not be one LINE sends.
            return _ok(
                {
                    "error": f"the webhook body does not match {checked_against}",
                    "problems": problems,
                    "body": body,
                },
                status=400,
            )
        if plan is not None:
            customer.commit(self.state, channel, plan)
        if options.get("deliver", True) is False:
            delivery = Delivery(
                url="",
                body=body,
                signature=_signature(channel, body),
                status=None,
                latency_ms=0.0,
                error="not delivered (deliver: false)",
                response_body="",
                delivered_at_ms=self.state.now_ms(),
            )
        else:
            delivery = deliver(
                url=channel.webhook_url,
                channel_secret=channel.channel_secret,
                body=body,
                timeout=self.state.webhook_timeout_seconds,
                now_ms=self.state.now_ms(),
            )
        record = delivery.as_json()
        if delivery.url or options.get("deliver", True) is not False:
            with self.state.lock:
                record["seq"] = self.state.next_sequence()
                channel.deliveries.append(record)
        if delivery.error and delivery.url:
            logger.warning(
                "Stand-in webhook delivery to %s failed for channel %s: %s",
                delivery.url,
                channel.channel_id,
                delivery.error,
            )
        return _ok(
            {
                "body": body,
                "events": events,
                "signature": delivery.signature,
                "delivery": record,
                "message_ids": [event["message"]["id"] for event in events if "message" in event],
                "reply_tokens": [event["replyToken"] for event in events if "replyToken" in event],
                "webhook_event_ids": [event["webhookEventId"] for event in events],
            }
        )

    # --- what the business did -------------------------------------------------------------------------

    def sent_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return self._records(request, params, "sent_messages", "messages")

    def deliveries_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return self._records(request, params, "deliveries", "deliveries")

    def loading_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return self._records(request, params, "loading_calls", "loading")

    def read_marks_list(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return self._records(request, params, "read_marks", "read_marks")

    def timeline(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        return self._records(request, params, "timeline", "entries")

    def content(self, request: StandinRequest, params: dict[str, str]) -> StandinResponse:
        with self.state.lock:
            content = self._channel(params).contents.get(params["message_id"])
            if content is None:
                raise NotFound(f"no content for message {params['message_id']}")
            return StandinResponse(status=200, body=content.data, content_type=content.content_type)

    def _records(
        self, request: StandinRequest, params: dict[str, str], attribute: str, key: str
    ) -> StandinResponse:
        """A channel's records, filtered by ?chat_id=, ?user_id=, ?method= and ?after=<seq>."""
        after = int(request.query_value("after") or 0)
        filters = {
            name: request.query_value(name)
            for name in ("chat_id", "user_id", "method")
            if request.query_value(name)
        }
        with self.state.lock:
            records = [
                record
                for record in getattr(self._channel(params), attribute)
                if record.get("seq", 0) > after
                and all(record.get(name) == value for name, value in filters.items())
            ]
            return _ok({key: json.loads(json.dumps(records))})

    def _channel(self, params: dict[str, str]) -> Channel:
        channel = self.state.channels.get(params["channel_id"])
        if channel is None:
            raise NotFound(f"no channel {params['channel_id']!r}; register it with POST {PREFIX}/channels")
        return channel

    def _settings(self) -> dict[str, Any]:
        return {
            "reply_token_ttl_seconds": self.state.reply_token_ttl_seconds,
            "webhook_timeout_seconds": self.state.webhook_timeout_seconds,
        }


def _read_actions(
    request: StandinRequest,
) -> tuple[list[dict[str, Any]], dict[str, UploadedFile], dict[str, Any]]:
    """Actions from a JSON body (one action, or {"actions": [...]}) or from multipart/form-data (an
    `action` field holding the action as JSON, or plain fields, plus file parts)."""
    content_type = request.header("Content-Type")
    if content_type.lower().startswith("multipart/form-data"):
        fields, files = _parse_multipart(content_type, request.body)
        action: dict[str, Any] = {}
        if "action" in fields:
            try:
                action = json.loads(fields.pop("action"))
            except json.JSONDecodeError as exc:
                raise BadRequest(f"the 'action' field is not valid JSON: {exc}") from exc
            if not isinstance(action, dict):
                raise BadRequest("the 'action' field must hold a JSON object")
        action.update(fields)
        return [action], files, action
    body = request.json_object()
    if "actions" in body:
        if not isinstance(body["actions"], list):
            raise BadRequest("actions must be a list")
        return body["actions"], {}, body
    return [body], {}, body


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    # email's parser reads MIME multipart without the cgi module (gone in Python 3.13).
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest("the multipart body could not be read")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        file_name = part.get_filename()
        if file_name is not None:
            files[str(name)] = UploadedFile(
                file_name=file_name, content_type=part.get_content_type(), data=data
            )
        else:
            fields[str(name)] = data.decode(part.get_content_charset() or "utf-8")
    return fields, files


def _signature(channel: Channel, body: dict[str, Any]) -> str:
    from .webhook import encode_body, signature

    return signature(channel.channel_secret, encode_body(body))


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _ok(payload: Any, status: int = 200) -> StandinResponse:
    return StandinResponse.json(status, payload)


def _error(status: int, message: str) -> StandinResponse:
    return StandinResponse.json(status, {"error": message})


_CHANNEL = rf"^{PREFIX}/channels/(?P<channel_id>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], ControlHandler]] = [
    ("GET", re.compile(rf"^{PREFIX}/health$"), ControlApi.health),
    ("POST", re.compile(rf"^{PREFIX}/reset$"), ControlApi.reset),
    ("GET", re.compile(rf"^{PREFIX}/settings$"), ControlApi.settings_get),
    ("POST", re.compile(rf"^{PREFIX}/settings$"), ControlApi.settings_update),
    ("POST", re.compile(rf"^{PREFIX}/clock$"), ControlApi.clock_advance),
    ("GET", re.compile(rf"^{PREFIX}/faults$"), ControlApi.faults_list),
    ("POST", re.compile(rf"^{PREFIX}/faults$"), ControlApi.faults_add),
    ("DELETE", re.compile(rf"^{PREFIX}/faults$"), ControlApi.faults_clear),
    ("GET", re.compile(rf"^{PREFIX}/channels$"), ControlApi.channels_list),
    ("POST", re.compile(rf"^{PREFIX}/channels$"), ControlApi.channel_upsert),
    ("GET", re.compile(rf"{_CHANNEL}$"), ControlApi.channel_detail),
    ("GET", re.compile(rf"{_CHANNEL}/users$"), ControlApi.users_list),
    ("POST", re.compile(rf"{_CHANNEL}/users$"), ControlApi.user_create),
    ("POST", re.compile(rf"{_CHANNEL}/actions$"), ControlApi.actions),
    ("POST", re.compile(rf"{_CHANNEL}/redeliver$"), ControlApi.redeliver),
    ("POST", re.compile(rf"{_CHANNEL}/verify$"), ControlApi.verify),
    ("GET", re.compile(rf"{_CHANNEL}/sent$"), ControlApi.sent_list),
    ("GET", re.compile(rf"{_CHANNEL}/deliveries$"), ControlApi.deliveries_list),
    ("GET", re.compile(rf"{_CHANNEL}/loading$"), ControlApi.loading_list),
    ("GET", re.compile(rf"{_CHANNEL}/read-marks$"), ControlApi.read_marks_list),
    ("GET", re.compile(rf"{_CHANNEL}/timeline$"), ControlApi.timeline),
    ("GET", re.compile(rf"{_CHANNEL}/content/(?P<message_id>[^/]+)$"), ControlApi.content),
]
