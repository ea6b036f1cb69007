"""A small client of the stand-in's control API, for tests, demo seeding and scripts.

control = StandinControl(server.base_url)
channel = control.channel_register(webhook_url="http://127.0.0.1:8000/line/webhook/...")
user = control.user_create(channel["channel_id"], display_name="Aiko")
result = control.act(channel["channel_id"], {"type": "text", "user_id": user["user_id"], "text": "Hi"})
control.sent(channel["channel_id"], chat_id=user["user_id"])
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .control import PREFIX

# The stand-in is on loopback; an http_proxy from the environment must not get in the way.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StandinControlError(RuntimeError):
    """The control API answered an error; `status` and `payload` say which."""

    def __init__(self, status: int, payload: Any) -> None:
        message = payload.get("error") if isinstance(payload, dict) else payload
        super().__init__(f"LINE stand-in control API answered {status}: {message}")
        self.status = status
        self.payload = payload


class StandinControl:
    """Calls /_standin/ on a running stand-in. Every method returns the decoded JSON answer."""

    def __init__(self, base_url: str, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        # Above the stand-in's webhook timeout, since an action waits for the webhook's answer.
        self.timeout = timeout

    def request(self, method: str, path: str, payload: Any = None, **query: Any) -> Any:
        """One control call; raises StandinControlError on a 4xx/5xx answer."""
        url = f"{self.base_url}{PREFIX}{path}"
        filtered = {name: value for name, value in query.items() if value is not None}
        if filtered:
            url += "?" + urllib.parse.urlencode(filtered)
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(  # noqa: S310 - the stand-in's own http URL
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
            except json.JSONDecodeError:
                answer = raw.decode("utf-8", errors="replace")
            raise StandinControlError(exc.code, answer) from None

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def reset(self, *, keep_channels: bool = False) -> dict[str, Any]:
        return self.request("POST", "/reset", {"keep_channels": keep_channels})

    def settings(self, **values: float) -> dict[str, Any]:
        """Read, or change, reply_token_ttl_seconds and webhook_timeout_seconds."""
        return self.request("POST", "/settings", values) if values else self.request("GET", "/settings")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self.request("POST", "/clock", {"advance_seconds": seconds})

    def fault_add(
        self,
        path: str,
        *,
        status: int | None = None,
        delay_seconds: float = 0.0,
        times: int = 1,
        regex: bool = False,
        method: str | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        return self.request(
            "POST",
            "/faults",
            {
                "path": path,
                "status": status,
                "delay_seconds": delay_seconds,
                "times": times,
                "regex": regex,
                "method": method,
                "body": body,
            },
        )

    def faults(self) -> list[dict[str, Any]]:
        return self.request("GET", "/faults")["faults"]

    def faults_clear(self) -> dict[str, Any]:
        return self.request("DELETE", "/faults")

    def channel_register(self, **fields: Any) -> dict[str, Any]:
        """Register (or update, when channel_id is known) a channel; see ControlApi.channel_upsert."""
        return self.request("POST", "/channels", fields)

    def channels(self) -> list[dict[str, Any]]:
        return self.request("GET", "/channels")["channels"]

    def user_create(self, channel_id: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", f"/channels/{channel_id}/users", fields)

    def users(self, channel_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/channels/{channel_id}/users")["users"]

    def act(self, channel_id: str, *actions: dict[str, Any], deliver: bool = True) -> dict[str, Any]:
        """Make LINE users act; several actions go in one webhook body."""
        payload: dict[str, Any] = {"actions": list(actions), "deliver": deliver}
        return self.request("POST", f"/channels/{channel_id}/actions", payload)

    def redeliver(self, channel_id: str, *webhook_event_ids: str) -> dict[str, Any]:
        return self.request(
            "POST", f"/channels/{channel_id}/redeliver", {"webhook_event_ids": list(webhook_event_ids)}
        )

    def verify(self, channel_id: str) -> dict[str, Any]:
        return self.request("POST", f"/channels/{channel_id}/verify", {})

    def sent(self, channel_id: str, **filters: Any) -> list[dict[str, Any]]:
        """Messages the business sent (push and reply), oldest first; filters: chat_id, user_id,
        method, after."""
        return self.request("GET", f"/channels/{channel_id}/sent", **filters)["messages"]

    def deliveries(self, channel_id: str, **filters: Any) -> list[dict[str, Any]]:
        return self.request("GET", f"/channels/{channel_id}/deliveries", **filters)["deliveries"]

    def loading_calls(self, channel_id: str, **filters: Any) -> list[dict[str, Any]]:
        return self.request("GET", f"/channels/{channel_id}/loading", **filters)["loading"]

    def read_marks(self, channel_id: str, **filters: Any) -> list[dict[str, Any]]:
        return self.request("GET", f"/channels/{channel_id}/read-marks", **filters)["read_marks"]

    def timeline(self, channel_id: str, **filters: Any) -> list[dict[str, Any]]:
        return self.request("GET", f"/channels/{channel_id}/timeline", **filters)["entries"]
