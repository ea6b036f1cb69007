"""What every inbox page needs: sign-in, the agent role, and the live cursor."""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from omnichannel import live
from omnichannel.selectors import CONVERSATION_VIEW_PERMISSION, viewer_sees_all_conversations


def inbox_page(view):
    """A page or fragment of the inbox: signed-in users whose role lets them see conversations
    (agents, supervisors, administrators); anyone else gets 403."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_active and request.user.has_perm(CONVERSATION_VIEW_PERMISSION)):
            raise PermissionDenied("Your role does not include the inbox.")
        return view(request, *args, **kwargs)

    return wrapped


def supervisor_page(view):
    """A page of supervisors and administrators only (403 for agents)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not viewer_sees_all_conversations(viewer=request.user):
            raise PermissionDenied("Only supervisors see this page.")
        return view(request, *args, **kwargs)

    return wrapped


def render_page(request: HttpRequest, template: str, context: dict[str, Any] | None = None) -> HttpResponse:
    """Render a full inbox page (templates/inbox/base.html): adds the live cursor (the page listens
    for changes from there: nothing between rendering and listening is missed) and the role."""
    return render(
        request,
        template,
        {
            "live_cursor": live.hub.cursor(),
            "is_supervisor": viewer_sees_all_conversations(viewer=request.user),
            **(context or {}),
        },
    )
