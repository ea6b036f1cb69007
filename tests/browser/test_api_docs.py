"""The API docs page in a real browser with no internet: every request that is not for the live server
is refused, as on a machine without a network, and Swagger UI still shows the API's operations."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.factories import AgentFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def offline(context, live_server) -> list[str]:
    """Refuse every request that leaves the live server (a CDN, a validator, fonts): the list holds
    their URLs, so that a test can also say that none was even tried."""
    live_host = urlsplit(live_server.url).netloc
    refused: list[str] = []

    def route(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == live_host:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", route)
    return refused


def test_the_api_docs_render_their_operations_with_the_network_off(page, login_as, offline, screenshot):
    login_as(AgentFactory())

    page.goto("/api/docs/")

    operations = page.locator(".opblock")
    expect(operations.filter(has_text="/api/v1/conversations/").first).to_be_visible()
    expect(operations.filter(has_text="/api/v1/messaging-accounts/").first).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Omnichannel back office API")
    assert operations.count() > 5
    # Swagger UI's own stylesheet applied (an unstyled page would still hold the text).
    expect(operations.first).to_have_css("border-radius", "4px")
    assert offline == [], f"the docs page reached outside the server: {offline}"
    screenshot(page, "api-docs-offline")


def test_the_api_docs_send_a_visitor_who_is_not_signed_in_to_the_sign_in_page(page, live_server, offline):
    page.goto("/api/docs/")

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/api/docs/$"))
    assert offline == []
