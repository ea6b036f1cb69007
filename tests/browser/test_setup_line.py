"""The "Set up LINE" wizard walked in headless Chromium, with a screenshot of each step
(var/screenshots/setup-line-*.png); tests/routing/test_setup_line_wizard.py covers every rule with
the test client."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from omnichannel.models import MessagingAccount
from routing.models import ChannelInstance
from tests.factories import AdministratorFactory, LineMessagingAccountFactory
from tests.routing.conftest import instance_make, workstream_make
from tests.routing.test_setup_line_wizard import ATTACHED_ALREADY, walk_to_summary, wizard_url

from .conftest import CHROMIUM


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_in_a_browser_an_administrator_walks_every_step_with_a_screenshot_of_each(
    page,
    login_as,
    screenshot,
):
    from playwright.sync_api import expect

    login_as(AdministratorFactory())
    workstream = workstream_make("Support")
    account = LineMessagingAccountFactory(name="Sapporo shop")
    LineMessagingAccountFactory(name="Fukuoka shop")
    current = page.locator('[aria-current="step"]')

    page.goto(reverse("admin:routing_workstream_change", args=[workstream.pk]))
    page.get_by_role("link", name="Set up LINE").click()

    expect(page.get_by_role("list", name="Steps").get_by_role("listitem")).to_have_text(
        ["LINE", "Language", "Behaviors", "User features", "Summary", "Done"]
    )
    expect(current).to_have_text("LINE")
    page.get_by_role("button", name="Next").click()  # nothing picked: refused
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.get_by_text("Pick a LINE account.")).to_be_visible()
    page.get_by_role("radio", name=re.compile("Sapporo shop")).check()
    screenshot(page, "setup-line-1-line")
    page.get_by_role("button", name="Next").click()

    expect(current).to_have_text("Language")
    page.get_by_label("Language").select_option(label="Japanese")
    screenshot(page, "setup-line-2-language")
    page.get_by_role("button", name="Next").click()

    expect(current).to_have_text("Behaviors")
    page.get_by_label("Post-conversation survey").check()
    screenshot(page, "setup-line-3-behaviors")
    page.get_by_role("button", name="Next").click()

    expect(current).to_have_text("User features")
    page.get_by_label("Agents can send file attachments").uncheck()
    page.get_by_role("button", name="Back").click()
    expect(current).to_have_text("Behaviors")
    expect(page.get_by_label("Post-conversation survey")).to_be_checked()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Agents can send file attachments")).not_to_be_checked()
    expect(page.locator("#setup-line-features-note")).to_contain_text(
        "only matter when File attachments is on"
    )
    screenshot(page, "setup-line-4-user-features")
    page.get_by_role("button", name="Next").click()

    expect(current).to_have_text("Summary")
    expect(page.locator(".setup-line-summary")).to_contain_text("Sapporo shop")
    expect(page.locator(".setup-line-summary")).to_contain_text("Japanese")
    screenshot(page, "setup-line-5-summary")
    page.get_by_role("button", name="Finish").click()

    expect(current).to_have_text("Done")
    expect(page.locator("#setup-line-done")).to_contain_text("Sapporo shop")
    screenshot(page, "setup-line-6-done")
    instance = ChannelInstance.objects.get(messaging_account=account)
    assert (instance.workstream_id, instance.language, instance.post_conversation_survey) == (
        workstream.pk,
        "ja",
        True,
    )
    assert instance.agents_can_send_attachments is False
    page.reload()
    expect(page.locator("#setup-line-done")).to_contain_text("Sapporo shop")

    # The next run offers only the account left; with none left the page says where to make one.
    page.get_by_role("link", name="Set up another LINE account").click()
    expect(page.get_by_role("radio", name=re.compile("Sapporo shop"))).to_have_count(0)
    expect(page.get_by_role("radio", name=re.compile("Fukuoka shop"))).to_have_count(1)
    instance_make(workstream_make("Sales"), account=MessagingAccount.objects.get(name="Fukuoka shop"))
    page.reload()
    expect(page.locator("#setup-line-no-account")).to_contain_text("No LINE account is available")
    screenshot(page, "setup-line-1-line-no-account")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_in_a_browser_finish_with_an_account_taken_meanwhile_shows_the_reason_on_the_line_step(
    context,
    page,
    live_server,
    screenshot,
):
    from django.conf import settings
    from django.test import Client
    from playwright.sync_api import expect

    workstream = workstream_make("Support")
    account = LineMessagingAccountFactory(name="Kyoto shop")
    LineMessagingAccountFactory(name="Sendai shop")
    client = Client()
    client.force_login(AdministratorFactory())
    walk_to_summary(client, workstream, account)  # the first steps, in the session the browser gets
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": cookie.key, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
    )
    page.goto(wizard_url(workstream, "summary"))
    expect(page.locator(".setup-line-summary")).to_contain_text("Kyoto shop")
    instance_make(workstream_make("Sales"), account=account)  # another administrator, meanwhile

    page.get_by_role("button", name="Finish").click()

    expect(page.locator('[aria-current="step"]')).to_have_text("LINE")
    expect(page.locator("#setup-line-notice")).to_have_text(ATTACHED_ALREADY)
    expect(page.get_by_role("radio", name=re.compile("Kyoto shop"))).to_have_count(0)
    screenshot(page, "setup-line-1-line-account-taken")
    page.get_by_role("radio", name=re.compile("Sendai shop")).check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Language")).to_have_value("ja")  # the later steps kept their values
