"""The conversation page (/inbox/c/<id>/): the timeline, in pages and live, and the composer.

Everything goes through the access policy (omnichannel.selectors): a conversation the viewer may
not see is 404, page and fragments alike. Only the agent it is assigned to gets the composer and
the endpoints behind it (send, retry, typing, quick replies: 403 for anyone else); supervisors and
consulted agents read. The page's script (static/inbox/conversation.js) fetches the fragments below
when the live stream says something changed, and merges them by the items' stable element IDs."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages as flash
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST, require_safe

from omnichannel import selectors, services
from omnichannel.files import attachment_view_url, content_type_base
from omnichannel.models import (
    AttachmentState,
    Conversation,
    ConversationActivity,
    ConversationState,
    Direction,
    Message,
    MessageKind,
)
from routing.selectors import channel_instance_attachment_policy

from .common import inbox_page, render_page

# How the page tells an event marker (LINE follow, unfollow, join...) in the agent's language; the
# stored text (English) is the fallback.
EVENT_TEXTS = {
    "follow": gettext_lazy("Added the account as a friend"),
    "unfollow": gettext_lazy("Blocked the account: messages can no longer reach them"),
    "join": gettext_lazy("The account joined the chat"),
    "leave": gettext_lazy("The account left the chat"),
    "memberJoined": gettext_lazy("Members joined the chat"),
    "memberLeft": gettext_lazy("Members left the chat"),
    "beacon": gettext_lazy("Customer near a beacon"),
    "accountLink": gettext_lazy("Account linking"),
    "videoPlayComplete": gettext_lazy("Customer watched a video to the end"),
}
STATE_LABELS = dict(ConversationState.choices)  # translatable labels: the agent's language
OFFER_ANSWERS = {
    "accepted": gettext_lazy("accepted the offer"),
    "declined": gettext_lazy("declined the offer"),
    "expired": gettext_lazy("let the offer expire"),
    "withdrawn": gettext_lazy("no longer has the offer (withdrawn)"),
}
# How a message's file is shown: images, players, or a download link (files, documents).
SHOWN_AS = {MessageKind.IMAGE: "image", MessageKind.VIDEO: "video", MessageKind.AUDIO: "audio"}
FILE_KINDS = {*SHOWN_AS, MessageKind.FILE, MessageKind.DOCUMENT}
FRAGMENT_HEADER = "X-Inbox-Fragment"
IMAGE_TYPES = {"image/jpeg", "image/png"}
VIDEO_TYPES = {"video/mp4"}
AUDIO_TYPES = {"audio/mp4", "audio/x-m4a", "audio/m4a", "audio/mpeg", "audio/mp3"}


# --- Access ---------------------------------------------------------------------------------------


def _conversation_or_404(request: HttpRequest, pk: int) -> Conversation:
    conversation = selectors.conversation_get(viewer=request.user, id=pk)
    if conversation is None:
        raise Http404(_("No such conversation."))
    return conversation


def _replies(viewer: AbstractBaseUser, conversation: Conversation) -> bool:
    """Whether the composer is the viewer's: the agent working the conversation, while it is not
    closed. Supervisors act through the toolbar (transfer, close) but do not write to customers."""
    return conversation.assigned_agent_id == viewer.pk and conversation.state != ConversationState.CLOSED


def _reply_refusal(request: HttpRequest, conversation: Conversation) -> HttpResponse | None:
    """None when the viewer works the conversation; else 403, as plain text for the page's script
    (shown under the composer: the conversation was transferred meanwhile), the 403 page otherwise."""
    if _replies(request.user, conversation):
        return None
    reason = _("Only the agent working this conversation can write to the customer.")
    if _wants_fragment(request):
        return _refusal(reason, 403)
    raise PermissionDenied(reason)


def _refusal(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _wants_fragment(request: HttpRequest) -> bool:
    return bool(request.headers.get(FRAGMENT_HEADER) or request.headers.get("HX-Request"))


# --- Presentation ---------------------------------------------------------------------------------


def _customer_name(conversation: Conversation) -> str:
    profile = conversation.social_profile
    if profile is None:
        return ""
    if profile.contact_id and profile.contact.name:
        return profile.contact.name
    return profile.display_name or ""


def _reachable(conversation: Conversation) -> bool:
    return conversation.social_profile is None or conversation.social_profile.is_reachable


def _web(url: str) -> str:
    """A link from a channel's payload, only when it is a web address (never javascript: or data:)."""
    return url if url.lower().startswith(("https://", "http://")) else ""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if -180.0 <= number <= 180.0 else None


