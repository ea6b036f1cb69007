"""The inbox the whole way, in a real headless Chromium: a customer writes from the LINE stand-in (its
phone page, or its control API); the stand-in signs each event and POSTs it to the webhook on the
live server; a real Celery worker processes it, routes the new conversation (a push workstream that
accepts for its agent) and calls LINE, played by the same stand-in, for every read mark, loading
animation and reply. The agent works the conversation in the inbox pages; what the customer sees is
read back from the stand-in's control API and its phone page.

Nothing is mocked. The only waits on a clock are the polls of the stand-in's control API and of the
database for what the worker does (with generous deadlines); the pages are waited on through
Playwright's expectations."""

from __future__ import annotations

import re
import struct
import urllib.parse
import zlib
from typing import Any

import pytest
from playwright.sync_api import expect

from agents.models import Presence
from omnichannel.models import Conversation, ConversationState, Direction, Message, MessageKind
from routing.models import DistributionMode
from tests.conftest import LineShop, wait_for
from tests.routing.conftest import instance_make, queue_make, workstream_make
from tests.routing.test_distribution import agent_make

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# From a change in the database to the page: the hub reads notices a few times a second, the page's
# stream hands them over, the page fetches its fragment. From the stand-in to the page, add the
# worker's processing. Generous: a slow answer on loopback is a failure, not a flake to wait out.
LIVE_MS = 15_000
WORKER_SECONDS = 30.0


def png(width: int, height: int) -> bytes:
    """A real PNG (a green-to-purple gradient) that a browser decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, 170, 255 - x * 255 // width)) for x in range(width))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PARCEL_PHOTO = png(96, 64)


@pytest.fixture
def shop(line_shop_online: LineShop, celery_worker) -> LineShop:
    """The stand-in's channel, its webhook on the live server, and the worker running."""
    return line_shop_online


@pytest.fixture
def desk(shop: LineShop) -> dict[str, Any]:
    """The shop's account in a push workstream that accepts offers for its agents, with two queues
    (Support, the fallback; Billing) and two Available agents, Mei (Support) and Kenji (Billing, so
    that nothing new goes to him)."""
    support, billing = queue_make("Support"), queue_make("Billing")
    workstream = workstream_make(
        "Shop workstream", fallback=support, distribution_mode=DistributionMode.PUSH, auto_accept=True
    )
    instance_make(workstream, account=shop.account)
    mei = agent_make(support, presence=Presence.AVAILABLE, capacity=4)
    kenji = agent_make(billing, presence=Presence.AVAILABLE, capacity=4)
    for agent, (first, last) in ((mei, ("Mei", "Sato")), (kenji, ("Kenji", "Ito"))):
        agent.first_name, agent.last_name = first, last
        agent.save(update_fields=["first_name", "last_name"])
    return {"support": support, "billing": billing, "mei": mei, "kenji": kenji}


def customer_writes(shop: LineShop, text: str) -> str:
    """The customer sends a text through the stand-in's control API; its LINE message ID."""
    result = shop.act(type="text", text=text)
    assert result["delivery"]["status"] == 200, result["delivery"]
    return result["message_ids"][0]


def assigned_to(shop: LineShop, agent) -> Conversation:
    """The customer's conversation once the worker has routed it and it is Active with `agent`."""
    return wait_for(
        lambda: Conversation.objects.filter(
            messaging_account=shop.account,
            thread_id=shop.user_id,
            state=ConversationState.ACTIVE,
            assigned_agent=agent,
        ).first(),
        timeout=WORKER_SECONDS,
        message=f"the worker to route the customer's conversation to {agent.get_username()}",
    )


def stand_in_shows(what: str, read, *, timeout: float = WORKER_SECONDS):
    """Poll the stand-in's control API until `read()` returns something truthy."""
    return wait_for(read, timeout=timeout, interval=0.25, message=f"the LINE stand-in to record {what}")


def serve_from(base_url: str):
    """A route handler that answers a request with what `base_url` answers for the same path."""

    def handle(route) -> None:
        parts = urllib.parse.urlsplit(route.request.url)
        route.fulfill(response=route.fetch(url=f"{base_url}{parts.path}?{parts.query}"))

    return handle


