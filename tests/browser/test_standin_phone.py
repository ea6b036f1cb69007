"""The LINE stand-in's customer phone page, in a real browser: a customer's text sent from it reaches
the product's webhook on the live server and is kept as a webhook event (no worker: processing has
its own tests)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from channels_line.models import LineWebhookEvent
from channels_line.services import line_account_create
from channels_line.standin import StandinControl

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def connected_channel(standin, live_server, settings) -> dict:
    """A stand-in channel with one friend, connected to an account of the product whose webhook URL
    (as the New account wizard shows it) is on the live server."""
    settings.PUBLIC_BASE_URL = live_server.url
    control = StandinControl(standin.base_url)
    channel = control.channel_register(bot_display_name="Bangkok Shop")
    account = line_account_create(
        name="Bangkok shop on LINE",
        channel_id=channel["channel_id"],
        channel_secret=channel["channel_secret"],
        channel_access_token=channel["channel_access_token"],
    )
    channel = control.channel_register(
        channel_id=channel["channel_id"], webhook_url=account.line.callback_url
    )
    user = control.user_create(channel["channel_id"], display_name="Aiko Tanaka", language="en")
    return {"account": account, "channel": channel, "user": user}


def test_a_text_sent_from_the_customer_phone_reaches_the_product_as_a_webhook_event(
    page, standin, connected_channel, screenshot
):
    account, user = connected_channel["account"], connected_channel["user"]

    page.goto(standin.base_url + "/")
    expect(page.locator("#bot-name")).to_have_text("Bangkok Shop")
    expect(page.get_by_label("LINE user")).to_have_value(user["user_id"])
    screenshot(page, "standin-phone")

    page.get_by_label("Message").fill("Hello, is the blue bag in stock?")
    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.locator("#delivery")).to_contain_text("webhook 200")
    expect(page.locator("#chat .bubble.customer")).to_contain_text("Hello, is the blue bag in stock?")
    expect(page.locator("#status")).to_have_text("")
    screenshot(page, "standin-phone-text-sent")
    event = LineWebhookEvent.objects.get(messaging_account=account)
    assert event.event_type == "message"
    assert event.source_user_id == user["user_id"]
    assert event.raw["message"]["type"] == "text"
    assert event.raw["message"]["text"] == "Hello, is the blue bag in stock?"


def test_the_phone_page_opens_on_the_channel_its_link_names(page, standin, screenshot):
    control = StandinControl(standin.base_url)
    control.channel_register(bot_display_name="First Shop")
    wanted = control.channel_register(bot_display_name="Second Shop")
    control.user_create(wanted["channel_id"], display_name="Nattapong S.")

    page.goto(f"{standin.base_url}/?channel={wanted['channel_id']}")

    expect(page.get_by_label("Channel")).to_have_value(wanted["channel_id"])
    expect(page.locator("#bot-name")).to_have_text("Second Shop")
    expect(page.get_by_label("LINE user")).to_contain_text("Nattapong S.")
    screenshot(page, "standin-phone-channel-from-link")


def test_a_link_to_a_channel_the_stand_in_does_not_know_says_how_to_register_it(page, standin):
    StandinControl(standin.base_url).channel_register(bot_display_name="Known Shop")

    page.goto(f"{standin.base_url}/?channel=1657999999")

    expect(page.locator("#status")).to_contain_text("The stand-in knows no channel 1657999999")
    expect(page.locator("#status")).to_contain_text("line_standin_register")
