"""The offer notification (the inbox:offers fragment on every inbox page): the agent's pending offers
with customer, language, contact, queue, first message, wait and expiry; Accept (the conversation
becomes Active, the agent goes to it) and Reject (the next agent gets it); late answers are 409 with
the reason; another agent's offer is 404; a fixed number of queries. Real database."""

from __future__ import annotations

import datetime
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentProfile
from omnichannel import lifecycle, live
from omnichannel.models import ConversationState, MessageKind
from routing.models import Offer, OfferState
from tests.factories import ContactFactory, MessageFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

OFFERS = "/inbox/offers/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _live_hub_not_started(monkeypatch):
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


@pytest.fixture
def queue():
    return queue_make("Support")


@pytest.fixture
def workstream(queue):
    return workstream_make("Support ws", fallback=queue, offer_timeout_seconds=90)


def offer_to(agent, queue, workstream, *, timeout: int = 90, **item_fields) -> Offer:
    return lifecycle.offer_make(
        conversation=item_make(queue, workstream, **item_fields),
        agent=agent,
        queue=queue,
        timeout_seconds=timeout,
    )


def signed_in(client: Client, user) -> Client:
    client.force_login(user)
    return client


def offer_ids(html: str) -> list[int]:
    return [int(part.split('"', 1)[0]) for part in html.split('data-offer="')[1:]]


class TestTheNotification:
    def test_a_pending_offer_shows_the_customer_queue_first_message_wait_and_expiry(
        self, client, queue, workstream
    ):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream, queued_at=timezone.now() - datetime.timedelta(minutes=3))
        profile = offer.conversation.social_profile
        profile.display_name, profile.language = "Aiko", "ja"
        profile.contact = ContactFactory(name="Aiko Tanaka")
        profile.save()
        MessageFactory(conversation=offer.conversation, text="My order <script>alert(1)</script> is late")

        response = signed_in(client, agent).get(OFFERS, **HTMX)

        assert response.status_code == 200
        html = response.content.decode()
        assert offer_ids(html) == [offer.pk]
        assert "Aiko" in html and "Aiko Tanaka" in html and profile.picture_url in html
        assert "<dd>Japanese</dd>" in html and "<dd>Support</dd>" in html  # the language named, not "ja"
        assert "My order &lt;script&gt;alert(1)&lt;/script&gt; is late" in html
        assert "<script>alert(1)" not in html
        assert "3\xa0minutes" in html  # waiting since it was queued
        assert 'data-expires-at="' + offer.expires_at.isoformat() in html
        assert f'action="/inbox/offers/{offer.pk}/accept/"' in html
        assert f'action="/inbox/offers/{offer.pk}/reject/"' in html
        assert "inbox/offers.js" in html

    def test_the_customers_language_is_named_in_the_agents_language_and_an_unknown_code_stays_a_code(
        self, client, queue, workstream
    ):
        agent = agent_make(queue)
        AgentProfile.objects.filter(user=agent).update(language="ja")
        languages = {"zh-TW": "繁体字中国語", "th": "タイ語", "x-klingon": "x-klingon"}
        for code in languages:
            offer = offer_to(agent, queue, workstream)
            offer.conversation.social_profile.language = code
            offer.conversation.social_profile.save(update_fields=["language"])

        html = signed_in(client, agent).get(OFFERS, **HTMX).content.decode()

        shown = re.findall(r"<dt>言語</dt><dd>(.*?)</dd>", html)
        assert sorted(shown) == sorted(languages.values())

    def test_a_first_message_without_text_shows_its_kind(self, client, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)
        MessageFactory(conversation=offer.conversation, kind=MessageKind.IMAGE, text="")

        html = signed_in(client, agent).get(OFFERS, **HTMX).content.decode()

        assert '<blockquote class="offer-message">Image</blockquote>' in html

    def test_without_offers_the_fragment_is_empty(self, client, queue, workstream):
        agent = agent_make(queue)
        expired = offer_to(agent, queue, workstream)
        Offer.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
        answered = offer_to(agent, queue, workstream)
        lifecycle.offer_decline(offer_id=answered.pk, state=OfferState.REJECTED, agent=agent)

        response = signed_in(client, agent).get(OFFERS, **HTMX)

        assert response.status_code == 200
        assert response.content == b""  # the aside's :empty hides it

    def test_an_agent_set_away_by_a_missed_offer_is_told_and_can_become_available_again(
        self, client, queue, workstream
    ):
        agent = agent_make(queue)
        missed = offer_to(agent, queue, workstream)
        lifecycle.offers_expire(now=missed.expires_at)
        signed_in(client, agent)

        html = client.get(OFFERS, **HTMX).content.decode()
        assert "your status is now Away" in html
        assert 'name="presence" value="available"' in html

        response = client.post("/inbox/presence/", {"presence": "available"}, HTTP_HX_TARGET="offers", **HTMX)
        assert response.status_code == 200
        assert AgentProfile.objects.get(user=agent).presence == "available"
        assert "your status is now Away" not in response.content.decode()

    def test_without_javascript_becoming_available_returns_to_the_inbox_and_ignores_a_next_url(
        self, client, queue, workstream
    ):
        agent = agent_make(queue)
        lifecycle.offers_expire(now=offer_to(agent, queue, workstream).expires_at)
        signed_in(client, agent)

        back = client.post("/inbox/presence/", {"presence": "available", "next": "https://evil.example/"})

        assert (back.status_code, back["Location"]) == (303, "/inbox/")
        assert AgentProfile.objects.get(user=agent).presence == "available"

    def test_an_agent_who_chose_away_is_not_told_about_missed_offers(self, client, queue, workstream):
        agent = agent_make(queue)
        AgentProfile.objects.filter(user=agent).update(presence="away")

        assert signed_in(client, agent).get(OFFERS, **HTMX).content == b""

    def test_an_agent_sees_only_their_own_offers(self, client, queue, workstream):
        mine, colleague = agent_make(queue), agent_make(queue)
        my_offer = offer_to(mine, queue, workstream)
        offer_to(colleague, queue, workstream)

        html = signed_in(client, mine).get(OFFERS, **HTMX).content.decode()

        assert offer_ids(html) == [my_offer.pk]

    @pytest.mark.parametrize("size", [1, 10])
    def test_the_fragment_takes_a_fixed_number_of_queries(
        self, client, queue, workstream, size, django_assert_num_queries
    ):
        agent = agent_make(queue, capacity=50)
        for _ in range(size):
            offer = offer_to(agent, queue, workstream)
            offer.conversation.social_profile.contact = ContactFactory()
            offer.conversation.social_profile.save(update_fields=["contact"])
            MessageFactory(conversation=offer.conversation)
        signed_in(client, agent)

        # Session, user, preferences, permissions (user, group), the offers with everything shown.
        with django_assert_num_queries(6):
            response = client.get(OFFERS, **HTMX)

        assert len(offer_ids(response.content.decode())) == size


