"""The supervisors' live dashboard (/inbox/dashboard/): queues, agents, LINE message quotas and the
conversations in progress.

The page renders its parts once; each part is also a fragment of its own that htmx fetches again
when the page hears of a change it shows (live notices for supervisors: queue, agent, conversation;
reset). The quotas come in a fragment fetched after the page, so a slow LINE never delays it."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from agents import supervision
from channels_line.services.quota import message_quotas

from .common import render_page, supervisor_page


def _queues_context() -> dict[str, Any]:
    queues = supervision.queues_summary()
    return {
        "queues": queues,
        "queues_open_max": max((summary.open_items for summary in queues), default=0),
        "queues_open_total": sum(summary.open_items for summary in queues),
    }


def _agents_context() -> dict[str, Any]:
    agents = supervision.agents_summary()
    return {
        "agents": agents,
        "agents_total": len(agents),
        "presence_shares": supervision.presence_shares(agents),
    }


def _conversations_context(request: HttpRequest) -> dict[str, Any]:
    return {
        "conversations_page": supervision.conversations_in_progress(
            viewer=request.user, page_number=request.GET.get("page") or 1
        ),
        "now": timezone.now(),
    }


@supervisor_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render_page(
        request,
        "inbox/dashboard.html",
        {
            "nav": "dashboard",
            **_queues_context(),
            **_agents_context(),
            **_conversations_context(request),
        },
    )


@supervisor_page
def dashboard_queues(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/dashboard/queues.html", _queues_context())


@supervisor_page
def dashboard_agents(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/dashboard/agents.html", _agents_context())


@supervisor_page
def dashboard_conversations(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/dashboard/conversations.html", _conversations_context(request))


@supervisor_page
def dashboard_quotas(request: HttpRequest) -> HttpResponse:
    """LINE's monthly message quota of every account: cached for five minutes (LINE is asked only
    when the cached answer is older)."""
    return render(request, "inbox/dashboard/quotas.html", {"quotas": message_quotas()})


urlpatterns = [
    path("dashboard/", dashboard, name="dashboard"),
    path("dashboard/queues/", dashboard_queues, name="dashboard-queues"),
    path("dashboard/agents/", dashboard_agents, name="dashboard-agents"),
    path("dashboard/conversations/", dashboard_conversations, name="dashboard-conversations"),
    path("dashboard/quotas/", dashboard_quotas, name="dashboard-quotas"),
]
