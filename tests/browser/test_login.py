"""Signing in on the product's own login page, in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.factories import TEST_PASSWORD, AgentFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# static/omnichannel.css: the brand colour of the top bar's "Omnichannel" link.
BRAND_GREEN = "rgb(6, 199, 85)"


def sign_in(page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_an_agent_signs_in_and_lands_on_their_inbox(page, live_server, screenshot, css_rules):
    agent = AgentFactory(first_name="Mei", last_name="Sato")

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    assert css_rules(page, "omnichannel.css") > 0, "static/omnichannel.css did not load"
    expect(page.locator(".brand")).to_have_css("color", BRAND_GREEN)
    screenshot(page, "login")

    sign_in(page, agent.username, TEST_PASSWORD)

    expect(page).to_have_url(f"{live_server.url}/inbox/")
    expect(page.get_by_role("heading", name="My conversations")).to_be_visible()
    expect(page.locator(".topbar .who")).to_have_text(agent.username)
    # An agent is not staff: no way into the admin site from here.
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    screenshot(page, "home-agent")


def test_a_wrong_password_shows_the_error_and_signs_nobody_in(page, screenshot):
    agent = AgentFactory()

    page.goto("/accounts/login/")
    sign_in(page, agent.username, TEST_PASSWORD + "-wrong")

    expect(page.get_by_role("alert")).to_have_text(
        "Your username and password didn't match. Please try again."
    )
    expect(page.get_by_label("Username")).to_be_visible()
    screenshot(page, "login-wrong-password")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
