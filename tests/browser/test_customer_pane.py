"""The customer pane of the conversation page, in a real browser: the agent finds a contact by
searching and links it; a supervisor who has the same conversation open sees the link appear
without reloading; the agent unlinks it again."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from omnichannel import live
from omnichannel.models import ConversationState, SocialProfile
from tests.factories import (
    AgentFactory,
    ContactFactory,
    ConversationFactory,
    MessageFactory,
    SocialProfileFactory,
    SupervisorFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The customer's LINE picture, served in place of LINE's CDN (there is no network here).
PICTURE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="112" height="112">'
    '<rect width="112" height="112" fill="#f6c1d0"/>'
    '<text x="56" y="70" font-size="44" text-anchor="middle" font-family="sans-serif" fill="#7a2140">'
    "AT</text>"
    "</svg>"
)


def serve_line_pictures(context) -> None:
    context.route(
        "https://profile.line-scdn.net/**",
        lambda route: route.fulfill(status=200, content_type="image/svg+xml", body=PICTURE),
    )


def test_an_agent_links_a_contact_found_by_search_and_a_supervisors_open_page_shows_it_live(
    browser, context, page, live_server, login_as, screenshot, css_rules
):
    agent = AgentFactory(first_name="Mei")
    profile = SocialProfileFactory(
        display_name="Aiko Tanaka",
        status_message="Tokyo / Osaka",
        language="ja",
        picture_url="https://profile.line-scdn.net/0h-aiko-tanaka",
    )
    conversation = ConversationFactory(
        state=ConversationState.ACTIVE, assigned_agent=agent, social_profile=profile
    )
    MessageFactory(conversation=conversation, text="Hello, my order has not arrived.")
    # Earlier: one of the agent's own with this LINE user, one of another agent's with the contact's
    # other profile (listed once linked, not openable by this agent).
    ConversationFactory(
        social_profile=profile, state=ConversationState.CLOSED, closed_at=timezone.now(), assigned_agent=agent
    )
    aiko = ContactFactory(name="Aiko Tanaka-Mori", email="aiko.mori@example.jp", phone="090-1234-5678")
    ConversationFactory(
        social_profile=SocialProfileFactory(contact=aiko),
        state=ConversationState.CLOSED,
        closed_at=timezone.now(),
        assigned_agent=AgentFactory(),
    )
    ContactFactory(name="Ken Tanaka", email="ken@example.com", phone="03-5555-0101")
    serve_line_pictures(context)
    login_as(agent)

    # A supervisor has the same conversation open in another browser.
    supervisor_context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 800}
    )
    try:
        serve_line_pictures(supervisor_context)
        supervisor_page = supervisor_context.new_page()
        from django.conf import settings
        from django.test import Client

        supervisor_client = Client()
        supervisor_client.force_login(SupervisorFactory())
        cookie = supervisor_client.cookies[settings.SESSION_COOKIE_NAME]
        supervisor_context.add_cookies(
            [{"name": cookie.key, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
        )
        supervisor_page.goto(f"/inbox/c/{conversation.pk}/")
        supervisor_pane = supervisor_page.locator(".customer-summary")
        expect(supervisor_pane.get_by_text("Not linked to a contact.")).to_be_visible()
        expect(supervisor_page.locator("body")).to_have_attribute("data-live-ready", "1")

        page.goto(f"/inbox/c/{conversation.pk}/")
        pane = page.locator(".customer-summary")
        expect(pane.locator(".customer-name")).to_have_text("Aiko Tanaka")
        expect(pane.get_by_text("Tokyo / Osaka")).to_be_visible()
        expect(pane.get_by_text("Japanese")).to_be_visible()
        expect(pane.get_by_text(profile.external_id)).to_be_visible()
        expect(pane.get_by_text("Reachable")).to_be_visible()
        # static/inbox/customer.css: the summary is a white card on the pane's grey.
        expect(pane).to_have_css("background-color", "rgb(255, 255, 255)")
        assert css_rules(page, "customer.css") > 0, "static/inbox/customer.css did not load"
        # No contact is named exactly as the LINE user: nothing is suggested.
        expect(pane.get_by_text("Link to")).to_have_count(0)
        expect(pane.locator(".history-list li")).to_have_count(1)

        pane.get_by_label("Find a contact").fill("tanaka")
        results = pane.locator(".contact-result")
        expect(results).to_have_count(2)
        pane.get_by_label("Find a contact").fill("09012345678")
        expect(results).to_have_count(1)
        expect(results.first).to_contain_text("Aiko Tanaka-Mori")
        screenshot(page, "customer-pane-search")

        results.first.get_by_role("button", name="Link").click()

        contact_card = pane.locator(".contact-card")
        expect(contact_card).to_contain_text("Aiko Tanaka-Mori")
        expect(contact_card).to_contain_text("aiko.mori@example.jp")
        expect(pane.get_by_role("button", name="Unlink")).to_be_visible()
        assert SocialProfile.objects.get(pk=profile.pk).contact_id == aiko.pk
        # The contact's conversations on every profile: the other agent's shows its date and state only.
        expect(pane.locator(".history-list li")).to_have_count(2)
        expect(pane.locator(".history-list a")).to_have_count(1)
        screenshot(page, "customer-pane-linked")

        # Live on the supervisor's page, without a reload.
        expect(supervisor_pane.locator(".contact-card")).to_contain_text("Aiko Tanaka-Mori", timeout=5_000)
        screenshot(supervisor_page, "customer-pane-linked-supervisor")

        pane.get_by_role("button", name="Unlink").click()
        expect(pane.get_by_text("Not linked to a contact.")).to_be_visible()
        assert SocialProfile.objects.get(pk=profile.pk).contact_id is None
        expect(supervisor_pane.get_by_text("Not linked to a contact.")).to_be_visible(timeout=5_000)
    finally:
        supervisor_context.close()


def test_an_agent_creates_a_contact_from_the_profile(page, context, login_as, screenshot):
    agent = AgentFactory()
    profile = SocialProfileFactory(
        display_name="Sora Ito", picture_url="https://profile.line-scdn.net/0h-sora"
    )
    conversation = ConversationFactory(
        state=ConversationState.ACTIVE, assigned_agent=agent, social_profile=profile
    )
    serve_line_pictures(context)
    login_as(agent)

    page.goto(f"/inbox/c/{conversation.pk}/")
    pane = page.locator(".customer-summary")
    pane.get_by_text("Create a contact from this profile").click()
    expect(pane.get_by_label("Name")).to_have_value("Sora Ito")
    # The browser checks the form first; Django is stricter (a domain needs a dot).
    pane.get_by_label("Email").fill("sora@example")
    pane.get_by_role("button", name="Create and link").click()
    expect(pane.get_by_text("Enter a valid email address.")).to_be_visible()
    screenshot(page, "customer-pane-create-invalid")

    pane.get_by_label("Email").fill("sora@example.jp")
    pane.get_by_label("Phone").fill("080-2222-3333")
    pane.get_by_role("button", name="Create and link").click()

    expect(pane.locator(".contact-card")).to_contain_text("sora@example.jp")
    contact = SocialProfile.objects.select_related("contact").get(pk=profile.pk).contact
    assert (contact.name, contact.email, contact.phone) == ("Sora Ito", "sora@example.jp", "080-2222-3333")
    screenshot(page, "customer-pane-created")


def test_a_refresh_of_the_pane_keeps_what_the_agent_is_typing_in_the_search(page, context, login_as):
    agent = AgentFactory()
    profile = SocialProfileFactory(display_name="Sora Ito", status_message="Before")
    conversation = ConversationFactory(
        state=ConversationState.ACTIVE, assigned_agent=agent, social_profile=profile
    )
    ContactFactory(name="Sora Ito-Kato")
    serve_line_pictures(context)
    login_as(agent)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator("body")).to_have_attribute("data-live-ready", "1")
    pane = page.locator(".customer-summary")
    pane.get_by_label("Find a contact").fill("ito-k")
    expect(pane.locator(".contact-result")).to_have_count(1)
    page.evaluate("document.getElementById('customer-summary-css').dataset.kept = 'yes'")

    # The customer writes (and changed their LINE status): the page loads the pane again.
    SocialProfile.objects.filter(pk=profile.pk).update(status_message="After")
    with transaction.atomic():
        message = MessageFactory(conversation=conversation, text="Are you there?")
        live.message_changed(message_id=message.pk, conversation_id=conversation.pk)

    expect(pane.get_by_text("After")).to_be_visible()
    expect(pane.get_by_label("Find a contact")).to_have_value("ito-k")
    expect(pane.locator(".contact-result")).to_have_count(1)
    # Its stylesheet stays in place (not loaded again: no moment without styles), once.
    expect(page.locator("link#customer-summary-css")).to_have_attribute("data-kept", "yes")
    expect(page.locator("link[href$='inbox/customer.css']")).to_have_count(1)


def test_the_contact_named_as_the_line_user_is_suggested_and_linked_with_one_click(
    page, context, login_as, screenshot
):
    agent = AgentFactory()
    profile = SocialProfileFactory(display_name="Hana Mori", picture_url="")
    conversation = ConversationFactory(
        state=ConversationState.ACTIVE, assigned_agent=agent, social_profile=profile
    )
    hana = ContactFactory(name="hana mori", email="hana@example.jp", phone="")
    login_as(agent)

    page.goto(f"/inbox/c/{conversation.pk}/")
    suggestion = page.locator(".customer-summary .contact-suggestion")
    expect(suggestion).to_contain_text("Link to hana mori?")
    assert SocialProfile.objects.get(pk=profile.pk).contact_id is None  # suggested, not linked
    screenshot(page, "customer-pane-suggestion")

    suggestion.get_by_role("button", name="Link").click()

    expect(page.locator(".customer-summary .contact-card")).to_contain_text("hana@example.jp")
    assert SocialProfile.objects.get(pk=profile.pk).contact_id == hana.pk