def _message_present(message: Message) -> Message:
    """What the templates need beyond the record: attachment links and how to show each file, the
    map link of a location, the event's text in the agent's language, the raw JSON of a flagged one."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    for attachment in message.attachments.all():
        stored = attachment.state == AttachmentState.READY and bool(attachment.file)
        attachment.url = (
            attachment_view_url(attachment=attachment) if stored else _web(attachment.external_url)
        )
        attachment.preview_url = _web(attachment.preview_url)
        attachment.download_url = attachment_view_url(attachment=attachment, download=True) if stored else ""
        attachment.show_as = SHOWN_AS.get(message.kind, "file")
        attachment.available = bool(attachment.url) and attachment.state in (
            AttachmentState.READY,
            AttachmentState.EXTERNAL,
        )
    if message.kind == MessageKind.STICKER:
        message.sticker_url = _web(str(payload.get("image_url") or ""))
    if message.kind == MessageKind.LOCATION:
        latitude, longitude = _number(payload.get("latitude")), _number(payload.get("longitude"))
        message.map_url = (
            f"https://www.openstreetmap.org/?mlat={latitude}&mlon={longitude}#map=17/{latitude}/{longitude}"
            if latitude is not None and longitude is not None
            else ""
        )
    if message.kind in (MessageKind.EVENT, MessageKind.UNKNOWN):
        message.event_text = EVENT_TEXTS.get(str(payload.get("event", "")), message.text)
    if message.kind == MessageKind.POSTBACK:
        params = payload.get("params") if isinstance(payload.get("params"), dict) else {}
        message.postback_params = sorted(params.items())
    # Flagged for a reason shown with its file (refused) or its kind (unknown), or for another one.
    message.flag_shown = message.kind == MessageKind.UNKNOWN or any(
        attachment.state == AttachmentState.REFUSED for attachment in message.attachments.all()
    )
    if message.is_flagged:
        message.raw_json = json.dumps(message.raw, ensure_ascii=False, indent=2)[:20_000]
    message.is_system = message.direction == Direction.OUTBOUND and message.author_id is None
    # Shown as a line of the timeline rather than a bubble: LINE events, and an unknown customer
    # message without a file.
    message.as_event = message.kind == MessageKind.EVENT or (
        message.kind == MessageKind.UNKNOWN
        and message.direction == Direction.INBOUND
        and not message.attachments.all()
    )
    message.is_file_kind = message.kind in FILE_KINDS
    return message


def _person(user: AbstractBaseUser | None) -> str:
    return (user.get_full_name() or user.get_username()) if user is not None else ""


def _activity_present(activity: ConversationActivity) -> ConversationActivity:
    data = activity.data if isinstance(activity.data, dict) else {}
    activity.from_label = STATE_LABELS.get(activity.from_state, activity.from_state)
    activity.to_label = STATE_LABELS.get(activity.to_state, activity.to_state)
    activity.actor_name = _person(activity.actor)
    activity.agent_name = _person(activity.agent)
    activity.answer = OFFER_ANSWERS.get(str(data.get("state", "")), data.get("state", ""))
    activity.action = str(data.get("action", ""))
    return activity


def _items_context(page: selectors.TimelinePage) -> list:
    for message in page.messages:
        _message_present(message)
    for activity in page.activities:
        _activity_present(activity)
    return page.items


def _timeline_context(conversation: Conversation, page: selectors.TimelinePage, can_reply: bool) -> dict:
    return {
        "conversation": conversation,
        "items": _items_context(page),
        "page": page,
        "can_reply": can_reply,
        "state_label": STATE_LABELS.get(conversation.state, conversation.state),
    }


# --- The page --------------------------------------------------------------------------------------


@require_safe
@inbox_page
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    """The conversation: toolbar, timeline (latest page), composer for the agent working it, and the
    customer pane. Opening it as its agent marks the customer's messages read. A fixed number of
    queries whatever the history's length."""
    conversation = _conversation_or_404(request, pk)
    can_reply = _replies(request.user, conversation)
    page = selectors.conversation_timeline(conversation=conversation)
    services.conversation_read_by_agent(conversation=conversation, agent=request.user)
    policy = (
        channel_instance_attachment_policy(messaging_account_id=conversation.messaging_account_id)
        if can_reply
        else None
    )
    context = _timeline_context(conversation, page, can_reply)
    context.update(
        {
            "nav": "inbox",
            "can_act": selectors.conversation_worked_by(viewer=request.user, conversation=conversation),
            "agents_can_send_files": bool(policy and policy.agents_can_send),
            "customer_name": _customer_name(conversation),
            "customer_reachable": conversation.social_profile is None
            or conversation.social_profile.is_reachable,
        }
    )
    return render_page(request, "inbox/conversation.html", context)


