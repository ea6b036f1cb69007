"""The agent's inbox: the home page (presence, load, my conversations, consults, pick queues), the
offer notification shown on every inbox page, and the agent's preferences (language, time zone).

Each list of the home page is a fragment of its own (templates/inbox/home/), rendered into the page
at first and fetched again by htmx when a live notice says it changed. Actions answer htmx with the
fragment to show (or HX-Redirect to the conversation), and plain forms with a redirect, so that the
page also works without JavaScript. A lifecycle conflict (another agent picked first, an offer that
expired meanwhile) is 409 with the message."""

from __future__ import annotations

import datetime
import functools
import zoneinfo
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import selectors
from agents.models import Presence
from agents.services import agent_preferences_set, agent_presence_set, agent_profile_for
from omnichannel import lifecycle
from omnichannel.models import MessageKind
from routing import distribution
from routing.models import OfferState

from .common import inbox_page, render_page

CONFLICT = 409

# The five presences, in the agent's language.
PRESENCES = Presence.choices

# What a list shows for a message without text (the kind's name), in the agent's language.
KIND_LABELS = {
    MessageKind.IMAGE: gettext_lazy("Image"),
    MessageKind.VIDEO: gettext_lazy("Video"),
    MessageKind.AUDIO: gettext_lazy("Voice message"),
    MessageKind.FILE: gettext_lazy("File"),
    MessageKind.DOCUMENT: gettext_lazy("Document"),
    MessageKind.STICKER: gettext_lazy("Sticker"),
    MessageKind.LOCATION: gettext_lazy("Location"),
    MessageKind.POSTBACK: gettext_lazy("Customer action"),
    MessageKind.EVENT: gettext_lazy("Event"),
    MessageKind.UNKNOWN: gettext_lazy("Unsupported message"),
}


def message_preview(*, kind: str | None, text: str | None, unsent: bool = False) -> str:
    """One line about a message for a list: its text, else the name of its kind."""
    if unsent:
        return _("Message unsent by the customer")
    if kind is None:
        return ""
    if kind == MessageKind.TEXT or (text and kind in (MessageKind.POSTBACK, MessageKind.LOCATION)):
        return " ".join((text or "").split())[:140]
    return str(KIND_LABELS.get(kind, kind))


def age(since: datetime.datetime | None, now: datetime.datetime) -> str:
    """How long ago, for a list: "just now" under a minute, else the largest unit ("3 hours")."""
    if since is None:
        return ""
    if (now - since).total_seconds() < 60:
        return _("just now")
    return timesince(since, now, depth=1)


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _go(request: HttpRequest, url: str) -> HttpResponse:
    """Send the browser to `url`: HX-Redirect for htmx, a 303 for a plain form."""
    if _is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url, status=303)


def _presence_context(request: HttpRequest, error: str = "") -> dict[str, Any]:
    return {"load": selectors.agent_load(agent=request.user), "presences": PRESENCES, "error": error}


def _mine_context(request: HttpRequest) -> dict[str, Any]:
    conversations = list(selectors.my_conversations(agent=request.user))
    now = timezone.now()
    for conversation in conversations:
        conversation.age = age(conversation.last_activity_at, now)
        conversation.preview = message_preview(
            kind=conversation.last_kind,
            text=conversation.last_text,
            unsent=conversation.last_unsent_at is not None,
        )
    return {"conversations": conversations, "unread_total": selectors.unread_total(conversations)}


def _consults_context(request: HttpRequest) -> dict[str, Any]:
    return {"consults": list(selectors.my_consults(agent=request.user))}


def _pick_context(request: HttpRequest, error: str = "") -> dict[str, Any]:
    items = selectors.pick_items(agent=request.user)
    now = timezone.now()
    for item in items:
        item.wait = age(item.queued_at or item.created_at, now)
        item.preview = message_preview(kind=item.first_kind, text=item.first_text)
    return {
        "items": items[: selectors.PICK_ITEMS_LIMIT],
        "more_items": len(items) > selectors.PICK_ITEMS_LIMIT,
        "pick_error": error,
    }


# --- The home page and its fragments -----------------------------------------------------------------


@require_GET
@inbox_page
def home(request: HttpRequest) -> HttpResponse:
    """The agent's start page: presence and load, my conversations, consults, pick queues."""
    return render_page(
        request,
        "inbox/home.html",
        {
            "nav": "inbox",
            **_presence_context(request),
            **_mine_context(request),
            **_consults_context(request),
            **_pick_context(request),
        },
    )


