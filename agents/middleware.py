"""The signed-in agent's own language and time zone, for every page they open."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation

from .models import AgentProfile


def agent_preferences(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Activate the language and time zone of the signed-in user's agent profile (one query, only for
    pages of signed-in users; LINE's webhook and the API by token never reach the session). Without a
    choice, LocaleMiddleware's (the browser's language) and TIME_ZONE stay."""

    def middleware(request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        zone = None
        if user is not None and "_auth_user_id" in getattr(request, "session", {}) and user.is_authenticated:
            preferences = AgentProfile.objects.filter(user=user).values("language", "time_zone").first()
            if preferences:
                if preferences["language"]:
                    translation.activate(preferences["language"])
                    request.LANGUAGE_CODE = preferences["language"]
                if preferences["time_zone"]:
                    try:
                        zone = zoneinfo.ZoneInfo(preferences["time_zone"])
                    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                        zone = None
        if zone is not None:
            timezone.activate(zone)
        try:
            return get_response(request)
        finally:
            if zone is not None:
                timezone.deactivate()

    return middleware
