"""The agent's inbox: home, offers, presence, preferences. (Placeholder views: being built.)"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from .common import inbox_page, render_page


@inbox_page
def home(request: HttpRequest) -> HttpResponse:
    return render_page(request, "inbox/placeholder.html", {"nav": "inbox"})


@inbox_page
def offers(request: HttpRequest) -> HttpResponse:
    return HttpResponse("")


@inbox_page
def preferences(request: HttpRequest) -> HttpResponse:
    return render_page(request, "inbox/placeholder.html")


urlpatterns = [
    path("", home, name="home"),
    path("offers/", offers, name="offers"),
    path("preferences/", preferences, name="preferences"),
]
