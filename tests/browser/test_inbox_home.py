"""The inbox home in a real browser: an offer made while the agent's page is open appears within
seconds (live, no reload) with its countdown and is accepted (on to the conversation); the presence
switcher; a pick queue item picked, and the loser of the race told so."""

from __future__ import annotations

import datetime
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents.models import AgentProfile, Presence
from agents.services import agent_presence_set
from omnichannel import lifecycle
from omnichannel.models import ConversationState
from routing.distribution import PICK_LOST
from routing.models import DistributionMode
from tests.factories import ContactFactory, ConversationFactory, MessageFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# An offer's notice goes from the database to the page through the hub (4 reads a second) and the
# page's stream, then htmx fetches the fragment: well under this.
ARRIVAL_MS = 5_000


def test_an_offer_arrives_live_on_the_open_inbox_and_is_accepted(page, login_as, screenshot):
    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue)
    agent = agent_make(queue, presence=Presence.AVAILABLE, capacity=4)
    agent.first_name, agent.last_name = "Mei", "Sato"
    agent.save(update_fields=["first_name", "last_name"])
    login_as(agent)
    page.goto("/inbox/")
    expect(page.locator("body[data-live-ready='1']")).to_have_count(1)
    expect(page.locator("#offers .offer-card")).to_have_count(0)
    screenshot(page, "inbox-home-empty")

    item = item_make(queue, workstream)
    profile = item.social_profile
    profile.display_name, profile.language = "Aiko Tanaka", "ja"
    profile.contact = ContactFactory(name="Aiko Tanaka (member 1042)")
    profile.save()
    MessageFactory(conversation=item, text="Hello, my parcel has not arrived.")
    offer = lifecycle.offer_make(conversation=item, agent=agent, queue=queue, timeout_seconds=90)

    card = page.locator(f"#offers .offer-card[data-offer='{offer.pk}']")
    expect(card).to_be_visible(timeout=ARRIVAL_MS)
    expect(card.locator(".customer-name")).to_have_text("Aiko Tanaka")
    expect(card).to_contain_text("Aiko Tanaka (member 1042)")
    expect(card).to_contain_text("Support")
    expect(card.locator(".offer-message")).to_have_text("Hello, my parcel has not arrived.")
    # The countdown runs from the server's expiry (1:30 at most) and ticks.
    countdown = card.locator("[data-countdown]")
    expect(countdown).to_have_text(re.compile(r"^1:[0-3]\d$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=3_000)
    # The load counts the offer's capacity at once (the agent's notice refreshes the switcher).
    expect(page.locator("#home-presence .load-value")).to_have_text("1 / 4")
    screenshot(page, "inbox-home-offer")

    card.get_by_role("button", name="Accept").click()

    expect(page).to_have_url(re.compile(rf"/inbox/c/{item.pk}/$"))
    item.refresh_from_db()
    assert item.state == ConversationState.ACTIVE
    assert item.assigned_agent_id == agent.pk
    page.goto("/inbox/")
    row = page.locator(f"#home-mine [data-conversation='{item.pk}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Hello, my parcel has not arrived.")
    expect(page.locator("#offers .offer-card")).to_have_count(0)
    screenshot(page, "inbox-home-mine")


def test_the_presence_switcher_and_a_pick_race(page, login_as, screenshot):
    queue = queue_make("Walk-in")
    workstream = workstream_make("Walk-in ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agent, colleague = agent_make(queue, presence=Presence.OFFLINE), agent_make(queue)
    taken, free = item_make(queue, workstream), item_make(queue, workstream)
    MessageFactory(conversation=taken, text="Can I change my delivery address?")
    MessageFactory(conversation=free, text="Do you ship to Osaka?")
    login_as(agent)
    page.goto("/inbox/")
    expect(page.locator("body[data-live-ready='1']")).to_have_count(1)

    page.get_by_role("button", name="Busy - do not disturb").click()
    expect(page.get_by_role("button", name="Busy - do not disturb")).to_have_attribute("aria-pressed", "true")
    assert AgentProfile.objects.get(user=agent).presence == Presence.BUSY_DND
    page.get_by_role("button", name="Available").click()
    expect(page.get_by_role("button", name="Available")).to_have_attribute("aria-pressed", "true")

    pick_rows = page.locator("#home-pick .pick-row")
    expect(pick_rows).to_have_count(2)
    # A colleague takes one while this page shows it: the page lists it no longer, live.
    from routing.distribution import conversation_pick

    conversation_pick(conversation=taken, agent=colleague)
    expect(pick_rows).to_have_count(1, timeout=ARRIVAL_MS)
    screenshot(page, "inbox-home-pick")

    # The race the page cannot see coming: the colleague picks the other one as the click leaves.
    def colleague_first(route) -> None:
        conversation_pick(conversation=free, agent=colleague)
        route.continue_()

    page.route(f"**/inbox/pick/{free.pk}/", colleague_first)
    page.locator(f"#home-pick [data-conversation='{free.pk}']").get_by_role("button", name="Pick").click()
    expect(page.locator("#home-pick [role=alert]")).to_have_text(str(PICK_LOST))
    screenshot(page, "inbox-home-pick-lost")


def test_my_conversations_with_unread_counts_and_preferences_effective_at_once(page, login_as, screenshot):
    agent = agent_make(presence=Presence.BUSY, capacity=6, used=3)
    now = timezone.now()
    for minutes, name, texts in (
        (2, "Aiko Tanaka", ["Hello!", "Is my order on its way?"]),
        (45, "Somchai P.", ["Thanks, that solved it."]),
        (180, "Kenji", []),
    ):
        conversation = ConversationFactory(
            assigned_agent=agent,
            state=ConversationState.ACTIVE if texts else ConversationState.WAITING,
            capacity_held=1 if texts else 0,
            social_profile__display_name=name,
            last_message_at=now - datetime.timedelta(minutes=minutes),
        )
        for text in texts:
            MessageFactory(
                conversation=conversation, text=text, sent_at=now - datetime.timedelta(minutes=minutes)
            )
        if not texts:
            MessageFactory(conversation=conversation, outbound=True, text="We will call you tomorrow.")
    login_as(agent)
    page.goto("/inbox/")

    rows = page.locator("#home-mine .conversation-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Aiko Tanaka")
    expect(rows.nth(0).locator(".badge")).to_have_text("2")
    expect(rows.nth(2)).to_contain_text("You: We will call you tomorrow.")
    expect(page.locator("#mine-title .badge")).to_have_text("3")
    screenshot(page, "inbox-home-conversations")

    page.get_by_role("link", name=agent.username).click()
    page.get_by_label("Language", exact=True).select_option("ja")
    page.get_by_label("Time zone", exact=True).select_option("Asia/Tokyo")
    page.get_by_role("button", name="Save").click()

    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("select[name=time_zone]")).to_have_value("Asia/Tokyo")
    expect(page.locator(".preferences-panel .hint")).to_contain_text("Asia/Tokyo")
    profile = AgentProfile.objects.get(user=agent)
    assert (profile.language, profile.time_zone) == ("ja", "Asia/Tokyo")
    screenshot(page, "inbox-preferences")


def test_an_agent_whose_offer_runs_out_is_set_away_and_told_live_then_becomes_available(
    page, login_as, screenshot
):
    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue)
    agent = agent_make(queue, presence=Presence.AVAILABLE, capacity=4)
    offer = lifecycle.offer_make(
        conversation=item_make(queue, workstream), agent=agent, queue=queue, timeout_seconds=60
    )
    login_as(agent)
    page.goto("/inbox/")
    expect(page.locator("body[data-live-ready='1']")).to_have_count(1)
    expect(page.locator(f"#offers .offer-card[data-offer='{offer.pk}']")).to_be_visible()

    lifecycle.offers_expire(now=offer.expires_at)  # what the sweep does once the minute is over

    missed = page.locator("#offers .offer-missed")
    expect(missed).to_be_visible(timeout=ARRIVAL_MS)
    expect(page.locator(f"#offers .offer-card[data-offer='{offer.pk}']")).to_have_count(0)
    expect(page.locator("#home-presence [aria-pressed='true']")).to_have_attribute("value", Presence.AWAY)
    screenshot(page, "inbox-home-missed-offer")

    missed.get_by_role("button", name="Become available").click()

    expect(missed).to_have_count(0)
    expect(page.locator("#home-presence [aria-pressed='true']")).to_have_attribute(
        "value", Presence.AVAILABLE, timeout=ARRIVAL_MS
    )
    assert AgentProfile.objects.get(user=agent).presence == Presence.AVAILABLE

    # Missed again, then the presence changed elsewhere (the API, another tab): the notice goes live.
    again = lifecycle.offer_make(
        conversation=item_make(queue, workstream), agent=agent, queue=queue, timeout_seconds=60
    )
    lifecycle.offers_expire(now=again.expires_at)
    expect(missed).to_be_visible(timeout=ARRIVAL_MS)
    agent_presence_set(user=agent, presence=Presence.BUSY, actor=agent)
    expect(missed).to_have_count(0, timeout=ARRIVAL_MS)
