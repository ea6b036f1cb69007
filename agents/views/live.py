"""GET /inbox/live/: the Server-Sent Events stream of an open page (omnichannel.live)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from omnichannel import live
from omnichannel.selectors import conversation_get, viewer_sees_all_conversations
from routing.selectors import member_queue_ids

from .common import inbox_page


@require_GET
@inbox_page
def live_stream(request: HttpRequest) -> HttpResponse:
    """The changes for the signed-in user: their offers, their conversations, their presence and
    load, the pick queues they belong to, the conversation the page shows (`?conversation=ID`, which
    they must be allowed to see: 404 otherwise), and for supervisors what dashboards show.

    Starts after the browser's Last-Event-ID (a reconnection) or `?since=` (the cursor of the page
    as rendered), replaying what came meanwhile."""
    conversation_ids: frozenset[int] = frozenset()
    if raw := request.GET.get("conversation"):
        conversation = conversation_get(viewer=request.user, id=_integer(raw))
        if conversation is None:
            raise Http404("No such conversation.")
        conversation_ids = frozenset({conversation.pk})
    audience = live.Audience(
        agent_id=request.user.pk,
        supervisor=viewer_sees_all_conversations(viewer=request.user),
        conversation_ids=conversation_ids,
        queue_ids=frozenset(member_queue_ids(user=request.user)),
    )
    after = request.headers.get("Last-Event-ID") or request.GET.get("since")
    return live.stream_response(audience=audience, after=_integer(after) if after else None)


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise Http404("Not a number.") from None


urlpatterns = [path("live/", live_stream, name="live")]
