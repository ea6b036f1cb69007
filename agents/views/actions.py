"""The actions of the conversation page (its toolbar: templates/inbox/conversation/actions.html): end
(wrap-up, with notes), close, move to waiting, resume, transfer (to an agent or a queue, with a note)
and consult another agent (read-only for them, until the requester or the consultant ends it).

Access as in the REST API's actions (omnichannel/api.py): a conversation the viewer may not see is 404;
end, wait, resume and consult belong to its agent, transfer and close to its agent or a supervisor
(403 with the reason otherwise); a refusal of the lifecycle is 409 with its message. Every action is
a POST (CSRF-protected). On success htmx gets HX-Refresh (the page shows the new state; the lifecycle
has told the other pages already) or HX-Redirect to the inbox when the viewer cannot see the
conversation any more (transferred away); a plain form gets the same as a 303. A refusal is rendered
into the toolbar for htmx (static/inbox/actions.js lets htmx show 4xx answers there), or as a small
page for a plain form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from agents.roles import AGENT
from omnichannel import consults, lifecycle
from omnichannel.models import Conversation, ConversationConsult
from omnichannel.selectors import conversation_get, viewer_sees_all_conversations
from routing import distribution
from routing.models import Queue

from .common import inbox_page, render_page

CHANGE_PERMISSION = "omnichannel.change_conversation"

# Who may take each action: its agent only, or its agent and supervisors (as the REST API).
BY_SUPERVISORS_TOO = frozenset({lifecycle.TRANSFER, lifecycle.CLOSE})
CONSULT = "consult"
TOOLBAR_ACTIONS = (
    lifecycle.END,
    lifecycle.WAIT,
    lifecycle.RESUME,
    lifecycle.TRANSFER,
    lifecycle.CLOSE,
    CONSULT,
)

NOT_YOURS = {
    lifecycle.END: gettext_lazy("Only the agent of this conversation can end it."),
    lifecycle.WAIT: gettext_lazy("Only the agent of this conversation can move it to waiting."),
    lifecycle.RESUME: gettext_lazy("Only the agent of this conversation can resume it."),
    lifecycle.TRANSFER: gettext_lazy("Only the agent of this conversation or a supervisor can transfer it."),
    lifecycle.CLOSE: gettext_lazy("Only the agent of this conversation or a supervisor can close it."),
    CONSULT: gettext_lazy("Only the agent of this conversation can ask another agent for a consult."),
}


def actions_allowed(*, viewer: Any, conversation: Conversation, is_supervisor: bool) -> dict[str, bool]:
    """Which toolbar actions `viewer` may take now: their role (as the REST API) and the state
    (lifecycle.TRANSITIONS; a consult while Active or Waiting)."""
    allowed = {}
    for action in TOOLBAR_ACTIONS:
        if action == CONSULT:
            possible = conversation.state in consults.CONSULT_STATES
        else:
            possible = conversation.state in lifecycle.TRANSITIONS[action].sources
        allowed[action] = possible and _may(viewer, conversation, action, is_supervisor)
    return allowed


def _may(viewer: Any, conversation: Conversation, action: str, is_supervisor: bool) -> bool:
    if not viewer.has_perm(CHANGE_PERMISSION):
        return False
    return conversation.assigned_agent_id == viewer.pk or (action in BY_SUPERVISORS_TOO and is_supervisor)


# --- Forms (parsing only) -----------------------------------------------------------------------------


def _agents() -> Any:
    return get_user_model().objects.filter(is_active=True, groups__name=AGENT)


class EndForm(forms.Form):
    notes = forms.CharField(required=False, max_length=10_000)


class TransferForm(forms.Form):
    queue = forms.ModelChoiceField(queryset=Queue.objects.all(), required=False)
    agent = forms.ModelChoiceField(queryset=_agents(), required=False)
    note = forms.CharField(required=False, max_length=2000)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors and data.get("queue") is None and data.get("agent") is None:
            raise ValidationError(_("Choose the queue or the agent to transfer to (or both)."))
        return data


class ConsultForm(forms.Form):
    consultant = forms.ModelChoiceField(queryset=_agents(), required=True)
    note = forms.CharField(required=False, max_length=2000)


def _form_error(form: forms.Form) -> str:
    return " ".join(str(message) for messages in form.errors.values() for message in messages)


# --- Answers ------------------------------------------------------------------------------------------


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _done(request: HttpRequest, conversation: Conversation) -> HttpResponse:
    """After a change: the conversation's page again, or the inbox when the viewer lost sight of it."""
    still_visible = conversation_get(viewer=request.user, id=conversation.pk) is not None
    if _is_htmx(request):
        response = HttpResponse(status=204)
        if still_visible:
            response["HX-Refresh"] = "true"
        else:
            response["HX-Redirect"] = reverse("inbox:home")
        return response
    url = reverse("inbox:conversation", args=[conversation.pk]) if still_visible else reverse("inbox:home")
    return HttpResponseRedirect(url, status=303)


