"""The supervisors' dashboard (/inbox/dashboard/ and its fragments): queues with their open items and
waits, agents with presence and load, the conversations in progress, LINE's message quota per
account. Real database; LINE is the project's stand-in over HTTP."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from linebot.v3.messaging import PushMessageRequest, TextMessage

from agents import supervision
from agents.models import Presence
from channels_line.client import line_client
from omnichannel import lifecycle, live
from omnichannel.models import (
    ActivityKind,
    Conversation,
    ConversationActivity,
    ConversationState,
    MessagingAccount,
)
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    LineMessagingAccountFactory,
    SupervisorFactory,
)
from tests.routing.conftest import instance_make, queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("inbox:dashboard")
FRAGMENTS = [
    reverse("inbox:dashboard-queues"),
    reverse("inbox:dashboard-agents"),
    reverse("inbox:dashboard-conversations"),
    reverse("inbox:dashboard-quotas"),
]
# Every request: session, user, the agent's preferences (middleware), the role's permissions (user's,
# groups': supervisor_page). Then queues 2 (load, today's waits), agents 1, conversations 2 (count, page).
REQUEST_QUERIES = 5
DASHBOARD_QUERIES = REQUEST_QUERIES + 2 + 1 + 2


def client_for(user) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.get(pk=user.pk))
    return client


def minutes_ago(minutes: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(minutes=minutes)


def queued(queue, workstream, *, minutes: float, **fields) -> Conversation:
    """An Open item of `queue` routed `minutes` ago (created then too: routing follows creation), from
    a new customer of the workstream's account."""
    account = MessagingAccount.objects.get(channel_instance__workstream=workstream)
    conversation = item_make(queue, workstream, account=account, queued_at=minutes_ago(minutes), **fields)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=minutes_ago(minutes))
    conversation.refresh_from_db()
    return conversation


def assign(conversation: Conversation, agent) -> Conversation:
    return lifecycle.conversation_transition(
        conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
    )


def text_of(response) -> str:
    """The page's text without tags and runs of white space: what a reader sees."""
    html = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html)


@pytest.fixture(autouse=True)
def _live_hub_not_started(monkeypatch):
    """Pages ask the live hub for their cursor, which starts its reading thread once per process: not
    this module's subject (tests/omnichannel/test_live.py), and a thread these tests' database
    cannot serve."""
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


@pytest.fixture
def supervisor():
    return SupervisorFactory()


@pytest.fixture
def setup():
    """Two queues: Support with three open items (waiting 10, 5 and 1 minutes) and two taken today
    after 4 and 2 minutes; Billing empty. Mei (available, 10 units) works the two; Ken is offline."""
    support = queue_make("Support", priority=1)
    billing = queue_make("Billing", priority=2)
    workstream = workstream_make("Shop", fallback=support)
    instance_make(workstream)
    mei = agent_make(support, presence=Presence.AVAILABLE, capacity=10)
    ken = agent_make(billing, presence=Presence.OFFLINE, capacity=5)
    waiting = [queued(support, workstream, minutes=m) for m in (10, 5, 1)]
    taken = [assign(queued(support, workstream, minutes=m), mei) for m in (4, 2)]
    return {
        "support": support,
        "billing": billing,
        "workstream": workstream,
        "mei": mei,
        "ken": ken,
        "waiting": waiting,
        "taken": taken,
    }


class TestAccess:
    @pytest.mark.parametrize("url", [DASHBOARD, *FRAGMENTS])
    def test_an_agent_is_refused_the_dashboard_and_its_fragments(self, url):
        response = client_for(AgentFactory()).get(url)

        assert response.status_code == 403

    @pytest.mark.parametrize("url", [DASHBOARD, *FRAGMENTS])
    def test_a_visitor_not_signed_in_is_sent_to_the_sign_in_page(self, url):
        response = Client().get(url)

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))

    @pytest.mark.parametrize("make", [SupervisorFactory, AdministratorFactory])
    def test_supervisors_and_administrators_see_it(self, make):
        response = client_for(make()).get(DASHBOARD)

        assert response.status_code == 200
        assert b'id="dash-queues"' in response.content


