from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from . import health, selectors
from .files import attachment_file_response, attachment_from_token
from .models import Attachment


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests; no dependency is touched."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker are reachable: 200, or 503 naming what is down (the cause is logged)."""
    checks = {"database": health.database_check(), "broker": health.broker_check()}
    ready = all(check.ok for check in checks.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
    }
    heartbeat = selectors.worker_heartbeat_latest() if checks["database"].ok else None
    body["worker_last_seen"] = heartbeat.isoformat() if heartbeat else None
    return JsonResponse(body, status=200 if ready else 503)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Where signing in lands: supervisors (and administrators) on their dashboard, agents on their
    inbox; a user whose role does not see conversations on this page (their roles, the links)."""
    if selectors.viewer_sees_all_conversations(viewer=request.user):
        return redirect("inbox:dashboard")
    if request.user.is_active and request.user.has_perm(selectors.CONVERSATION_VIEW_PERMISSION):
        return redirect("inbox:home")
    return render(request, "home.html", {"roles": selectors.user_roles(user=request.user)})


@require_safe
@login_required
def attachment_open(request: HttpRequest, pk: int) -> HttpResponseBase:
    """A customer's or an agent's file, for a signed-in user who may see its conversation (the same
    rule as the conversation: selectors.conversations_visible); 404 for anyone else and for IDs
    that do not exist, alike. `?download=1` asks for a download even for an inline type."""
    attachment = selectors.attachment_stored_for_viewer(viewer=request.user, attachment_id=pk)
    if attachment is None:
        raise Http404("No such file.")
    return attachment_file_response(attachment=attachment, download="download" in request.GET)


@require_safe
def attachment_download(request: HttpRequest, token: str) -> HttpResponseBase:
    """Serve a file behind a signed, expiring link (documents and media sent to customers), with the
    same headers as the signed-in view."""
    try:
        attachment = attachment_from_token(token)
    except signing.SignatureExpired:
        return HttpResponse("This link has expired.", status=410, content_type="text/plain")
    except (signing.BadSignature, Attachment.DoesNotExist):
        raise Http404("No such file.") from None
    if not attachment.file:
        raise Http404("No such file.")
    return attachment_file_response(attachment=attachment)