@require_GET
@inbox_page
def home_presence(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/home/presence.html", _presence_context(request))


@require_GET
@inbox_page
def home_mine(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/home/mine.html", _mine_context(request))


@require_GET
@inbox_page
def home_consults(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/home/consults.html", _consults_context(request))


@require_GET
@inbox_page
def home_pick(request: HttpRequest) -> HttpResponse:
    return render(request, "inbox/home/pick.html", _pick_context(request))


@require_POST
@inbox_page
def presence_set(request: HttpRequest) -> HttpResponse:
    """Set the agent's own presence (one of the five)."""
    try:
        agent_presence_set(user=request.user, presence=request.POST.get("presence", ""), actor=request.user)
    except ValidationError:
        if not _is_htmx(request):
            return HttpResponse(_("Unknown presence."), status=400, content_type="text/plain")
        context = _presence_context(request, error=_("Unknown presence."))
        return render(request, "inbox/home/presence.html", context, status=400)
    if not _is_htmx(request):  # the inbox home's status switcher, the only form without htmx
        return _go(request, reverse("inbox:home"))
    if request.headers.get("HX-Target") == "offers":  # "Become available" on the offer notification
        return render(request, "inbox/offers.html", _offers_context(request))
    return render(request, "inbox/home/presence.html", _presence_context(request))


@require_POST
@inbox_page
def pick(request: HttpRequest, pk: int) -> HttpResponse:
    """Pick an Open item of one of the agent's pick queues: on to the conversation, or 409 with why
    (another agent picked it first, no capacity left)."""
    conversation = selectors.pick_candidate(agent=request.user, id=pk)
    if conversation is None:
        raise Http404("No such item in your queues.")
    try:
        distribution.conversation_pick(conversation=conversation, agent=request.user)
    except lifecycle.LifecycleError as refusal:
        if not _is_htmx(request):
            return HttpResponse(refusal.message, status=CONFLICT, content_type="text/plain")
        context = _pick_context(request, error=refusal.message)
        return render(request, "inbox/home/pick.html", context, status=CONFLICT)
    return _go(request, reverse("inbox:conversation", args=[conversation.pk]))


# --- Offers --------------------------------------------------------------------------------------------


def _offers_context(request: HttpRequest, error: str = "") -> dict[str, Any]:
    pending = selectors.offers_for_notification(agent=request.user)
    now = timezone.now()
    for offer in pending:
        offer.wait = age(offer.conversation.queued_at or offer.conversation.created_at, now)
        offer.preview = message_preview(kind=offer.first_kind, text=offer.first_text)
    return {
        "offers": pending,
        "now": now,
        "offer_error": error,
        "away_after_missed_offer": not pending and selectors.away_after_missed_offer(agent=request.user),
    }


@require_GET
@inbox_page
def offers(request: HttpRequest) -> HttpResponse:
    """The offer notification (every inbox page): the agent's pending offers with a countdown."""
    return render(request, "inbox/offers.html", _offers_context(request))


def _own_offer(request: HttpRequest, pk: int):
    offer = selectors.pending_offer_of(agent=request.user, id=pk)
    if offer is None:
        raise Http404("No such offer.")
    return offer


def _offer_refused(request: HttpRequest, message: str) -> HttpResponse:
    if not _is_htmx(request):
        return HttpResponse(message, status=CONFLICT, content_type="text/plain")
    return render(request, "inbox/offers.html", _offers_context(request, error=message), status=CONFLICT)


@require_POST
@inbox_page
def offer_accept(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept an offer: the conversation becomes Active with the agent, who goes to it."""
    offer = _own_offer(request, pk)
    try:
        lifecycle.offer_accept(offer_id=offer.pk, agent=request.user)
    except lifecycle.LifecycleError as refusal:
        return _offer_refused(request, refusal.message)
    return _go(request, reverse("inbox:conversation", args=[offer.conversation_id]))


@require_POST
@inbox_page
def offer_reject(request: HttpRequest, pk: int) -> HttpResponse:
    """Reject an offer: it goes to the next agent; the notification shows what is left."""
    offer = _own_offer(request, pk)
    if not lifecycle.offer_decline(offer_id=offer.pk, state=OfferState.REJECTED, agent=request.user):
        offer.refresh_from_db(fields=["state"])
        return _offer_refused(
            request,
            _("This offer is not pending any more: it was %(state)s.")
            % {"state": _(offer.get_state_display()).lower()},
        )
    if not _is_htmx(request):
        return _go(request, reverse("inbox:home"))
    return render(request, "inbox/offers.html", _offers_context(request))


# --- Preferences ---------------------------------------------------------------------------------------


@functools.cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


@require_http_methods(["GET", "POST"])
@inbox_page
def preferences(request: HttpRequest) -> HttpResponse:
    """The agent's language and time zone, saved on their profile and effective at once."""
    profile = agent_profile_for(request.user)
    errors: dict[str, list[str]] = {}
    language, time_zone = profile.language, profile.time_zone
    if request.method == "POST":
        language = request.POST.get("language", "")
        time_zone = request.POST.get("time_zone", "")
        try:
            agent_preferences_set(user=request.user, language=language, time_zone=time_zone)
        except ValidationError as invalid:
            errors = invalid.message_dict
        else:
            return HttpResponseRedirect(reverse("inbox:preferences") + "?saved=1", status=303)
    response = render_page(
        request,
        "inbox/preferences.html",
        {
            "languages": settings.LANGUAGES,
            "time_zones": time_zones(),
            "language": language,
            "time_zone": time_zone,
            "default_time_zone": settings.TIME_ZONE,
            "errors": errors,
            "saved": "saved" in request.GET and request.method == "GET",
        },
    )
    if errors:
        response.status_code = 400
    return response


urlpatterns = [
    path("", home, name="home"),
    path("home/presence/", home_presence, name="home-presence"),
    path("home/mine/", home_mine, name="home-mine"),
    path("home/consults/", home_consults, name="home-consults"),
    path("home/pick/", home_pick, name="home-pick"),
    path("presence/", presence_set, name="presence"),
    path("pick/<int:pk>/", pick, name="pick"),
    path("offers/", offers, name="offers"),
    path("offers/<int:pk>/accept/", offer_accept, name="offer-accept"),
    path("offers/<int:pk>/reject/", offer_reject, name="offer-reject"),
    path("preferences/", preferences, name="preferences"),
]
