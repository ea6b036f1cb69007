"""The inbox pages, under /inbox/ (namespace "inbox"): each page module lists its own routes."""

from __future__ import annotations

from .views import live

app_name = "inbox"

urlpatterns = [*live.urlpatterns]