class TestQueues:
    def test_each_queue_shows_its_open_items_oldest_wait_and_average_wait_today(self, setup):
        summaries = {summary.queue.name: summary for summary in supervision.queues_summary()}

        support, billing = summaries["Support"], summaries["Billing"]
        assert support.open_items == 3
        assert abs(support.oldest_wait.total_seconds() - 600) < 30
        assert support.assigned_today == 2
        assert abs(support.average_wait_today.total_seconds() - 180) < 30
        assert (billing.open_items, billing.oldest_wait, billing.assigned_today) == (0, None, 0)
        assert billing.average_wait_today is None

    def test_the_page_shows_the_numbers(self, setup, supervisor):
        text = text_of(client_for(supervisor).get(reverse("inbox:dashboard-queues")))

        assert "Support 3 10 min 3 min (2 taken)" in text
        assert "Billing 0 \u2013 \u2013" in text  # no wait to show

    def test_an_assignment_after_a_transfer_waits_from_the_transfer_not_from_the_first_queueing(
        self, setup, supervisor
    ):
        # Waited 8 minutes in Support, taken, then transferred to Billing and taken there at once.
        conversation = assign(queued(setup["support"], setup["workstream"], minutes=8), setup["mei"])
        lifecycle.conversation_transition(
            conversation=conversation, action=lifecycle.TRANSFER, actor=setup["mei"], queue=setup["billing"]
        )
        assign(Conversation.objects.get(pk=conversation.pk), setup["ken"])

        summaries = {summary.queue.name: summary for summary in supervision.queues_summary()}

        assert summaries["Support"].assigned_today == 3
        # (4 + 2 + 8) / 3 minutes: the first wait counts from the routing, not from the transfer.
        assert abs(summaries["Support"].average_wait_today.total_seconds() - 280) < 30
        assert summaries["Billing"].assigned_today == 1
        assert summaries["Billing"].average_wait_today.total_seconds() < 30

    def test_assignments_before_midnight_do_not_count_today(self, setup):
        conversation = setup["taken"][0]
        yesterday = timezone.localtime() - datetime.timedelta(days=1)
        ConversationActivity.objects.filter(
            conversation=conversation, kind=ActivityKind.STATE_CHANGED, to_state=ConversationState.ACTIVE
        ).update(created_at=yesterday)
        Conversation.objects.filter(pk=conversation.pk).update(
            queued_at=yesterday - datetime.timedelta(minutes=30),
            created_at=yesterday - datetime.timedelta(minutes=30),
        )

        support = next(s for s in supervision.queues_summary() if s.queue.name == "Support")

        assert support.assigned_today == 1
        assert abs(support.average_wait_today.total_seconds() - 120) < 30

    def test_today_starts_at_midnight_in_the_viewers_time_zone(self):
        at = datetime.datetime(2026, 3, 1, 16, 30, tzinfo=datetime.UTC)  # 01:30 on March 2 in Tokyo

        with timezone.override("Asia/Tokyo"):
            tokyo = supervision.day_start(now=at)
        with timezone.override("America/New_York"):
            new_york = supervision.day_start(now=at)

        assert tokyo == datetime.datetime(2026, 3, 1, 15, 0, tzinfo=datetime.UTC)
        assert new_york == datetime.datetime(2026, 3, 1, 5, 0, tzinfo=datetime.UTC)

    def test_an_item_waiting_past_the_queue_limit_is_marked_late(self, setup, supervisor):
        setup["support"].wait_limit_seconds = 300
        setup["support"].wait_action = "end"
        setup["support"].wait_message = "Sorry"
        setup["support"].save()

        response = client_for(supervisor).get(reverse("inbox:dashboard-queues"))

        assert b"dash-bar-fill is-late" in response.content
        assert b'class="num dash-late"' in response.content


class TestAgents:
    def test_each_agent_shows_presence_load_and_active_conversations(self, setup, supervisor):
        response = client_for(supervisor).get(reverse("inbox:dashboard-agents"))
        text = text_of(response)

        mei, ken = setup["mei"], setup["ken"]
        mei_row = re.search(rf'data-agent="{mei.pk}">(.*?)</tr>', response.content.decode(), re.S).group(1)
        ken_row = re.search(rf'data-agent="{ken.pk}">(.*?)</tr>', response.content.decode(), re.S).group(1)
        assert "Available" in mei_row and "2/10" in mei_row
        assert re.search(r'class="num">2\b', mei_row)
        assert "Offline" in ken_row and "0/5" in ken_row
        assert re.search(r'class="num">0\b', ken_row)
        # The team bar: one available, one offline, each half of it.
        assert 'class="presence-available" x="0.000" y="0" width="50.000"' in response.content.decode()
        assert "Available 1 Busy 0" in text

    def test_available_agents_come_before_offline_ones(self, setup):
        agents = supervision.agents_summary()

        assert [a.user_id for a in agents] == [setup["mei"].pk, setup["ken"].pk]


