"""The set-up pages of the admin site, in a real browser: the four-step "New account" wizard with its
Copy button, the masked change form, and who may open the admin at all."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

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
    page.get_by_role("link", name="Back to the list").click()

    expect(page).to_have_url(re.compile(f"{CHANGELIST}$"))
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("Bangkok shop on LINE")
    expect(page.locator("#result_list tbody tr")).to_contain_text(callback_url)
    screenshot(page, "admin-messaging-accounts")


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