class TestAnswering:
    def test_accepting_makes_the_conversation_active_with_me_and_goes_to_it(self, client, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)

        response = signed_in(client, agent).post(reverse("inbox:offer-accept", args=[offer.pk]), **HTMX)

        assert response.status_code == 204
        assert response["HX-Redirect"] == f"/inbox/c/{offer.conversation_id}/"
        offer.conversation.refresh_from_db()
        assert offer.conversation.state == ConversationState.ACTIVE
        assert offer.conversation.assigned_agent_id == agent.pk

    def test_a_plain_form_accept_redirects_to_the_conversation(self, client, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)

        response = signed_in(client, agent).post(reverse("inbox:offer-accept", args=[offer.pk]))

        assert response.status_code == 303
        assert response["Location"] == f"/inbox/c/{offer.conversation_id}/"

    def test_rejecting_releases_my_capacity_and_shows_what_is_left(self, client, queue, workstream):
        agent = agent_make(queue)
        rejected, kept = offer_to(agent, queue, workstream), offer_to(agent, queue, workstream)
        assert AgentProfile.objects.get(user=agent).capacity_used == 2

        response = signed_in(client, agent).post(reverse("inbox:offer-reject", args=[rejected.pk]), **HTMX)

        assert response.status_code == 200
        assert offer_ids(response.content.decode()) == [kept.pk]
        rejected.refresh_from_db()
        assert rejected.state == OfferState.REJECTED
        assert AgentProfile.objects.get(user=agent).capacity_used == 1
        rejected.conversation.refresh_from_db()
        assert rejected.conversation.state == ConversationState.OPEN

    def test_an_expired_offer_cannot_be_accepted_409_with_the_reason(self, client, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)
        Offer.objects.filter(pk=offer.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

        response = signed_in(client, agent).post(reverse("inbox:offer-accept", args=[offer.pk]), **HTMX)

        assert response.status_code == 409
        assert 'role="alert"' in response.content.decode()
        assert "expired" in response.content.decode()
        offer.conversation.refresh_from_db()
        assert offer.conversation.state == ConversationState.OPEN

    def test_a_second_reject_is_409_with_the_reason(self, client, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)
        signed_in(client, agent).post(reverse("inbox:offer-reject", args=[offer.pk]), **HTMX)

        response = client.post(reverse("inbox:offer-reject", args=[offer.pk]), **HTMX)

        assert response.status_code == 409
        assert "This offer is not pending any more: it was rejected." in response.content.decode()

    def test_another_agent_s_offer_is_404_and_stays_pending(self, client, queue, workstream):
        owner, intruder = agent_make(queue), agent_make(queue)
        offer = offer_to(owner, queue, workstream)

        signed_in(client, intruder)
        assert client.post(reverse("inbox:offer-accept", args=[offer.pk]), **HTMX).status_code == 404
        assert client.post(reverse("inbox:offer-reject", args=[offer.pk]), **HTMX).status_code == 404
        assert client.post(reverse("inbox:offer-accept", args=[999_999]), **HTMX).status_code == 404
        offer.refresh_from_db()
        assert offer.state == OfferState.PENDING

    def test_answers_need_post_and_the_csrf_token(self, queue, workstream):
        agent = agent_make(queue)
        offer = offer_to(agent, queue, workstream)
        client = Client(enforce_csrf_checks=True)
        client.force_login(agent)

        assert client.get(reverse("inbox:offer-accept", args=[offer.pk])).status_code == 405
        assert client.post(reverse("inbox:offer-accept", args=[offer.pk])).status_code == 403
        offer.refresh_from_db()
        assert offer.state == OfferState.PENDING