def _refused(request: HttpRequest, conversation: Conversation, message: str, status: int) -> HttpResponse:
    """The reason an action was refused: into the toolbar (htmx), or a small page (a plain form)."""
    context = {"conversation": conversation, "message": message}
    if _is_htmx(request):
        return render(request, "inbox/actions/refused.html", context, status=status)
    response = render_page(request, "inbox/actions/refused_page.html", context)
    response.status_code = status
    return response


def _conversation(request: HttpRequest, pk: int) -> Conversation:
    conversation = conversation_get(viewer=request.user, id=pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _allowed_or_refused(request: HttpRequest, conversation: Conversation, action: str) -> HttpResponse | None:
    """None when the viewer may take `action` in `conversation` (whatever its state), else the 403."""
    is_supervisor = viewer_sees_all_conversations(viewer=request.user)
    if _may(request.user, conversation, action, is_supervisor):
        return None
    return _refused(request, conversation, str(NOT_YOURS[action]), 403)


def _transition(request: HttpRequest, pk: int, action: str, form: forms.Form | None = None) -> HttpResponse:
    conversation = _conversation(request, pk)
    if refusal := _allowed_or_refused(request, conversation, action):
        return refusal
    note = ""
    if form is not None:
        if not form.is_valid():
            return _refused(request, conversation, _form_error(form), 400)
        note = form.cleaned_data["notes"]
    try:
        lifecycle.conversation_transition(
            conversation=conversation, action=action, actor=request.user, note=note
        )
    except lifecycle.LifecycleError as refusal:
        return _refused(request, conversation, refusal.message, 409)
    return _done(request, conversation)


# --- The actions ----------------------------------------------------------------------------------------


@require_POST
@inbox_page
def conversation_end(request: HttpRequest, pk: int) -> HttpResponse:
    """End an Active conversation (its agent): to wrap-up, with the notes."""
    return _transition(request, pk, lifecycle.END, form=EndForm(request.POST))


@require_POST
@inbox_page
def conversation_close(request: HttpRequest, pk: int) -> HttpResponse:
    """Close a conversation (its agent or a supervisor); its running consults end (the lifecycle)."""
    return _transition(request, pk, lifecycle.CLOSE)


@require_POST
@inbox_page
def conversation_wait(request: HttpRequest, pk: int) -> HttpResponse:
    """Set an Active conversation aside until the customer writes again (its agent)."""
    return _transition(request, pk, lifecycle.WAIT)


@require_POST
@inbox_page
def conversation_resume(request: HttpRequest, pk: int) -> HttpResponse:
    """Take a Waiting conversation up again (its agent)."""
    return _transition(request, pk, lifecycle.RESUME)


@require_POST
@inbox_page
def conversation_transfer(request: HttpRequest, pk: int) -> HttpResponse:
    """Transfer a conversation to a queue, an agent or both, with a note (its agent or a supervisor);
    its running consults end (the lifecycle)."""
    conversation = _conversation(request, pk)
    if refusal := _allowed_or_refused(request, conversation, lifecycle.TRANSFER):
        return refusal
    form = TransferForm(request.POST)
    if not form.is_valid():
        return _refused(request, conversation, _form_error(form), 400)
    try:
        distribution.conversation_transfer(
            conversation=conversation,
            actor=request.user,
            queue=form.cleaned_data["queue"],
            agent=form.cleaned_data["agent"],
            note=form.cleaned_data["note"],
        )
    except lifecycle.LifecycleError as refusal:
        return _refused(request, conversation, refusal.message, 409)
    except ValidationError as invalid:
        return _refused(request, conversation, " ".join(invalid.messages), 400)
    return _done(request, conversation)


@require_POST
@inbox_page
def conversation_consult(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask another agent to look at the conversation (its agent): they see it read-only."""
    conversation = _conversation(request, pk)
    if refusal := _allowed_or_refused(request, conversation, CONSULT):
        return refusal
    form = ConsultForm(request.POST)
    if not form.is_valid():
        return _refused(request, conversation, _form_error(form), 400)
    try:
        consults.consult_start(
            conversation=conversation,
            consultant=form.cleaned_data["consultant"],
            requested_by=request.user,
            note=form.cleaned_data["note"],
        )
    except lifecycle.LifecycleError as refusal:
        return _refused(request, conversation, refusal.message, 409)
    except ValidationError as invalid:
        return _refused(request, conversation, " ".join(invalid.messages), 400)
    return _done(request, conversation)


@require_POST
@inbox_page
def conversation_consult_end(request: HttpRequest, pk: int, consult_id: int) -> HttpResponse:
    """End a consult (the requester, the consultant, the conversation's agent or a supervisor)."""
    conversation = _conversation(request, pk)
    consult = ConversationConsult.objects.filter(pk=consult_id, conversation_id=conversation.pk).first()
    if consult is None:
        raise Http404("No such consult.")
    consult.conversation = conversation
    if not consults.consult_can_end(viewer=request.user, consult=consult):
        message = _("Only the agent who asked, the consulted agent or a supervisor can end this consult.")
        return _refused(request, conversation, message, 403)
    try:
        consults.consult_end(consult=consult, actor=request.user)
    except lifecycle.LifecycleError as refusal:
        return _refused(request, conversation, refusal.message, 409)
    return _done(request, conversation)


# --- Fragments --------------------------------------------------------------------------------------------


def toolbar_context(request: HttpRequest, conversation: Conversation) -> dict[str, Any]:
    """What the toolbar shows: the actions the viewer may take, and the running consults (each with
    whether the viewer may end it). Two queries (the consults; the viewer's permissions, cached)."""
    is_supervisor = viewer_sees_all_conversations(viewer=request.user)
    running = list(consults.consults_running(conversation=conversation))
    for consult in running:
        consult.conversation = conversation
        consult.can_end = consults.consult_can_end(viewer=request.user, consult=consult)
    allowed = actions_allowed(viewer=request.user, conversation=conversation, is_supervisor=is_supervisor)
    return {
        "conversation": conversation,
        "is_supervisor": is_supervisor,
        "allowed": allowed,
        "has_actions": any(allowed.values()),
        "consults": running,
        "toolbar_loaded": True,
    }


@require_GET
@inbox_page
def conversation_actions(request: HttpRequest, pk: int) -> HttpResponse:
    """The toolbar, fetched again when the conversation changes (a live notice), or as a page of its
    own without JavaScript."""
    conversation = _conversation(request, pk)
    context = toolbar_context(request, conversation)
    if _is_htmx(request):
        return render(request, "inbox/conversation/actions.html", {**context, "fragment": True})
    return render_page(request, "inbox/actions/page.html", {**context, "purpose": ""})


def _agent_rows(users: Any) -> list[dict[str, Any]]:
    """Each agent with their presence and load, as the target lists show them."""
    rows = []
    for user in users:
        profile = getattr(user, "agent_profile", None)
        rows.append(
            {
                "pk": user.pk,
                "name": consults.user_name(user),
                "presence": _(profile.get_presence_display()) if profile else "",
                "used": profile.capacity_used if profile else 0,
                "capacity": profile.capacity if profile else 0,
                "has_profile": profile is not None,
            }
        )
    return rows


def _targets(request: HttpRequest, pk: int, purpose: str) -> HttpResponse:
    conversation = _conversation(request, pk)
    if refusal := _allowed_or_refused(request, conversation, purpose):
        return refusal
    context: dict[str, Any] = {"conversation": conversation, "purpose": purpose}
    if purpose == lifecycle.TRANSFER:
        agents = (
            _agents()
            .exclude(pk=conversation.assigned_agent_id or 0)
            .select_related("agent_profile")
            .order_by("first_name", "last_name", "username")
        )
        context["queues"] = list(Queue.objects.order_by("priority", "name"))
    else:
        agents = consults.consultants_available(conversation=conversation, viewer=request.user)
    context["agents"] = _agent_rows(agents)
    if _is_htmx(request):
        return render(request, "inbox/actions/targets.html", context)
    return render_page(request, "inbox/actions/page.html", context)


@require_GET
@inbox_page
def transfer_targets(request: HttpRequest, pk: int) -> HttpResponse:
    """The transfer form: the agents (with presence and load) and the queues to choose from."""
    return _targets(request, pk, lifecycle.TRANSFER)


@require_GET
@inbox_page
def consult_targets(request: HttpRequest, pk: int) -> HttpResponse:
    """The consult form: the agents who may be consulted."""
    return _targets(request, pk, CONSULT)


urlpatterns = [
    path("c/<int:pk>/actions/", conversation_actions, name="conversation-actions"),
    path("c/<int:pk>/end/", conversation_end, name="conversation-end"),
    path("c/<int:pk>/close/", conversation_close, name="conversation-close"),
    path("c/<int:pk>/wait/", conversation_wait, name="conversation-wait"),
    path("c/<int:pk>/resume/", conversation_resume, name="conversation-resume"),
    path("c/<int:pk>/transfer/", conversation_transfer, name="conversation-transfer"),
    path("c/<int:pk>/transfer/targets/", transfer_targets, name="conversation-transfer-targets"),
    path("c/<int:pk>/consult/", conversation_consult, name="conversation-consult"),
    path("c/<int:pk>/consult/targets/", consult_targets, name="conversation-consult-targets"),
    path(
        "c/<int:pk>/consult/<int:consult_id>/end/",
        conversation_consult_end,
        name="conversation-consult-end",
    ),
]