class TestConversations:
    def test_open_and_active_conversations_are_listed_open_first_with_links(self, setup, supervisor):
        closed = queued(setup["support"], setup["workstream"], minutes=30)
        lifecycle.conversation_transition(conversation=closed, action=lifecycle.CLOSE, actor=supervisor)

        response = client_for(supervisor).get(reverse("inbox:dashboard-conversations"))
        listed = [int(pk) for pk in re.findall(r'data-conversation="(\d+)"', response.content.decode())]

        waiting, taken = setup["waiting"], setup["taken"]
        assert listed == [c.pk for c in waiting] + [c.pk for c in taken]
        for conversation in waiting + taken:
            assert (
                f'href="{reverse("inbox:conversation", args=[conversation.pk])}"'.encode() in response.content
            )
        assert closed.pk not in listed
        assert "5 open or active" in text_of(response)

    def test_a_long_list_comes_in_pages(self, setup, supervisor):
        for _ in range(supervision.CONVERSATIONS_PER_PAGE):
            queued(setup["billing"], setup["workstream"], minutes=1)

        first = client_for(supervisor).get(reverse("inbox:dashboard-conversations"))
        second = client_for(supervisor).get(reverse("inbox:dashboard-conversations") + "?page=2")

        assert first.content.count(b"data-conversation=") == supervision.CONVERSATIONS_PER_PAGE
        assert second.content.count(b"data-conversation=") == 5
        assert "Page 2 of 2" in text_of(second)


class TestQueryCount:
    def test_the_dashboard_runs_a_fixed_number_of_queries_whatever_the_data(
        self, setup, supervisor, django_assert_num_queries
    ):
        client = client_for(supervisor)
        with django_assert_num_queries(DASHBOARD_QUERIES):
            assert client.get(DASHBOARD).status_code == 200

        queues = [queue_make(f"Queue {n}") for n in range(8)]
        agents = [agent_make(queue, capacity=20) for queue in queues]
        for n in range(80):
            conversation = queued(queues[n % 8], setup["workstream"], minutes=n % 13 + 1)
            if n % 2:
                assign(conversation, agents[n % 8])

        with django_assert_num_queries(DASHBOARD_QUERIES):
            response = client.get(DASHBOARD)
        assert response.content.count(b"data-conversation=") == supervision.CONVERSATIONS_PER_PAGE
        assert response.content.count(b"data-agent=") == 10
        assert response.content.count(b"data-queue=") == 10

    @pytest.mark.parametrize(
        ("url", "queries"),
        [
            (reverse("inbox:dashboard-queues"), REQUEST_QUERIES + 2),
            (reverse("inbox:dashboard-agents"), REQUEST_QUERIES + 1),
            (reverse("inbox:dashboard-conversations"), REQUEST_QUERIES + 2),
        ],
    )
    def test_each_fragment_runs_a_fixed_number_of_queries(
        self, setup, supervisor, url, queries, django_assert_num_queries
    ):
        client = client_for(supervisor)
        agents = [agent_make(setup["billing"], capacity=20) for _ in range(3)]
        for n in range(30):
            assign(queued(setup["billing"], setup["workstream"], minutes=n + 1), agents[n % 3])

        with django_assert_num_queries(queries):
            assert client.get(url).status_code == 200

    def test_the_quota_fragment_runs_one_query_whatever_the_number_of_accounts(
        self, line_shop, supervisor, django_assert_num_queries
    ):
        for n in range(5):
            channel = line_shop.control.channel_register(bot_display_name=f"Shop {n}")
            LineMessagingAccountFactory(
                channel_id=channel["channel_id"],
                channel_secret=channel["channel_secret"],
                channel_access_token=channel["channel_access_token"],
            )
        client = client_for(supervisor)
        client.get(reverse("inbox:dashboard-quotas"))  # LINE asked; cached

        with django_assert_num_queries(REQUEST_QUERIES + 1):
            response = client.get(reverse("inbox:dashboard-quotas"))
        assert response.content.count(b"data-account=") == 6


