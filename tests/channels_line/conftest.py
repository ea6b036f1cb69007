"""Fixtures for the LINE tests: an account made through the service, and a signed webhook poster."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client
from django.urls import reverse

from channels_line.services import line_account_create
from omnichannel.models import MessagingAccount
from tests.channels_line.payloads import body_bytes, sign


def new_secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def line_credentials() -> dict[str, str]:
    return {
        "channel_id": str(secrets.randbelow(10**9) + 10**9),
        "channel_secret": new_secret(),
        "channel_access_token": secrets.token_urlsafe(48),
    }


@pytest.fixture
def line_account(db, line_credentials) -> MessagingAccount:
    return line_account_create(name=f"Shop {secrets.token_hex(3)}", **line_credentials)


@pytest.fixture
def no_line(settings):
    """Point the LINE hosts at a closed loopback port: calls fail fast, nothing leaves the machine."""
    settings.LINE_API_BASE_URL = settings.LINE_API_DATA_BASE_URL = "http://127.0.0.1:1"
    settings.LINE_API_TIMEOUT = 2


def post_webhook(
    client: Client,
    account: MessagingAccount,
    payload: dict | bytes,
    *,
    secret: str | None = None,
    signature: str | None = None,
):
    body = payload if isinstance(payload, bytes) else body_bytes(payload)
    headers = {}
    if signature is None:
        signature = sign(body, secret if secret is not None else account.line.channel_secret)
    if signature:
        headers["HTTP_X_LINE_SIGNATURE"] = signature
    return client.post(
        reverse("line-webhook", args=[account.pk]),
        data=body,
        content_type="application/json; charset=utf-8",
        **headers,
    )


@pytest.fixture
def enqueued(monkeypatch) -> list[list[int]]:
    """What the webhook intake queues for processing, after its commit, kept here instead of sent
    (for tests where no worker runs)."""
    from channels_line.services import intake

    calls: list[list[int]] = []

    def capture(pks) -> bool:
        calls.append(list(pks))
        return True

    monkeypatch.setattr(intake, "processing_enqueue", capture)
    return calls


@pytest.fixture(autouse=True)
def _fresh_webhook_account_cache():
    from channels_line.services.intake import webhook_account_cache_clear

    webhook_account_cache_clear()
    yield
    webhook_account_cache_clear()
