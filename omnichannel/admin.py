"""Admin pages of the core records. Conversations, messages and social profiles are read-only here:
they change through services (the actions below call them), never through a form save.

The messaging account pages, with the "New account" wizard, are channel-specific: channels_line/admin.py.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.timezone import localtime

from . import selectors, services
from .files import attachment_view_url, content_type_base, is_inline_type, is_thumbnail_type
from .lifecycle import LifecycleError
from .models import (
    Attachment,
    AttachmentState,
    Contact,
    Conversation,
    ConversationActivity,
    ConversationState,
    DeliveryState,
    Direction,
    Message,
    MessageEdit,
    QuickReply,
    SocialProfile,
)


def json_block(value: Any) -> str:
    """JSON as an indented, escaped <pre> block for read-only admin fields."""
    return format_html(
        '<pre style="white-space:pre-wrap;margin:0">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )


class ReadOnlyAdminMixin:
    """Records that only services write: viewable, never added, changed or deleted through a form.

    `has_change_permission` stays true on the changelist (obj is None) so that actions declared with
    `permissions=["change"]`, which call services, are offered to users who hold the change permission."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInlineMixin:
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SocialProfileInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = SocialProfile
    fields = ["display_name", "external_id", "messaging_account", "is_reachable"]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[SocialProfile]:
        return super().get_queryset(request).select_related("messaging_account")


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "phone", "created_at"]
    search_fields = ["name", "email", "phone"]
    inlines = [SocialProfileInline]


@admin.register(QuickReply)
class QuickReplyAdmin(admin.ModelAdmin):
    """Canned answers agents insert from the conversation page's composer (type "/")."""

    list_display = ["title", "language", "tags", "is_active", "updated_at"]
    list_filter = ["language", "is_active"]
    search_fields = ["title", "tags", "text"]
    list_editable = ["is_active"]


@admin.register(SocialProfile)
class SocialProfileAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "external_id",
        "messaging_account",
        "contact",
        "language",
        "is_reachable",
        "reachability_changed_at",
    ]
    list_select_related = ["messaging_account", "contact"]
    list_filter = ["is_reachable", "messaging_account", "language"]
    search_fields = ["display_name", "external_id", "contact__name"]
    fields = [
        "messaging_account",
        "external_id",
        "display_name",
        "picture",
        "status_message",
        "language",
        "contact",
        "is_reachable",
        "reachability_changed_at",
        "profile_fetched_at",
        "profile_json",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="Picture")
    def picture(self, profile: SocialProfile) -> str:
        if not profile.picture_url:
            return "-"
        return format_html(
            '<img src="{}" alt="" width="64" height="64" style="border-radius:50%"> <a href="{}">{}</a>',
            profile.picture_url,
            profile.picture_url,
            profile.picture_url,
        )

    @admin.display(description="Profile as fetched")
    def profile_json(self, profile: SocialProfile) -> str:
        return json_block(profile.profile_raw)


class MessageInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Message
    fields = [
        "sent_at",
        "direction",
        "kind",
        "text_preview",
        "files",
        "delivery_state",
        "delivery_error",
        "author",
    ]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return (
            super()
            .get_queryset(request)
            .select_related("author")
            .prefetch_related("attachments")
            .order_by("sent_at", "id")
        )

    @admin.display(description="Text")
    def text_preview(self, message: Message) -> str:
        return message_text_preview(message)

    @admin.display(description="Files")
    def files(self, message: Message) -> str:
        previews = [attachment_preview(attachment) for attachment in message.attachments.all()]
        return format_html_join(mark_safe("<br>"), "{}", ((preview,) for preview in previews)) or "-"


def message_text_preview(message: Message) -> str:
    if message.unsent_at:
        return "(unsent by the customer)"
    return Truncator(message.text).chars(80) or f"({message.get_kind_display().lower()})"


