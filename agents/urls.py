"""The inbox pages, under /inbox/ (namespace "inbox"): each page module lists its own routes."""

from __future__ import annotations

from .views import actions, conversation, customer, inbox, live, supervisor

app_name = "inbox"

urlpatterns = [
    *inbox.urlpatterns,
    *conversation.urlpatterns,
    *actions.urlpatterns,
    *customer.urlpatterns,
    *supervisor.urlpatterns,
    *live.urlpatterns,
]