@require_safe
@inbox_page
def timeline(request: HttpRequest, pk: int) -> HttpResponse:
    """A fragment of the timeline: `?before=<message id>` the page before that message ("Load
    earlier"); else what is new after `after` (message ID) and `after_activity`, with the messages
    `changed` (IDs, comma-separated) again."""
    conversation = _conversation_or_404(request, pk)
    can_reply = _replies(request.user, conversation)
    if "before" in request.GET:
        page = selectors.conversation_timeline(conversation=conversation, before=_int(request.GET["before"]))
        template = "inbox/conversation/earlier.html"
    else:
        changed = [_int(value) for value in request.GET.get("changed", "").split(",") if value.strip()]
        page = selectors.conversation_timeline_updates(
            conversation=conversation,
            after_message=_int(request.GET.get("after")),
            after_activity=_int(request.GET.get("after_activity")),
            changed=changed,
        )
        if any(message.direction == Direction.INBOUND for message in page.messages):
            # The agent has the conversation open: what the customer just wrote is read.
            services.conversation_read_by_agent(conversation=conversation, agent=request.user)
        template = "inbox/conversation/items.html"
    return render(request, template, _timeline_context(conversation, page, can_reply))


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


# --- The composer ----------------------------------------------------------------------------------


def _upload_kind(file: UploadedFile) -> str:
    """The message kind an agent's file goes as: images, video and audio LINE shows as such, anything
    else as a document (a link)."""
    base = content_type_base(getattr(file, "content_type", "") or "")
    if base in IMAGE_TYPES:
        return MessageKind.IMAGE
    if base in VIDEO_TYPES:
        return MessageKind.VIDEO
    if base in AUDIO_TYPES:
        return MessageKind.AUDIO
    return MessageKind.DOCUMENT


def _error_text(error: ValidationError) -> str:
    return " ".join(str(message) for message in error.messages)