# The customer's LINE picture (tests.conftest.LINE_USER_PROFILE), served in place of LINE's CDN.
PICTURE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="112" height="112">'
    '<rect width="112" height="112" fill="#cde8f6"/>'
    '<text x="56" y="70" font-size="44" text-anchor="middle" font-family="sans-serif" fill="#1d4f6e">'
    "AT</text></svg>"
)


def serve_line_pictures(context) -> None:
    context.route(
        "https://profile.line-scdn.net/**",
        lambda route: route.fulfill(status=200, content_type="image/svg+xml", body=PICTURE),
    )


def signed_in_page(browser, live_server, user):
    """A page of a browser of its own (another person at another desk), signed in as `user`, and the
    list of the uncaught JavaScript errors it meets."""
    from django.conf import settings as django_settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    other.set_default_timeout(10_000)
    serve_line_pictures(other)
    other.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url, "httpOnly": True}])
    other_page = other.new_page()
    errors: list[str] = []
    other_page.on("pageerror", lambda error: errors.append(str(error)))
    return other, other_page, errors


def test_the_customer_writes_from_the_phone_the_agent_reads_types_and_answers_with_a_photo(
    browser, context, page, login_as, live_server, screenshot, shop, desk
):
    mei = desk["mei"]
    first_id = customer_writes(shop, "Hello, my parcel #1042 has not arrived.")
    conversation = assigned_to(shop, mei)
    serve_line_pictures(context)
    login_as(mei)

    # The inbox lists it (the worker gave it to Mei); the row opens the conversation page.
    page.goto("/inbox/")
    row = page.locator(f"#home-mine [data-conversation='{conversation.pk}']")
    expect(row).to_contain_text("Hello, my parcel #1042 has not arrived.")
    expect(row.locator(".badge")).to_have_text("1")
    screenshot(page, "inbox-e2e-home")
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/inbox/c/{conversation.pk}/$"))
    expect(page.locator("#timeline")).to_contain_text("Hello, my parcel #1042 has not arrived.")
    page.wait_for_function("document.body.dataset.liveReady === '1'")

    # 3b. Opening it marks the customer's message read on LINE.
    marks = stand_in_shows(
        "the read mark", lambda: shop.control.read_marks(shop.channel_id, chat_id=shop.user_id)
    )
    assert [mark["message_id"] for mark in marks] == [first_id]

    # 1. The customer writes again from the stand-in's phone page: the open page shows it, unreloaded.
    page.evaluate("window.__notReloaded = true")
    phone = context.new_page()
    # The phone fetches the business's photo from the link's host: the worker's PUBLIC_BASE_URL,
    # which is not the live server's address (the worker reads its own settings). Served from there.
    phone.route(re.compile(r"^https?://[^/]+/files/"), serve_from(live_server.url))
    phone.goto(f"{shop.control.base_url}/?channel={shop.channel_id}")
    expect(phone.get_by_label("LINE user")).to_have_value(shop.user_id)
    phone.get_by_label("Message").fill("I am at home all day, by the way.")
    phone.get_by_role("button", name="Send", exact=True).click()
    expect(phone.locator("#delivery")).to_contain_text("webhook 200")
    arrived = page.locator("#timeline .msg", has_text="I am at home all day, by the way.")
    expect(arrived).to_be_visible(timeout=LIVE_MS)
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "inbox-e2e-customer-message-live")

    # 3a. Typing in the composer shows LINE's loading animation to the customer.
    text = page.locator("#composer-text")
    text.click()
    text.type("Thank you! ")
    loading = stand_in_shows(
        "the loading animation", lambda: shop.control.loading_calls(shop.channel_id, chat_id=shop.user_id)
    )
    assert loading[0]["loading_seconds"] >= 5

    # 2. A reply with a photo chosen in the composer: both reach LINE, the photo as a link to its bytes.
    text.type("Here is the photo the courier took at your door.")
    page.locator("#composer-file").set_input_files(
        {"name": "doorstep.png", "mimeType": "image/png", "buffer": PARCEL_PHOTO}
    )
    expect(page.locator("#composer-file-name")).to_have_text("doorstep.png")
    page.get_by_role("button", name="Send", exact=True).click()
    reply = page.locator(
        "#timeline .msg-out", has_text="Thank you! Here is the photo the courier took at your door."
    )
    expect(reply).to_be_visible()
    expect(page.locator("#composer-file-name")).to_have_text("")
    photo = Message.objects.get(
        conversation=conversation, direction=Direction.OUTBOUND, kind=MessageKind.IMAGE
    )
    expect(page.locator(f"#message-{photo.pk} img")).to_be_visible()

    sent = stand_in_shows(
        "the reply and the photo",
        lambda: (found := shop.sent(chat_id=shop.user_id)) and len(found) >= 2 and found,
    )
    # Each message is its own delivery task: the worker may send them in either order.
    by_type = {entry["message"]["type"]: entry["message"] for entry in sent}
    assert sorted(by_type) == ["image", "text"] and len(sent) == 2
    assert by_type["text"]["text"] == "Thank you! Here is the photo the courier took at your door."
    link = by_type["image"]["originalContentUrl"]
    # The worker builds the link with its own PUBLIC_BASE_URL; the live server serves its path.
    parts = urllib.parse.urlsplit(link)
    served = page.request.get(f"{live_server.url}{parts.path}?{parts.query}")
    assert served.status == 200
    assert served.headers["content-type"] == "image/png"
    assert served.body() == PARCEL_PHOTO
    # The agent's page follows the delivery states the worker writes.
    expect(reply.locator(".delivery")).to_contain_text("Delivered", timeout=LIVE_MS)
    expect(page.locator(f"#message-{photo.pk} .delivery")).to_contain_text("Delivered", timeout=LIVE_MS)
    expect(page.locator("#customer-pane")).to_contain_text("Tokyo / Osaka")
    page.locator("#timeline").evaluate("(timeline) => { timeline.scrollTop = timeline.scrollHeight; }")
    screenshot(page, "inbox-e2e-reply-with-photo")

    # The customer's phone shows the answer and the photo (its link served by the live server).
    expect(phone.locator("#chat .bubble.business", has_text="Here is the photo")).to_be_visible(
        timeout=LIVE_MS
    )
    phone_photo = phone.locator("#chat .bubble.business img")
    expect(phone_photo).to_be_visible()
    phone.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=phone_photo.element_handle())
    screenshot(phone, "inbox-e2e-phone")