class ConversationActivityInline(ReadOnlyInlineMixin, admin.TabularInline):
    """What happened besides the messages: state changes, offers, transfers, with who and why."""

    model = ConversationActivity
    fields = ["created_at", "kind", "from_state", "to_state", "actor", "agent", "note", "data"]
    readonly_fields = fields
    verbose_name_plural = "activity"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversationActivity]:
        return super().get_queryset(request).select_related("actor", "agent").order_by("created_at", "id")


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "customer",
        "messaging_account",
        "thread_type",
        "state",
        "queue",
        "assigned_agent",
        "last_message",
    ]
    list_select_related = ["messaging_account", "social_profile", "queue", "assigned_agent"]
    list_filter = ["state", "thread_type", "messaging_account", "queue"]
    search_fields = ["thread_id", "social_profile__display_name", "social_profile__external_id"]
    date_hierarchy = "last_message_at"
    fields = [
        "messaging_account",
        "thread_type",
        "thread_id",
        "social_profile",
        "state",
        "created_at",
        "last_message_at",
        "closed_at",
        "workstream",
        "queue",
        "priority",
        "queued_at",
        "routing_decision",
        "assigned_agent",
        "previous_agent",
        "capacity_held",
        "state_changed_at",
        "wrap_up_notes",
    ]
    readonly_fields = fields
    inlines = [MessageInline, ConversationActivityInline]
    actions = ["close_conversations"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        # The access policy (omnichannel.selectors): an agent who reaches the admin sees their own
        # conversations only, as in the API. The latest message's text and kind come with each row: no
        # query per conversation.
        latest = Message.objects.filter(conversation=OuterRef("pk")).order_by("-sent_at", "-id")
        ordering = self.get_ordering(request)
        conversations = selectors.conversations_visible(viewer=request.user)
        return (conversations.order_by(*ordering) if ordering else conversations).annotate(
            latest_message_text=Subquery(latest.values("text")[:1]),
            latest_message_kind=Subquery(latest.values("kind")[:1]),
        )

    @admin.display(description="Routing decision")
    def routing_decision(self, conversation: Conversation) -> str:
        return json_block(conversation.routing) if conversation.routing else "-"

    @admin.display(description="Customer", ordering="social_profile__display_name")
    def customer(self, conversation: Conversation) -> str:
        return str(conversation.social_profile) if conversation.social_profile_id else conversation.thread_id

    @admin.display(description="Last message", ordering="last_message_at")
    def last_message(self, conversation: Conversation) -> str:
        if conversation.last_message_at is None:
            return "-"
        text = getattr(conversation, "latest_message_text", "") or ""
        kind = getattr(conversation, "latest_message_kind", "") or ""
        preview = Truncator(text).chars(60) if text else f"({kind})" if kind else ""
        when = date_format(localtime(conversation.last_message_at), "Y-m-d H:i")
        return format_html("{} <small>{}</small>", preview, when)

    @admin.action(description="Close the selected conversations", permissions=["change"])
    def close_conversations(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        closed = 0
        for conversation in queryset.exclude(state=ConversationState.CLOSED):
            try:
                services.conversation_close(conversation=conversation, actor=request.user)
            except LifecycleError as error:
                self.message_user(request, f"{conversation}: {error.message}", messages.WARNING)
            else:
                closed += 1
        self.message_user(request, f"{closed} conversation(s) closed.", messages.SUCCESS)


class AttachmentInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Attachment
    fields = ["file_name", "original_name", "content_type", "size", "state", "preview", "error"]
    readonly_fields = fields

    @admin.display(description="File")
    def preview(self, attachment: Attachment) -> str:
        return attachment_preview(attachment)


def attachment_preview(attachment: Attachment) -> str:
    """How a file shows in the admin. Downloaded files come through the signed-in attachment view
    (omnichannel.views.attachment_open), never from MEDIA_URL: a thumbnail for raster images, a
    player for audio and video, a download link for anything else (HTML, SVG, documents). A file
    hosted elsewhere is a link there; one not downloaded shows its state and reason."""
    name = attachment.file_name or "file"
    if attachment.state == AttachmentState.READY and attachment.file:
        url = attachment_view_url(attachment=attachment)
        download = format_html(
            '<a href="{}" download class="attachment-download">Download {}</a>',
            attachment_view_url(attachment=attachment, download=True),
            name,
        )
        kind = content_type_base(attachment.content_type)
        if is_thumbnail_type(kind):
            media = format_html(
                '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" loading="lazy" '
                'class="attachment-thumbnail" style="max-width:160px;max-height:120px;display:block"></a>',
                url,
                url,
                name,
            )
        elif kind.startswith("audio/") and is_inline_type(kind):
            media = format_html('<audio controls preload="metadata" src="{}"></audio>', url)
        elif kind.startswith("video/") and is_inline_type(kind):
            media = format_html(
                '<video controls preload="metadata" src="{}" style="max-width:240px;max-height:180px">'
                "</video>",
                url,
            )
        else:
            return download
        return format_html("{}{}", media, download)
    if attachment.external_url:
        return format_html(
            '<a href="{}" target="_blank" rel="noopener noreferrer">{} (hosted elsewhere)</a>',
            attachment.external_url,
            name,
        )
    if attachment.state == AttachmentState.REFUSED:  # never downloaded: its reason, no link
        prefix = f"{attachment.file_name} refused" if attachment.file_name else "Refused"
        return f"{prefix}: {attachment.error}"
    detail = f": {attachment.error}" if attachment.error else ""
    return f"{name} ({attachment.get_state_display().lower()}{detail})"


class MessageEditInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = MessageEdit
    fields = ["edited_at", "previous_text", "new_text"]
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "sent_at",
        "conversation",
        "direction",
        "kind",
        "text_preview",
        "delivery_state",
        "delivery_error_preview",
        "author",
    ]
    list_select_related = ["conversation__social_profile", "author"]
    list_filter = ["delivery_state", "direction", "kind", "is_flagged"]
    search_fields = ["=uuid", "=external_id", "text"]
    date_hierarchy = "sent_at"
    fields = [
        "uuid",
        "conversation",
        "direction",
        "kind",
        "text",
        "payload_json",
        "external_id",
        "sender_profile",
        "author",
        "sent_at",
        "delivery_state",
        "delivery_method",
        "delivery_attempts",
        "delivery_error",
        "delivered_at",
        "unsent_at",
        "edited_at",
        "is_flagged",
        "raw_json",
    ]
    readonly_fields = fields
    inlines = [AttachmentInline, MessageEditInline]
    actions = ["retry_delivery"]

    @admin.display(description="Text")
    def text_preview(self, message: Message) -> str:
        return message_text_preview(message)

    @admin.display(description="Delivery error")
    def delivery_error_preview(self, message: Message) -> str:
        return Truncator(message.delivery_error).chars(80)

    @admin.display(description="Payload")
    def payload_json(self, message: Message) -> str:
        return json_block(message.payload)

    @admin.display(description="Raw, as received")
    def raw_json(self, message: Message) -> str:
        return json_block(message.raw)

    @admin.action(
        description="Send again the selected failed (or stuck pending or sending) messages",
        permissions=["change"],
    )
    def retry_delivery(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        retried = 0
        skipped = 0
        undelivered = queryset.filter(direction=Direction.OUTBOUND).exclude(
            delivery_state=DeliveryState.DELIVERED
        )
        for message in undelivered.select_related("conversation__messaging_account"):
            try:
                services.message_retry(message=message)
            except ValidationError:
                # Another user or the worker changed it meanwhile.
                skipped += 1
            else:
                retried += 1
        skipped += queryset.count() - retried - skipped
        if retried:
            self.message_user(request, f"{retried} message(s) queued for delivery again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} message(s) skipped: only failed outbound messages can be retried.",
                messages.WARNING,
            )
