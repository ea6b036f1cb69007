"""The conversation page in a real browser: the agent working a conversation opens it, writes a
reply with a line break (Shift+Enter) and sends it with Enter, inserts a quick reply with "/", and
sees a customer's new message arrive without reloading the page."""

from __future__ import annotations

import datetime
import struct
import zlib

import pytest
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from omnichannel import live
from omnichannel.models import (
    ActivityKind,
    AttachmentState,
    ConversationActivity,
    ConversationState,
    Direction,
    Message,
    MessageKind,
    QuickReply,
)
from tests.factories import AgentFactory, AttachmentFactory, ConversationFactory, MessageFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def png(width: int, height: int) -> bytes:
    """A real PNG (a gradient) that a browser decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((255 - x * 255 // width, 150, x * 255 // width)) for x in range(width))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def conversation_worked():
    agent = AgentFactory(first_name="Mei", last_name="Sato")
    conversation = ConversationFactory(
        state=ConversationState.ACTIVE,
        assigned_agent=agent,
        social_profile__display_name="Aiko Tanaka",
        social_profile__language="ja",
    )
    at = timezone.now() - datetime.timedelta(minutes=30)

    def add(minutes: int, **fields) -> Message:
        return MessageFactory(
            conversation=conversation, sent_at=at + datetime.timedelta(minutes=minutes), **fields
        )

    add(0, text="Hello! My order #1042 has not arrived.\nTracking: https://example.com/track/1042")
    photo = add(1, kind=MessageKind.IMAGE, text="")
    attachment = AttachmentFactory(
        message=photo,
        state=AttachmentState.READY,
        external_url="",
        file_name="parcel.png",
        content_type="image/png",
    )
    attachment.file.save("parcel.png", ContentFile(png(160, 110)), save=True)
    add(
        2,
        kind=MessageKind.LOCATION,
        text="Shibuya Station",
        payload={
            "title": "Shibuya Station",
            "address": "2 Chome Dogenzaka, Shibuya",
            "latitude": 35.658,
            "longitude": 139.7016,
        },
    )
    ConversationActivity.objects.create(
        conversation=conversation,
        kind=ActivityKind.STATE_CHANGED,
        from_state="open",
        to_state="active",
        actor=agent,
        created_at=at + datetime.timedelta(minutes=3),
    )
    add(4, failed=True, author=agent, text="Let me check that for you.")
    QuickReply.objects.create(
        title="Greeting", tags="hello", text="Hello {CustomerName}, this is {AgentName}. How can I help?"
    )
    return agent, conversation


def test_the_agent_replies_with_enter_uses_a_quick_reply_and_sees_the_customer_answer_live(
    page, login_as, live_server, screenshot, conversation_worked
):
    agent, conversation = conversation_worked
    login_as(agent)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator("#timeline .msg")).to_have_count(4)
    expect(page.locator("#timeline img").first).to_be_visible()
    page.wait_for_function("document.body.dataset.liveReady === '1'")

    text = page.locator("#composer-text")
    text.click()
    text.type("Thank you for waiting.")
    text.press("Shift+Enter")
    text.type("The parcel left Osaka today.")
    text.press("Enter")

    sent = page.locator("#timeline .msg-out", has_text="The parcel left Osaka today.")
    expect(sent).to_be_visible()
    expect(text).to_have_value("")
    message = Message.objects.get(direction=Direction.OUTBOUND, author=agent, text__startswith="Thank you")
    assert message.text == "Thank you for waiting.\nThe parcel left Osaka today."
    expect(sent.locator("br")).to_have_count(1)

    text.type("/greet")
    option = page.locator("#quick-replies .quick-reply", has_text="Greeting")
    expect(option).to_be_visible()
    screenshot(page, "conversation-quick-replies")
    text.press("Enter")
    expect(text).to_have_value("Hello Aiko Tanaka, this is Mei Sato. How can I help?")
    expect(page.locator("#quick-replies")).to_be_hidden()
    text.fill("")

    with transaction.atomic():
        answer = MessageFactory(conversation=conversation, text="Great, thank you so much!")
        live.message_changed(message_id=answer.pk, conversation_id=conversation.pk)
    expect(page.locator(f"#message-{answer.pk}")).to_contain_text("Great, thank you so much!", timeout=8000)
    expect(page.locator("#timeline .msg")).to_have_count(6)

    page.locator("#timeline a[data-enlarge]").click()
    expect(page.locator("#lightbox img")).to_be_visible()
    screenshot(page, "conversation-lightbox")
    page.keyboard.press("Escape")
    screenshot(page, "conversation-page")


def test_a_long_history_loads_earlier_pages_on_demand(page, login_as, conversation_worked):
    agent, conversation = conversation_worked
    start = timezone.now() - datetime.timedelta(days=2)
    for n in range(60):
        MessageFactory(
            conversation=conversation, text=f"Old line {n}", sent_at=start + datetime.timedelta(minutes=n)
        )
    login_as(agent)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator("#timeline [data-message]")).to_have_count(50)
    expect(page.get_by_text("Old line 0", exact=True)).to_have_count(0)

    page.get_by_role("button", name="Load earlier messages").click()

    expect(page.locator("#timeline [data-message]")).to_have_count(64)  # 60 and the fixture's 4
    expect(page.get_by_text("Old line 0", exact=True)).to_have_count(1)
    expect(page.locator(".load-earlier")).to_have_count(0)


def test_every_kind_of_message_is_readable_on_the_page(page, login_as, screenshot, conversation_worked):
    """A look at the whole range (the markup of each kind has its own test in tests/agents)."""
    agent, conversation = conversation_worked
    at = timezone.now() - datetime.timedelta(minutes=20)

    def add(minutes: int, **fields) -> Message:
        return MessageFactory(
            conversation=conversation, sent_at=at + datetime.timedelta(minutes=minutes), **fields
        )

    add(1, kind=MessageKind.STICKER, text="", payload={"package_id": "446", "sticker_id": "1988"})
    edited = add(2, text="I would like two boxes", edited_at=at + datetime.timedelta(minutes=3))
    edited.edits.create(
        previous_text="I would like one box", new_text=edited.text, edited_at=edited.edited_at
    )
    add(4, text="", unsent_at=at + datetime.timedelta(minutes=5))
    add(
        6,
        kind=MessageKind.POSTBACK,
        text="action=reschedule",
        payload={
            "data": "action=reschedule",
            "params": {"datetime": "2026-12-24T10:00"},
        },
    )
    refused = add(7, kind=MessageKind.FILE, text="contract.zip", is_flagged=True)
    AttachmentFactory(
        message=refused, file_name="contract.zip", external_url="", state=AttachmentState.REFUSED, size=52000
    )
    add(8, kind=MessageKind.EVENT, text="Blocked the account", payload={"event": "unfollow"})
    add(
        9,
        kind=MessageKind.UNKNOWN,
        text="Unsupported LINE event “futureThing”",
        is_flagged=True,
        payload={"event": "futureThing"},
        raw={"type": "futureThing"},
    )
    ConversationActivity.objects.create(
        conversation=conversation,
        kind=ActivityKind.TRANSFERRED,
        from_state="active",
        to_state="open",
        actor=agent,
        note="Needs the billing team",
        created_at=at + datetime.timedelta(minutes=10),
    )
    add(
        11,
        direction=Direction.OUTBOUND,
        external_id="",
        sender_profile=None,
        text="You are next in line.",
        delivery_state="delivered",
    )
    login_as(agent)
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.goto(f"/inbox/c/{conversation.pk}/")

    expect(page.locator("#timeline [data-message]")).to_have_count(12)
    expect(page.get_by_text("The customer unsent this message.")).to_be_visible()
    page.locator("details.edits summary").click()
    expect(page.get_by_text("I would like one box")).to_be_visible()
    page.locator("#timeline").evaluate("(element) => { element.scrollTop = 0; }")
    screenshot(page, "conversation-every-kind")
