"""The agent's inbox home (/inbox/): presence switcher and load, my conversations with unread counts
and the last message, the consults I am asked to help on, the open items of my pick queues with a
Pick button (and the 409 of a lost race), its fragments, a fixed number of queries, the preferences
page, and where signing in lands (/). Real database; routing's tasks are not run here."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentProfile, Presence
from omnichannel import live
from omnichannel.models import (
    ConversationConsult,
    ConversationState,
    LiveNotice,
    MessageKind,
)
from routing.distribution import PICK_LOST
from routing.models import DistributionMode, QueueMembership
from tests.factories import (
    AgentFactory,
    ContactFactory,
    ConversationFactory,
    MessageFactory,
    SocialProfileFactory,
    SupervisorFactory,
    UserFactory,
)
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

HOME = "/inbox/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _live_hub_not_started(monkeypatch):
    """Pages ask the live hub for their cursor, which starts its reading thread once per process: not
    in these tests (the thread would read outside the test's database access)."""
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


@pytest.fixture
def agent():
    return agent_make(presence=Presence.AVAILABLE, capacity=5, used=2)


@pytest.fixture
def pick_queue():
    queue = queue_make("Walk-in")
    workstream = workstream_make("Walk-in ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    return queue, workstream


def assigned(agent, state=ConversationState.ACTIVE, **fields):
    held = 1 if state in (ConversationState.ACTIVE, ConversationState.WRAP_UP) else 0
    return ConversationFactory(assigned_agent=agent, state=state, capacity_held=held, **fields)


def signed_in(client, user):
    client.force_login(user)
    return client


def pressed(html: str) -> list[str]:
    """The presences whose button is pressed in the switcher."""
    return re.findall(r'value="(\w+)" class="presence [^"]*"\s+aria-pressed="true"', html)


def rows(response, section: str) -> list[int]:
    """The conversation IDs listed in one section of the page (data-conversation attributes)."""
    html = response.content.decode()
    start = html.index(f'id="{section}"')
    end = html.find("</section>", start)
    chunk = html[start:end]
    return [int(part.split('"', 1)[0]) for part in chunk.split('data-conversation="')[1:]]


class TestPresenceAndLoad:
    def test_the_page_shows_the_five_presences_with_mine_pressed_and_my_load(self, client, agent):
        response = signed_in(client, agent).get(HOME)

        assert response.status_code == 200
        html = response.content.decode()
        for value in Presence.values:
            assert f'name="presence" value="{value}"' in html
        assert pressed(html) == ["available"]
        assert "2 / 5" in html

    def test_an_agent_changes_their_presence_and_gets_the_switcher_back(self, client, agent):
        response = signed_in(client, agent).post(reverse("inbox:presence"), {"presence": "busy_dnd"}, **HTMX)

        assert response.status_code == 200
        assert AgentProfile.objects.get(user=agent).presence == Presence.BUSY_DND
        assert pressed(response.content.decode()) == ["busy_dnd"]
        # Pages of this agent (and supervisors) hear about it.
        assert LiveNotice.objects.filter(kind="agent", agent_id=agent.pk).exists()

    def test_every_presence_can_be_set_and_a_plain_form_goes_back_home(self, client, agent):
        signed_in(client, agent)
        for value in Presence.values:
            response = client.post(reverse("inbox:presence"), {"presence": value})
            assert response.status_code == 303
            assert response["Location"] == HOME
            assert AgentProfile.objects.get(user=agent).presence == value

    def test_an_unknown_presence_is_400_and_changes_nothing(self, client, agent):
        response = signed_in(client, agent).post(reverse("inbox:presence"), {"presence": "asleep"}, **HTMX)

        assert response.status_code == 400
        assert b"Unknown presence." in response.content
        assert AgentProfile.objects.get(user=agent).presence == Presence.AVAILABLE

    def test_a_new_agent_without_a_profile_sees_offline_and_the_default_capacity(self, client):
        response = signed_in(client, AgentFactory()).get(HOME)

        assert response.status_code == 200
        assert "0 / 10" in response.content.decode()


class TestMyConversations:
    def test_my_active_waiting_and_wrap_up_conversations_are_listed_newest_activity_first(
        self, client, agent
    ):
        now = timezone.now()
        older = assigned(agent, ConversationState.WAITING, last_message_at=now - datetime.timedelta(hours=2))
        newer = assigned(agent, ConversationState.ACTIVE, last_message_at=now - datetime.timedelta(minutes=1))
        wrap = assigned(agent, ConversationState.WRAP_UP, last_message_at=now - datetime.timedelta(hours=1))
        closed = ConversationFactory(assigned_agent=agent, state=ConversationState.CLOSED, closed_at=now)
        colleague_s = assigned(AgentFactory())
        open_one = ConversationFactory()

        response = signed_in(client, agent).get(HOME)

        listed = rows(response, "home-mine")
        assert listed == [newer.pk, wrap.pk, older.pk]
        assert closed.pk not in listed and colleague_s.pk not in listed and open_one.pk not in listed
        html = response.content.decode()
        assert f'href="/inbox/c/{newer.pk}/"' in html

    def test_unread_counts_inbound_messages_after_the_read_mark(self, client, agent):
        now = timezone.now()
        conversation = assigned(agent)
        MessageFactory(conversation=conversation, text="seen before")
        conversation.agent_read_at = timezone.now()
        conversation.save(update_fields=["agent_read_at"])
        for text in ("first new", "second new"):
            MessageFactory(conversation=conversation, text=text, sent_at=now)
        MessageFactory(conversation=conversation, outbound=True, text="my answer", sent_at=now)
        never_read = assigned(agent)
        for _ in range(3):
            MessageFactory(conversation=never_read)

        response = signed_in(client, agent).get(HOME)

        mine = {c.pk: c for c in response.context["conversations"]}
        assert mine[conversation.pk].unread == 2
        assert mine[never_read.pk].unread == 3
        assert response.context["unread_total"] == 5

    def test_the_last_message_shows_its_text_or_its_kind_and_the_customer(self, client, agent):
        contact = ContactFactory(name="Aiko Tanaka (VIP)")
        profile = SocialProfileFactory(display_name="Aiko", contact=contact)
        texted = assigned(agent, social_profile=profile)
        MessageFactory(conversation=texted, text="Where is my <b>parcel</b>?")
        sticker = assigned(agent)
        MessageFactory(conversation=sticker, kind=MessageKind.STICKER, text="")
        answered = assigned(agent)
        MessageFactory(conversation=answered, outbound=True, text="On its way")

        html = signed_in(client, agent).get(HOME).content.decode()

        assert "Where is my &lt;b&gt;parcel&lt;/b&gt;?" in html
        assert "Aiko" in html and "Aiko Tanaka (VIP)" in html
        assert profile.picture_url in html
        assert "Sticker" in html
        assert "You:</span> On its way" in html

    def test_the_fragment_is_the_same_list_for_htmx(self, client, agent):
        conversation = assigned(agent)

        response = signed_in(client, agent).get(reverse("inbox:home-mine"), **HTMX)

        assert response.status_code == 200
        assert rows(response, "home-mine") == [conversation.pk]
        assert b"live-message from:body" in response.content

    def test_consults_i_am_asked_on_are_listed_read_only(self, client, agent):
        colleague = AgentFactory(first_name="Kenji")
        conversation = assigned(colleague)
        ConversationConsult.objects.create(
            conversation=conversation, consultant=agent, requested_by=colleague, note="Refund rules?"
        )
        ended = ConversationConsult.objects.create(
            conversation=assigned(colleague), consultant=agent, ended_at=timezone.now()
        )
        someone_else_s = ConversationConsult.objects.create(
            conversation=assigned(colleague), consultant=AgentFactory()
        )

        response = signed_in(client, agent).get(HOME)

        assert rows(response, "home-consults") == [conversation.pk]
        assert ended.conversation_id not in rows(response, "home-consults")
        assert someone_else_s.conversation_id not in rows(response, "home-consults")
        html = response.content.decode()
        assert "Kenji: Refund rules?" in html
        assert "Read-only" in html


class TestPickQueues:
    def test_open_items_of_my_pick_queues_are_listed_with_a_pick_button(self, client, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        other_queue = queue_make("Elsewhere")
        push_queue = queue_make("Pushed")
        push_ws = workstream_make("Push ws", fallback=push_queue)
        QueueMembership.objects.create(queue=push_queue, user=agent)
        now = timezone.now()
        urgent = item_make(queue, workstream, priority=1, queued_at=now)
        oldest = item_make(queue, workstream, queued_at=now - datetime.timedelta(minutes=30))
        newest = item_make(queue, workstream, queued_at=now)
        MessageFactory(conversation=oldest, text="Is the shop open on Sunday?")
        not_mine = item_make(other_queue, workstream_make("Other ws", fallback=other_queue))
        pushed = item_make(push_queue, push_ws)

        response = signed_in(client, agent).get(HOME)

        assert rows(response, "home-pick") == [urgent.pk, oldest.pk, newest.pk]
        html = response.content.decode()
        assert f'action="/inbox/pick/{oldest.pk}/"' in html
        assert "Is the shop open on Sunday?" in html
        assert not_mine.pk not in rows(response, "home-pick")
        assert pushed.pk not in rows(response, "home-pick")

    def test_picking_makes_the_conversation_mine_and_goes_to_it(self, client, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        item = item_make(queue, workstream)

        response = signed_in(client, agent).post(reverse("inbox:pick", args=[item.pk]), **HTMX)

        assert response.status_code == 204
        assert response["HX-Redirect"] == f"/inbox/c/{item.pk}/"
        item.refresh_from_db()
        assert item.state == ConversationState.ACTIVE and item.assigned_agent_id == agent.pk

    def test_the_loser_of_a_pick_race_gets_409_with_the_message(self, client, pick_queue):
        queue, workstream = pick_queue
        winner, loser = agent_make(queue), agent_make(queue)
        item = item_make(queue, workstream)
        assert (
            signed_in(client, winner).post(reverse("inbox:pick", args=[item.pk]), **HTMX).status_code == 204
        )

        response = signed_in(client, loser).post(reverse("inbox:pick", args=[item.pk]), **HTMX)

        assert response.status_code == 409
        assert str(PICK_LOST) in response.content.decode()
        assert item.pk not in rows(response, "home-pick")
        plain = client.post(reverse("inbox:pick", args=[item.pk]))
        assert plain.status_code == 409
        assert plain.content.decode() == PICK_LOST

    def test_an_item_of_a_queue_i_am_not_in_is_404(self, client, pick_queue):
        queue, workstream = pick_queue
        item = item_make(queue, workstream)
        outsider = agent_make(queue_make("Mine"))

        response = signed_in(client, outsider).post(reverse("inbox:pick", args=[item.pk]), **HTMX)

        assert response.status_code == 404
        assert client.post(reverse("inbox:pick", args=[999_999]), **HTMX).status_code == 404
        item.refresh_from_db()
        assert item.state == ConversationState.OPEN

    def test_picking_needs_post(self, client, pick_queue):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        item = item_make(queue, workstream)
        assert signed_in(client, agent).get(reverse("inbox:pick", args=[item.pk])).status_code == 405


class TestAccess:
    def test_signed_out_users_go_to_sign_in_and_users_without_a_role_get_403(self, client):
        for url in (HOME, reverse("inbox:home-mine"), reverse("inbox:home-pick"), reverse("inbox:offers")):
            response = client.get(url)
            assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        signed_in(client, UserFactory())
        for url in (HOME, reverse("inbox:home-mine"), reverse("inbox:preferences")):
            assert client.get(url).status_code == 403
        assert client.post(reverse("inbox:presence"), {"presence": "available"}).status_code == 403

    def test_presence_changes_need_the_csrf_token(self, agent):
        from django.test import Client

        client = Client(enforce_csrf_checks=True)
        client.force_login(agent)
        assert client.post(reverse("inbox:presence"), {"presence": "away"}).status_code == 403
        assert AgentProfile.objects.get(user=agent).presence == Presence.AVAILABLE


class TestQueryCounts:
    def fill(self, agent, queue, workstream, size: int) -> None:
        for _ in range(size):
            conversation = assigned(agent, social_profile=SocialProfileFactory(contact=ContactFactory()))
            MessageFactory(conversation=conversation)
            MessageFactory(conversation=conversation, outbound=True)
            ConversationConsult.objects.create(
                conversation=assigned(AgentFactory()), consultant=agent, requested_by=AgentFactory()
            )
            MessageFactory(conversation=item_make(queue, workstream))

    @pytest.mark.parametrize("size", [1, 12])
    def test_the_page_takes_a_fixed_number_of_queries_whatever_the_data_size(
        self, client, pick_queue, size, django_assert_num_queries
    ):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        self.fill(agent, queue, workstream, size)
        signed_in(client, agent)

        with django_assert_num_queries(PAGE_QUERIES):
            response = client.get(HOME)

        assert len(response.context["conversations"]) == size
        assert len(response.context["consults"]) == size
        assert len(response.context["items"]) == size

    @pytest.mark.parametrize("size", [1, 12])
    def test_each_fragment_takes_a_fixed_number_of_queries(
        self, client, pick_queue, size, django_assert_num_queries
    ):
        queue, workstream = pick_queue
        agent = agent_make(queue)
        self.fill(agent, queue, workstream, size)
        signed_in(client, agent)
        for name in ("inbox:home-presence", "inbox:home-mine", "inbox:home-consults", "inbox:home-pick"):
            with django_assert_num_queries(FRAGMENT_QUERIES):
                client.get(reverse(name), **HTMX)


# Session, user, the agent's preferences (middleware), the role's permissions (user and group; cached
# for the supervisor check), then the reads: the page's load and three lists; a fragment's one read.
PAGE_QUERIES = 9
FRAGMENT_QUERIES = 6


class TestPreferences:
    def test_an_agent_saves_language_and_time_zone_and_the_next_page_uses_them(self, client, agent):
        signed_in(client, agent)

        response = client.post(reverse("inbox:preferences"), {"language": "ja", "time_zone": "Asia/Tokyo"})

        assert response.status_code == 303
        profile = AgentProfile.objects.get(user=agent)
        assert (profile.language, profile.time_zone) == ("ja", "Asia/Tokyo")
        page = client.get(response["Location"])
        assert page.status_code == 200
        html = page.content.decode()
        assert '<html lang="ja">' in html
        assert "Asia/Tokyo" in html
        assert '<option value="Asia/Tokyo" selected>' in html

    def test_empty_choices_mean_the_browser_language_and_the_server_time_zone(self, client, agent):
        AgentProfile.objects.filter(user=agent).update(language="ja", time_zone="Asia/Tokyo")
        signed_in(client, agent)

        client.post(reverse("inbox:preferences"), {"language": "", "time_zone": ""})

        profile = AgentProfile.objects.get(user=agent)
        assert (profile.language, profile.time_zone) == ("", "")
        html = client.get(reverse("inbox:preferences"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
        assert '<html lang="en">' in html

    def test_an_unknown_language_or_time_zone_is_refused_with_nothing_saved(self, client, agent):
        signed_in(client, agent)

        response = client.post(reverse("inbox:preferences"), {"language": "xx", "time_zone": "Mars/Olympus"})

        assert response.status_code == 400
        html = response.content.decode()
        assert "Unknown language" in html and "Unknown time zone" in html
        profile = AgentProfile.objects.get(user=agent)
        assert (profile.language, profile.time_zone) == ("", "")

    def test_every_time_zone_zoneinfo_knows_is_offered(self, client, agent):
        import zoneinfo

        html = signed_in(client, agent).get(reverse("inbox:preferences")).content.decode()
        assert html.count("<option value=") == len(zoneinfo.available_timezones()) + 1 + 2 + 1


class TestWhereSigningInLands:
    def test_agents_go_to_the_inbox_and_supervisors_to_the_dashboard(self, client):
        assert signed_in(client, AgentFactory()).get("/")["Location"] == reverse("inbox:home")
        assert signed_in(client, SupervisorFactory()).get("/")["Location"] == reverse("inbox:dashboard")

    def test_users_without_a_role_keep_the_welcome_page(self, client):
        response = signed_in(client, UserFactory()).get("/")
        assert response.status_code == 200
        assert b"Welcome" in response.content
