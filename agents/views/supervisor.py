"""The supervisors' live dashboard. (Placeholder view: being built.)"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from .common import render_page, supervisor_page


@supervisor_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render_page(request, "inbox/placeholder.html", {"nav": "dashboard"})


urlpatterns = [path("dashboard/", dashboard, name="dashboard")]