# --- LINE message quota -------------------------------------------------------------------------


def push(line_shop, count: int) -> None:
    """Send `count` push messages through LINE (the stand-in counts them against the quota)."""
    with line_client(line_shop.account.line.channel_access_token) as client:
        for n in range(count):
            client.api.push_message(
                PushMessageRequest(to=line_shop.user_id, messages=[TextMessage(text=f"Sale {n}")]),
                _request_timeout=client.timeout,
            )


def quota_row(response, line_shop) -> str:
    match = re.search(rf'data-account="{line_shop.account.pk}">(.*?)</li>', response.content.decode(), re.S)
    assert match, response.content.decode()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0)))


class TestQuota:
    def test_the_quota_used_is_shown_per_account(self, line_shop, supervisor):
        line_shop.control.channel_register(channel_id=line_shop.channel_id, monthly_quota=200)
        push(line_shop, 3)

        response = client_for(supervisor).get(reverse("inbox:dashboard-quotas"))

        row = quota_row(response, line_shop)
        assert line_shop.account.name in row
        assert "3 of 200 (2%)" in row
        assert "Near the monthly limit" not in row

    def test_an_account_at_80_percent_is_warned(self, line_shop, supervisor):
        line_shop.control.channel_register(channel_id=line_shop.channel_id, monthly_quota=5)
        push(line_shop, 4)

        response = client_for(supervisor).get(reverse("inbox:dashboard-quotas"))

        row = quota_row(response, line_shop)
        assert "4 of 5 (80%)" in row
        assert "Near the monthly limit" in row
        assert b"is-near-limit" in response.content

    def test_an_account_without_a_limit_says_so(self, line_shop, supervisor):
        push(line_shop, 2)

        row = quota_row(client_for(supervisor).get(reverse("inbox:dashboard-quotas")), line_shop)

        assert "2 messages sent, no limit" in row

    def test_a_failed_call_shows_unknown_with_the_reason(self, line_shop, supervisor):
        line_shop.control.fault_add("/v2/bot/message/quota", status=500, times=2)

        response = client_for(supervisor).get(reverse("inbox:dashboard-quotas"))

        row = quota_row(response, line_shop)
        assert "unknown" in row
        assert "LINE answered 500: Internal server error" in row
        assert b"is-unknown" in response.content

    def test_line_is_not_asked_again_while_the_cached_answer_is_fresh(self, line_shop, supervisor):
        line_shop.control.channel_register(channel_id=line_shop.channel_id, monthly_quota=100)
        client = client_for(supervisor)
        assert "0 of 100 (0%)" in quota_row(client.get(reverse("inbox:dashboard-quotas")), line_shop)
        # LINE now fails every call, and the count moved on: the fresh cached answer is shown.
        push(line_shop, 1)
        line_shop.control.fault_add("/v2/bot/message/quota", status=500, times=10)

        assert "0 of 100 (0%)" in quota_row(client.get(reverse("inbox:dashboard-quotas")), line_shop)
        assert len(line_shop.control.faults()) == 1
        assert line_shop.control.faults()[0]["remaining"] == 10

        # Once the cached answer has expired, LINE is asked again.
        cache.delete(f"line-message-quota:{line_shop.account.pk}")
        assert "unknown" in quota_row(client.get(reverse("inbox:dashboard-quotas")), line_shop)

    def test_a_failure_is_kept_too_so_that_every_refresh_does_not_ask_line_again(self, line_shop, supervisor):
        line_shop.control.fault_add("/v2/bot/message/quota", status=500, times=10)
        client = client_for(supervisor)

        for _ in range(3):
            assert "unknown" in quota_row(client.get(reverse("inbox:dashboard-quotas")), line_shop)

        assert line_shop.control.faults()[0]["remaining"] == 9

    def test_the_page_itself_never_calls_line(self, line_shop, supervisor):
        line_shop.control.fault_add("/v2/bot/message/quota", status=500, times=10)

        response = client_for(supervisor).get(DASHBOARD)

        assert response.status_code == 200
        assert line_shop.control.faults()[0]["remaining"] == 10
        assert reverse("inbox:dashboard-quotas").encode() in response.content
