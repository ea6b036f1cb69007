"""The conversation page. (Placeholder view: being built.)"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from .common import inbox_page, render_page


@inbox_page
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    return render_page(request, "inbox/placeholder.html")


urlpatterns = [path("c/<int:pk>/", conversation, name="conversation")]
