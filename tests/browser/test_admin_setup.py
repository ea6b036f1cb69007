"""The set-up pages of the admin site, in a real browser: the four-step "New account" wizard with its
Copy button, the masked change form, and who may open the admin at all."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from channels_line.models import LineWebhookEvent
from omnichannel.models import ChannelType, MessagingAccount
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    LineMessagingAccountFactory,
    channel_access_token_new,
    channel_secret_new,
)

from .conftest import PUBLIC_BASE_URL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHANGELIST = "/admin/omnichannel/messagingaccount/"


def wizard_steps(page):
    return page.get_by_role("list", name="Steps").get_by_role("listitem")


def test_an_administrator_creates_a_line_account_through_the_four_wizard_steps(
    page, login_as, screenshot, css_rules
):
    login_as(AdministratorFactory())
    secret, token = channel_secret_new(), channel_access_token_new()

    page.goto("/admin/")
    assert css_rules(page, "base.css") > 0, "the admin's CSS did not load"
    screenshot(page, "admin-index")
    page.locator("#content-main").get_by_role("link", name="Messaging accounts").click()
    expect(page).to_have_url(re.compile(f"{CHANGELIST}$"))
    screenshot(page, "admin-messaging-accounts-empty")
    page.get_by_role("link", name="New account").click()

    # 1. Channel details
    expect(page).to_have_url(re.compile(r"/admin/omnichannel/messagingaccount/new/channel/$"))
    expect(wizard_steps(page)).to_have_text(
        ["Channel details", "Account details", "Callback information", "Done"]
    )
    expect(page.locator('[aria-current="step"]')).to_have_text("Channel details")
    page.get_by_label("Name").fill("Bangkok shop on LINE")
    expect(page.get_by_label("LINE")).to_be_checked()
    screenshot(page, "wizard-1-channel-details")
    page.get_by_role("button", name="Next").click()

    # 2. Account details
    expect(page.locator('[aria-current="step"]')).to_have_text("Account details")
    expect(page.locator(".wizard-note strong")).to_have_text("Bangkok shop on LINE")
    page.get_by_label("Channel ID").fill("1657000001")
    page.get_by_label("Channel secret").fill(secret)
    page.get_by_label("Channel access token (long-lived)").fill(token)
    screenshot(page, "wizard-2-account-details")
    page.get_by_role("button", name="Create account and continue").click()

    # 3. Callback information
    expect(page.locator('[aria-current="step"]')).to_have_text("Callback information")
    account = MessagingAccount.objects.select_related("line").get(name="Bangkok shop on LINE")
    assert account.channel_type == ChannelType.LINE
    assert account.line.channel_id == "1657000001"
    callback_url = f"{PUBLIC_BASE_URL}/webhooks/line/{account.pk}/"
    expect(page.get_by_label("Callback URL")).to_have_value(callback_url)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status")).to_have_text("Copied.")
    assert page.evaluate("() => navigator.clipboard.readText()") == callback_url
    screenshot(page, "wizard-3-callback-information")
    assert secret not in page.content() and token not in page.content()
    page.get_by_role("link", name="Next").click()

    # 4. Done
    expect(page.locator('[aria-current="step"]')).to_have_text("Done")
    expect(page.locator(".wizard-steps li.done")).to_have_count(3)
    expect(page.get_by_text(callback_url)).to_be_visible()
    assert secret not in page.content() and token not in page.content()
    screenshot(page, "wizard-4-done")
    expect(page.get_by_role("link", name="Open the account")).to_have_attribute(
        "href", f"{CHANGELIST}{account.pk}/change/"
    )

    # Reloading the Done page shows the account again, not an empty first step.
    page.reload()
    expect(page.locator('[aria-current="step"]')).to_have_text("Done")
    expect(page.get_by_text(callback_url)).to_be_visible()
    expect(page.locator(".readonly").filter(has_text="1657000001")).to_be_visible()
    screenshot(page, "wizard-4-done-reloaded")
    page.get_by_role("link", name="Back to the list").click()

    expect(page).to_have_url(re.compile(f"{CHANGELIST}$"))
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Bangkok shop on LINE")
    expect(row.locator("td.field-channel_id_display")).to_have_text("1657000001")
    screenshot(page, "admin-messaging-accounts")
    # The callback URL keeps to one line, cut short by an ellipsis; its title and Copy give it whole.
    url_cell = row.locator(".callback-url")
    expect(url_cell).to_have_attribute("title", callback_url)
    expect(url_cell).to_have_text(callback_url)
    assert url_cell.evaluate("(node) => node.scrollWidth > node.clientWidth"), "the URL is not cut short"
    assert url_cell.evaluate("(node) => getComputedStyle(node).textOverflow") == "ellipsis"
    line_height = url_cell.evaluate("(node) => parseFloat(getComputedStyle(node).lineHeight) || 20")
    assert url_cell.bounding_box()["height"] <= line_height * 1.5, "the URL wraps onto several lines"
    # Every column shows without scrolling the list sideways, the Copy button and the last one included.
    results = page.locator("#changelist .results")
    assert results.evaluate("(node) => node.scrollWidth <= node.clientWidth"), "the list scrolls sideways"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280, "the page scrolls sideways"
    expect(row.locator("td.field-credentials_check")).to_be_in_viewport()
    expect(row.get_by_role("button", name="Copy")).to_be_in_viewport()
    url_column = row.locator("td.field-callback_url").bounding_box()
    copy_button = row.get_by_role("button", name="Copy").bounding_box()
    assert copy_button["x"] + copy_button["width"] <= url_column["x"] + url_column["width"], (
        "the Copy button spills into the next column"
    )
    assert url_cell.bounding_box()["width"] >= 96, "the URL has no room left to show"
    row.get_by_role("button", name="Copy").click()
    expect(row.get_by_role("status")).to_have_text("Copied.")
    assert page.evaluate("() => navigator.clipboard.readText()") == callback_url
    screenshot(page, "admin-messaging-accounts-copied")


def test_the_change_form_shows_the_secrets_as_set_and_never_their_values(page, login_as, screenshot):
    login_as(AdministratorFactory())
    secret, token = channel_secret_new(), channel_access_token_new()
    account = LineMessagingAccountFactory(
        name="Chiang Mai shop", channel_id="1657000002", channel_secret=secret, channel_access_token=token
    )

    page.goto(f"{CHANGELIST}{account.pk}/change/")

    expect(page.get_by_label("Channel ID")).to_have_value("1657000002")
    expect(page.locator(".field-channel_secret .secret-status")).to_have_text("•••• set")
    expect(page.locator(".field-channel_access_token .secret-status")).to_have_text("•••• set")
    expect(page.get_by_label("Channel secret")).to_have_value("")
    expect(page.get_by_label("Channel access token (long-lived)")).to_have_value("")
    expect(page.get_by_label("Callback URL")).to_have_value(f"{PUBLIC_BASE_URL}/webhooks/line/{account.pk}/")
    html = page.content()
    assert secret not in html
    assert token not in html
    screenshot(page, "admin-messaging-account-change")


def test_an_agent_cannot_open_the_admin_and_is_sent_to_its_login_page(page, login_as, screenshot):
    agent = AgentFactory()
    login_as(agent)

    page.goto(CHANGELIST)

    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/omnichannel/messagingaccount/$"))
    expect(page.locator(".errornote")).to_contain_text(
        f"You are authenticated as {agent.username}, but are not authorized to access this page."
    )
    expect(page.get_by_role("table")).to_have_count(0)
    screenshot(page, "admin-login-agent-refused")


def test_the_done_page_leads_to_the_stand_ins_phone_and_the_accounts_conversations(
    page, context, login_as, screenshot, standin, live_server, settings
):
    settings.PUBLIC_BASE_URL = live_server.url
    login_as(AdministratorFactory())
    page.goto(f"{CHANGELIST}new/channel/")
    page.get_by_label("Name").fill("Phuket shop")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Channel ID").fill("1657000005")
    page.get_by_label("Channel secret").fill(channel_secret_new())
    page.get_by_label("Channel access token (long-lived)").fill(channel_access_token_new())
    page.get_by_role("button", name="Create account and continue").click()
    page.get_by_role("link", name="Next").click()

    next_steps = page.get_by_role("group", name="Next steps")
    expect(next_steps).to_contain_text(f"LINE stand-in at {standin.base_url}")
    command = page.locator("#standin-register-command")
    expect(command).to_have_text("python manage.py line_standin_register 'Phuket shop'")
    screenshot(page, "wizard-4-done-next-steps")

    # The administrator runs the command the page shows, then opens the phone page it links to.
    call_command("line_standin_register", "Phuket shop", stdout=io.StringIO())
    with context.expect_page() as opened:
        next_steps.get_by_role("link", name="the stand-in's phone page for this account").click()
    phone = opened.value
    expect(phone.locator("#bot-name")).to_have_text("Phuket shop")
    expect(phone.get_by_label("Channel")).to_have_value("1657000005")
    phone.once("dialog", lambda dialog: dialog.accept("Somchai"))
    phone.get_by_role("button", name="+ user").click()
    expect(phone.locator("#delivery")).to_contain_text("webhook 200")
    phone.get_by_label("Message").fill("Do you ship to Chiang Mai?")
    phone.get_by_role("button", name="Send", exact=True).click()
    expect(phone.locator("#chat .bubble.customer")).to_contain_text("Do you ship to Chiang Mai?")
    screenshot(phone, "standin-phone-from-done-page")
    account = MessagingAccount.objects.get(name="Phuket shop")
    assert list(
        LineWebhookEvent.objects.filter(messaging_account=account).values_list("event_type", flat=True)
    ) == ["follow", "message"]

    next_steps.get_by_role("link", name="See this account's conversations").click()
    expect(page).to_have_url(
        re.compile(rf"/admin/omnichannel/conversation/\?messaging_account__id__exact={account.pk}")
    )
    # The filter is one the list knows (an unknown one would send to ?e=1). Whether the conversation is
    # listed yet depends on a worker (one may run from earlier tests): processing has its own tests.
    expect(page).not_to_have_url(re.compile(r"[?&]e=1"))
    expect(page.locator("#changelist")).to_contain_text(re.compile(r"\b[01] conversations?\b"))
    screenshot(page, "admin-conversations-of-account")
