"""The request and response shapes the stand-in's handlers work with, free of http.server details."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any


class BadRequest(Exception):
    """The request cannot be understood (not JSON, wrong shape); answered 400 with `message`."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


@dataclass
class StandinRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client_host: str

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def query_value(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body as JSON; an empty body reads as {}."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}") from exc

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        return body


@dataclass
class StandinResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> StandinResponse:
        return cls(
            status=status,
            body=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
            headers=dict(headers or {}),
        )


def line_error(
    status: int, message: str, details: list[dict[str, str]] | None = None, **extra: Any
) -> StandinResponse:
    """LINE's error body: {"message": ..., "details": [{"message": ..., "property": ...}]}; LINE
    leaves `details` out when it is empty."""
    payload: dict[str, Any] = {"message": message}
    if details:
        payload["details"] = details
    payload.update(extra)
    return StandinResponse.json(status, payload)
