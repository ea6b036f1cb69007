"""The customer summary pane of a conversation (an htmx fragment of the conversation page): the
customer's social profile, the contact it is linked to (or a suggested one, a search and a form to
create one), and the customer's earlier conversations.

GET /inbox/c/<id>/customer/ renders the summary; the conversation page's pane loads it, and loads it
again on every live notice about the conversation (a link changed on another page publishes one).
The changes (link, create, unlink) answer with the new summary; without JavaScript they are plain
forms that come back to the conversation page. A conversation the viewer may not see is 404; a
change they may not make is 403 (omnichannel.contacts.contact_link_allowed); a change that lost a
race (someone else changed the link meanwhile) answers 409 with the summary as it is now and the
reason, which the summary swaps in (as the 422 of an invalid contact)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from omnichannel import contacts
from omnichannel.models import Contact, Conversation, ConversationState
from omnichannel.selectors import conversation_get

from .common import inbox_page

# The summary's element ID: htmx names it in HX-Target when the summary's own forms replace it.
PANE_ID = "customer-summary"
CONTACT_ADMIN_PERMISSION = "omnichannel.change_contact"
# The states in the agent's language (the model's labels are translatable).
STATE_LABELS = dict(ConversationState.choices)


class ContactCreateForm(forms.Form):
    """A contact made from the customer's profile: the name defaults to the LINE display name."""

    name = forms.CharField(label=_("Name"), max_length=Contact._meta.get_field("name").max_length)
    email = forms.EmailField(label=_("Email"), required=False)
    phone = forms.CharField(
        label=_("Phone"), required=False, max_length=Contact._meta.get_field("phone").max_length
    )


def _conversation(request: HttpRequest, pk: int) -> Conversation:
    conversation = conversation_get(viewer=request.user, id=pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _pane(
    request: HttpRequest,
    conversation: Conversation,
    *,
    status: int = 200,
    error: str = "",
    form: ContactCreateForm | None = None,
) -> HttpResponse:
    summary = contacts.customer_summary(viewer=request.user, conversation=conversation)
    for item in summary.earlier:
        item.state_label = STATE_LABELS.get(item.conversation.state, item.conversation.state)
    may_link = summary.profile is not None and contacts.contact_link_allowed(
        viewer=request.user, conversation=conversation
    )
    may_create = may_link and contacts.contact_create_allowed(viewer=request.user, conversation=conversation)
    if form is None and may_create and summary.contact is None:
        form = ContactCreateForm(
            initial={"name": summary.profile.display_name.strip() or summary.profile.external_id}
        )
    context: dict[str, Any] = {
        "conversation": conversation,
        "summary": summary,
        "profile": summary.profile,
        "contact": summary.contact,
        "may_link": may_link,
        "may_create": may_create,
        "form": form,
        "error": error,
        "pane_id": PANE_ID,
        "search_min_length": contacts.SEARCH_MIN_LENGTH,
        # The summary brings its stylesheet along, before it: not when its own forms replace it (htmx
        # names it as their target), which would add one more each time.
        "with_stylesheet": request.headers.get("HX-Target") != PANE_ID,
        "contact_admin_url": (
            reverse("admin:omnichannel_contact_change", args=[summary.contact.pk])
            if summary.contact is not None
            and request.user.is_staff
            and request.user.has_perm(CONTACT_ADMIN_PERMISSION)
            else ""
        ),
    }
    return render(request, "inbox/customer/pane.html", context, status=status)


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _answer(
    request: HttpRequest, conversation: Conversation, *, conflict: contacts.ContactConflict | None = None
) -> HttpResponse:
    """The pane after a change (htmx), or back to the conversation page (a plain form)."""
    if not _is_htmx(request):
        if conflict is not None:
            messages.error(request, conflict.message)
        return redirect("inbox:conversation", pk=conversation.pk)
    if conflict is not None:
        # What the agent saw is stale: show the link as it is now, with the reason.
        return _pane(request, _conversation(request, conversation.pk), status=409, error=conflict.message)
    return _pane(request, conversation)


def _changeable(request: HttpRequest, pk: int, *, create: bool = False) -> Conversation:
    conversation = _conversation(request, pk)
    if contacts.customer_profile_of(conversation) is None:
        raise PermissionDenied(gettext("A group or room conversation has no single customer to link."))
    allowed = contacts.contact_create_allowed if create else contacts.contact_link_allowed
    if not allowed(viewer=request.user, conversation=conversation):
        raise PermissionDenied(
            gettext("Only the agent working this conversation or a supervisor may change its contact.")
        )
    return conversation


def _contact_id(request: HttpRequest) -> int | None:
    try:
        return int(request.POST.get("contact", ""))
    except ValueError:
        return None


@require_GET
@inbox_page
def customer_pane(request: HttpRequest, pk: int) -> HttpResponse:
    return _pane(request, _conversation(request, pk))


@require_GET
@inbox_page
def customer_search(request: HttpRequest, pk: int) -> HttpResponse:
    """Contacts to link, by name, email or phone (`?q=`)."""
    conversation = _changeable(request, pk)
    query = request.GET.get("q", "").strip()
    return render(
        request,
        "inbox/customer/search_results.html",
        {
            "conversation": conversation,
            "query": query,
            "too_short": len(query) < contacts.SEARCH_MIN_LENGTH,
            "results": contacts.contacts_search(query=query),
            "search_min_length": contacts.SEARCH_MIN_LENGTH,
        },
    )


@require_POST
@inbox_page
def customer_link(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _changeable(request, pk)
    contact_id = _contact_id(request)
    if contact_id is None:
        return HttpResponseBadRequest(gettext("Which contact? (contact: an ID)"))
    try:
        contacts.contact_link(conversation=conversation, contact_id=contact_id)
    except contacts.ContactConflict as conflict:
        return _answer(request, conversation, conflict=conflict)
    return _answer(request, conversation)


@require_POST
@inbox_page
def customer_create(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _changeable(request, pk, create=True)
    form = ContactCreateForm(request.POST)
    if not form.is_valid():
        if not _is_htmx(request):
            messages.error(request, gettext("The contact was not created: check its name, email and phone."))
            return redirect("inbox:conversation", pk=conversation.pk)
        return _pane(request, conversation, status=422, form=form)
    try:
        contacts.contact_create_from_profile(conversation=conversation, **form.cleaned_data)
    except contacts.ContactConflict as conflict:
        return _answer(request, conversation, conflict=conflict)
    return _answer(request, conversation)


@require_POST
@inbox_page
def customer_unlink(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _changeable(request, pk)
    contact_id = _contact_id(request)
    if contact_id is None:
        return HttpResponseBadRequest(gettext("Which contact? (contact: an ID)"))
    try:
        contacts.contact_unlink(conversation=conversation, contact_id=contact_id)
    except contacts.ContactConflict as conflict:
        return _answer(request, conversation, conflict=conflict)
    return _answer(request, conversation)


urlpatterns = [
    path("c/<int:pk>/customer/", customer_pane, name="customer"),
    path("c/<int:pk>/customer/contacts/", customer_search, name="customer_search"),
    path("c/<int:pk>/customer/link/", customer_link, name="customer_link"),
    path("c/<int:pk>/customer/create/", customer_create, name="customer_create"),
    path("c/<int:pk>/customer/unlink/", customer_unlink, name="customer_unlink"),
]