def test_transfer_to_an_agent_who_ends_with_notes_and_closes_then_a_transfer_to_a_queue(
    browser, page, login_as, live_server, screenshot, shop, desk
):
    mei, kenji, billing = desk["mei"], desk["kenji"], desk["billing"]
    customer_writes(shop, "My refund for order #1042 has not come through.")
    conversation = assigned_to(shop, mei)
    kenji_context, kenji_page, kenji_errors = signed_in_page(browser, live_server, kenji)
    serve_line_pictures(page.context)
    try:
        kenji_page.goto("/inbox/")
        expect(kenji_page.locator("body[data-live-ready='1']")).to_have_count(1)
        expect(kenji_page.locator("#offers .offer-card")).to_have_count(0)

        # 4a. Mei transfers it to Kenji with a note: her page goes back to the inbox.
        login_as(mei)
        page.goto(f"/inbox/c/{conversation.pk}/")
        expect(page.locator("#timeline")).to_contain_text("My refund for order #1042")
        page.locator('[data-action="transfer"] summary').click()
        page.get_by_label("Agent", exact=True).select_option(str(kenji.pk))
        page.get_by_label("Note for the next agent").fill("Refund question: Billing knows the order.")
        screenshot(page, "inbox-e2e-transfer-to-agent")
        page.get_by_role("button", name="Transfer", exact=True).click()
        page.wait_for_url("**/inbox/")
        expect(page.locator(f"#home-mine [data-conversation='{conversation.pk}']")).to_have_count(0)

        # Kenji's open inbox gets the offer live; he accepts and reads the note in the timeline.
        card = kenji_page.locator("#offers .offer-card")
        expect(card).to_have_count(1, timeout=LIVE_MS)
        expect(card).to_contain_text("My refund for order #1042")
        card.get_by_role("button", name="Accept").click()
        expect(kenji_page).to_have_url(re.compile(rf"/inbox/c/{conversation.pk}/$"))
        note = kenji_page.locator("#timeline .activity-transferred")
        expect(note).to_contain_text("Transferred by Mei Sato")
        expect(note.locator(".activity-note")).to_have_text("Refund question: Billing knows the order.")
        conversation.refresh_from_db()
        assert (conversation.state, conversation.assigned_agent_id) == (ConversationState.ACTIVE, kenji.pk)

        # 4b. Kenji answers, ends it with wrap-up notes, then closes it.
        kenji_page.locator("#composer-text").fill("The refund left today; allow three days.")
        kenji_page.locator("#composer-text").press("Enter")
        stand_in_shows(
            "Kenji's answer",
            lambda: [
                entry
                for entry in shop.sent(chat_id=shop.user_id)
                if entry["message"].get("text") == "The refund left today; allow three days."
            ],
        )
        kenji_page.locator('[data-action="end"] summary').click()
        kenji_page.get_by_label("Wrap-up notes").fill("Refund of order #1042 sent; customer told 3 days.")
        kenji_page.get_by_role("button", name="End conversation").click()
        # The page reloads to show the new state (the header is not a live fragment).
        expect(kenji_page.locator(".conversation-head .state")).to_have_text("Wrap-up")
        expect(kenji_page.locator('[data-action="close"]')).to_be_visible()
        expect(kenji_page.locator('[data-action="end"]')).to_have_count(0)
        expect(kenji_page.locator("#timeline .activity-note").last).to_have_text(
            "Refund of order #1042 sent; customer told 3 days."
        )
        expect(kenji_page.locator("#customer-pane")).to_contain_text("Tokyo / Osaka")
        screenshot(kenji_page, "inbox-e2e-wrap-up")
        conversation.refresh_from_db()
        assert conversation.state == ConversationState.WRAP_UP
        assert conversation.wrap_up_notes == "Refund of order #1042 sent; customer told 3 days."

        kenji_page.locator('[data-action="close"] summary').click()
        kenji_page.get_by_role("button", name="Close conversation").click()
        expect(kenji_page.locator(".conversation-head .state")).to_have_text("Closed")
        expect(kenji_page.locator("#conversation-actions [data-action]")).to_have_count(0)
        expect(kenji_page.locator("#read-only")).to_have_text("This conversation is closed.")
        expect(kenji_page.locator("#composer")).to_have_count(0)
        expect(kenji_page.locator("#customer-pane")).to_contain_text("Tokyo / Osaka")
        screenshot(kenji_page, "inbox-e2e-closed")
        conversation.refresh_from_db()
        assert conversation.state == ConversationState.CLOSED

        # 4c. The customer writes again: a new conversation, Mei's; she transfers it to the Billing
        # queue, whose member Kenji gets it (the workstream accepts for him) on his open inbox.
        kenji_page.goto("/inbox/")
        expect(kenji_page.locator("body[data-live-ready='1']")).to_have_count(1)
        customer_writes(shop, "One more thing: can I get the invoice as a PDF?")
        second = wait_for(
            lambda: (
                Conversation.objects.filter(
                    messaging_account=shop.account,
                    thread_id=shop.user_id,
                    state=ConversationState.ACTIVE,
                    assigned_agent=mei,
                )
                .exclude(pk=conversation.pk)
                .first()
            ),
            timeout=WORKER_SECONDS,
            message="the customer's second conversation to reach Mei",
        )
        page.goto(f"/inbox/c/{second.pk}/")
        expect(page.locator("#timeline")).to_contain_text("can I get the invoice as a PDF?")
        page.locator('[data-action="transfer"] summary').click()
        page.get_by_label("Queue", exact=True).select_option(str(billing.pk))
        page.get_by_label("Note for the next agent").fill("Invoice copy")
        page.get_by_role("button", name="Transfer", exact=True).click()
        page.wait_for_url("**/inbox/")

        row = kenji_page.locator(f"#home-mine [data-conversation='{second.pk}']")
        expect(row).to_contain_text("can I get the invoice as a PDF?", timeout=LIVE_MS)
        screenshot(kenji_page, "inbox-e2e-transferred-to-queue")
        second.refresh_from_db()
        assert (second.queue_id, second.assigned_agent_id) == (billing.pk, kenji.pk)
        assert kenji_errors == []
    finally:
        kenji_context.close()
