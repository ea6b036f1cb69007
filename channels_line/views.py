"""The LINE webhook: `POST /webhooks/line/<account uuid>/`.

Verifies the signature on the raw body, stores each event once and answers; workers do the rest."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .services.intake import WebhookRejected, account_for_webhook, line_webhook_receive

logger = logging.getLogger(__name__)


def _answer(status: int, reason: str) -> JsonResponse:
    return JsonResponse(
        {"status": "rejected" if status < 500 else "unavailable", "reason": reason}, status=status
    )


@csrf_exempt
@require_POST
def line_webhook(request: HttpRequest, account_id: str) -> HttpResponse:
    cap = settings.LINE_WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = request.read(cap + 1) if declared <= cap else b""
    if declared > cap or len(body) > cap:
        # Not read (so not verified): LINE's deliveries are far smaller. Logged for the operator.
        logger.warning("LINE webhook body over LINE_WEBHOOK_MAX_BODY_BYTES refused account=%s", account_id)
        return _answer(413, f"body larger than {cap} bytes")
    try:
        account = account_for_webhook(account_id=account_id)
        receipt = line_webhook_receive(
            account=account, body=body, signature=request.headers.get("x-line-signature")
        )
    except WebhookRejected as rejected:
        return _answer(rejected.status, rejected.reason)
    except DatabaseError:
        # Nothing was kept: 503 makes LINE redeliver (with webhook redelivery on).
        logger.exception("LINE webhook: database unavailable account=%s", account_id)
        return _answer(503, "temporarily unavailable")
    return JsonResponse({"status": "ok", "stored": receipt.stored, "duplicates": receipt.duplicates})
