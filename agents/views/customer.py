"""The customer summary pane of a conversation. (Placeholder view: being built.)"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from .common import inbox_page


@inbox_page
def customer_pane(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse("")


urlpatterns = [path("c/<int:pk>/customer/", customer_pane, name="customer")]