@require_POST
@inbox_page
def send(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the composer's text and file (each its own message, the text first, delivered in that
    order) as the agent working the conversation: both or neither (a refused file does not leave the
    text sent alone). The new messages as timeline items (fetch), or back to the page."""
    conversation = _conversation_or_404(request, pk)
    if refused := _reply_refusal(request, conversation):
        return refused
    text = request.POST.get("text", "").replace("\r\n", "\n")  # browsers send a textarea's lines with CRLF
    file = request.FILES.get("file")
    sent: list[Message] = []
    try:
        if not text.strip() and file is None:
            raise ValidationError(_("Write a message or choose a file."))
        with transaction.atomic():
            if text.strip():
                sent.append(services.message_send(conversation=conversation, author=request.user, text=text))
            if file is not None:
                sent.append(
                    services.message_send(
                        conversation=conversation, author=request.user, kind=_upload_kind(file), file=file
                    )
                )
    except ValidationError as error:
        if _wants_fragment(request):
            return _refusal(_error_text(error), 400)
        flash.error(request, _error_text(error))
        return redirect("inbox:conversation", pk=conversation.pk)
    if not _wants_fragment(request):
        return redirect("inbox:conversation", pk=conversation.pk)
    page = selectors.conversation_timeline_updates(conversation=conversation, changed=[m.pk for m in sent])
    return render(request, "inbox/conversation/items.html", _timeline_context(conversation, page, True))


@require_POST
@inbox_page
def retry(request: HttpRequest, pk: int, message_pk: int) -> HttpResponse:
    """Send a failed outbound message again (same UUID: never delivered twice). The message again,
    as a timeline item; 409 with the reason when it cannot be sent again."""
    conversation = _conversation_or_404(request, pk)
    message = Message.objects.filter(pk=message_pk, conversation_id=conversation.pk).first()
    if message is None:
        raise Http404(_("No such message."))
    if refused := _reply_refusal(request, conversation):
        return refused
    message.conversation = conversation
    try:
        services.message_retry(message=message)
    except ValidationError as error:
        if _wants_fragment(request):
            return _refusal(_error_text(error), 409)
        flash.error(request, _error_text(error))
        return redirect("inbox:conversation", pk=conversation.pk)
    if not _wants_fragment(request):
        return redirect("inbox:conversation", pk=conversation.pk)
    page = selectors.conversation_timeline_updates(conversation=conversation, changed=[message.pk])
    return render(request, "inbox/conversation/items.html", _timeline_context(conversation, page, True))


@require_POST
@inbox_page
def typing(request: HttpRequest, pk: int) -> HttpResponse:
    """The agent is typing: LINE's loading animation for the customer. 204, or 429 when another
    call for this conversation came less than TYPING_MIN_INTERVAL_SECONDS ago."""
    conversation = _conversation_or_404(request, pk)
    if refused := _reply_refusal(request, conversation):
        return refused
    if not services.conversation_typing_throttled(conversation=conversation):
        return HttpResponse(status=429)
    return HttpResponse(status=204)


@require_safe
@inbox_page
def quick_replies(request: HttpRequest, pk: int) -> HttpResponse:
    """The quick replies matching `q` (title or tags) in the customer's language, their text with
    {CustomerName} and {AgentName} filled in."""
    conversation = _conversation_or_404(request, pk)
    if refused := _reply_refusal(request, conversation):
        return refused
    customer = _customer_name(conversation)
    agent = request.user.get_full_name() or request.user.get_username()
    language = conversation.social_profile.language if conversation.social_profile else ""
    replies = list(selectors.quick_replies_search(query=request.GET.get("q", ""), language=language))
    for reply in replies:
        reply.filled = selectors.quick_reply_fill(text=reply.text, customer_name=customer, agent_name=agent)
    return render(
        request,
        "inbox/conversation/quick_replies.html",
        {"replies": replies, "query": request.GET.get("q", "")},
    )


urlpatterns = [
    path("c/<int:pk>/", conversation, name="conversation"),
    path("c/<int:pk>/timeline/", timeline, name="conversation-timeline"),
    path("c/<int:pk>/send/", send, name="conversation-send"),
    path("c/<int:pk>/messages/<int:message_pk>/retry/", retry, name="conversation-retry"),
    path("c/<int:pk>/typing/", typing, name="conversation-typing"),
    path("c/<int:pk>/quick-replies/", quick_replies, name="conversation-quick-replies"),
]
