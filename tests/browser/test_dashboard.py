"""The supervisors' dashboard in a real browser: queues, agents, LINE quotas (from the stand-in) and
the conversations in progress; a transfer and a presence change show without reload."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from linebot.v3.messaging import PushMessageRequest, TextMessage
from playwright.sync_api import expect

from agents.models import Presence
from agents.services import agent_presence_set
from channels_line.client import line_client
from omnichannel import lifecycle
from omnichannel.models import Conversation
from tests.factories import LineMessagingAccountFactory, SupervisorFactory
from tests.routing.conftest import instance_make, queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A notice goes from the database to the page through the hub and the stream, then htmx fetches the
# fragment (after a short delay that gathers bursts): well under this.
ARRIVAL_MS = 5_000


def named(user, first: str, last: str):
    user.first_name, user.last_name = first, last
    user.save(update_fields=["first_name", "last_name"])
    return user


def test_the_dashboard_shows_queues_agents_quotas_and_conversations_and_follows_changes_live(
    page, login_as, screenshot, line_shop
):
    now = timezone.now()
    support = queue_make("Support", priority=1)
    billing = queue_make("Billing", priority=2)
    vip = queue_make("VIP", priority=0)
    workstream = workstream_make("Shop", fallback=support)
    instance_make(workstream, account=line_shop.account)
    # Mei takes no pushed work (Busy - do not disturb is not among the workstream's presences): a
    # worker still running from another test, which would give the queued items out, changes no
    # number this test reads of her.
    mei = named(agent_make(support, billing, presence=Presence.BUSY_DND, capacity=4), "Mei", "Sato")
    kenji = named(agent_make(support, presence=Presence.BUSY, capacity=3), "Kenji", "Ito")
    named(agent_make(billing, presence=Presence.OFFLINE, capacity=5), "Aya", "Mori")
    names = iter(["Aiko Tanaka", "Somchai P.", "Lena Vogel", "Hiro Abe", "Nok K.", "Ploy S.", "Yuki N."])

    def customer(queue, minutes: int) -> Conversation:
        item = item_make(queue, workstream, account=line_shop.account)
        Conversation.objects.filter(pk=item.pk).update(
            queued_at=now - datetime.timedelta(minutes=minutes),
            created_at=now - datetime.timedelta(minutes=minutes),
        )
        profile = item.social_profile
        profile.display_name = next(names)
        profile.save(update_fields=["display_name"])
        return Conversation.objects.get(pk=item.pk)

    for minutes in (14, 6, 2):
        customer(support, minutes)
    customer(vip, 1)
    taken = [
        lifecycle.conversation_transition(conversation=customer(support, m), action=lifecycle.ASSIGN, agent=a)
        for m, a in ((5, mei), (3, mei), (9, kenji))
    ]
    # The LINE account's quota: 82 of 100 messages pushed this month.
    line_shop.control.channel_register(channel_id=line_shop.channel_id, monthly_quota=100)
    with line_client(line_shop.account.line.channel_access_token) as client:
        for n in range(82):
            client.api.push_message(
                PushMessageRequest(to=line_shop.user_id, messages=[TextMessage(text=f"Sale {n}")]),
                _request_timeout=client.timeout,
            )

    # An account whose token LINE refuses: its quota is unknown, with LINE's reason.
    refused = LineMessagingAccountFactory(name="Old shop")

    login_as(SupervisorFactory())
    page.goto("/inbox/dashboard/")
    expect(page.locator("body[data-live-ready='1']")).to_have_count(1)

    queues = page.locator("#dash-queues")
    expect(queues.locator(f"tr[data-queue='{support.pk}'] .dash-open-items")).to_have_text("3")
    expect(queues.locator(f"tr[data-queue='{support.pk}']")).to_contain_text("14 min")
    expect(queues.locator(f"tr[data-queue='{billing.pk}'] .dash-open-items")).to_have_text("0")
    expect(page.locator(f"#dash-agents tr[data-agent='{mei.pk}'] .dash-load")).to_have_text("2/4")
    quota = page.locator(f"#dash-quotas [data-account='{line_shop.account.pk}']")
    expect(quota).to_contain_text("82 of 100 (82%)")
    expect(quota).to_contain_text("Near the monthly limit")
    unknown = page.locator(f"#dash-quotas [data-account='{refused.pk}']")
    expect(unknown).to_contain_text("unknown")
    expect(unknown).to_contain_text("LINE answered 401: the channel access token was refused")
    expect(page.locator("#dash-conversations tbody tr")).to_have_count(7)
    screenshot(page, "dashboard")

    # Mei transfers a conversation to Billing, and Kenji goes away: the page follows without reload.
    lifecycle.conversation_transition(
        conversation=taken[0], action=lifecycle.TRANSFER, actor=mei, queue=billing, note="Invoice question"
    )
    agent_presence_set(user=kenji, presence=Presence.AWAY)

    expect(queues.locator(f"tr[data-queue='{billing.pk}'] .dash-open-items")).to_have_text(
        "1", timeout=ARRIVAL_MS
    )
    expect(page.locator(f"#dash-agents tr[data-agent='{mei.pk}'] .dash-load")).to_have_text(
        "1/4", timeout=ARRIVAL_MS
    )
    expect(page.locator(f"#dash-agents tr[data-agent='{kenji.pk}']")).to_contain_text(
        "Away", timeout=ARRIVAL_MS
    )
    row = page.locator(f"#dash-conversations tr[data-conversation='{taken[0].pk}']")
    expect(row).to_contain_text("Open", timeout=ARRIVAL_MS)
    expect(row).to_contain_text("Billing")
    screenshot(page, "dashboard-after-changes")

    row.get_by_role("link").click()
    expect(page).to_have_url(f"{page.url.split('/inbox/')[0]}/inbox/c/{taken[0].pk}/")
