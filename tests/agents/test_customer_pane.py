"""The customer summary pane of a conversation (/inbox/c/<id>/customer/, an htmx fragment): the
customer's LINE profile, the contact it is linked to or a suggestion, a search and a form to link or
create one, and their earlier conversations. Only the agent working the conversation, supervisors and
administrators change the link; others see the pane read-only; IDs a viewer may not see are 404."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from omnichannel.models import Contact, Conversation, ConversationState, LiveNotice, SocialProfile
from routing.models import DistributionMode
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    ContactFactory,
    ConversationFactory,
    SocialProfileFactory,
    SupervisorFactory,
    UserFactory,
)
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def client_for(user, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def pane_url(conversation: Conversation | int, name: str = "customer") -> str:
    pk = conversation.pk if isinstance(conversation, Conversation) else conversation
    return reverse(f"inbox:{name}", args=[pk])


def worked_by(agent, **fields) -> Conversation:
    return ConversationFactory(state=ConversationState.ACTIVE, assigned_agent=agent, **fields)


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def linked_contact(conversation: Conversation) -> Contact | None:
    return SocialProfile.objects.get(pk=conversation.social_profile_id).contact


@pytest.fixture
def agent():
    return AgentFactory()


@pytest.fixture
def conversation(agent):
    profile = SocialProfileFactory(
        display_name="Aiko Tanaka",
        status_message="Tokyo / Osaka",
        language="ja",
        picture_url="https://profile.line-scdn.net/0h-aiko",
    )
    return worked_by(agent, social_profile=profile)


@pytest.fixture
def pickable():
    """An Open item of a pick queue and an agent of that queue: they see it but do not work it."""
    queue = queue_make("Pick queue")
    workstream = workstream_make("Pick ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    return item_make(queue, workstream), agent_make(queue)


class TestWhatThePaneShows:
    def test_the_customers_line_profile_is_shown(self, agent, conversation):
        response = client_for(agent).get(pane_url(conversation), **HTMX)

        assert response.status_code == 200
        page = text(response)
        assert 'src="https://profile.line-scdn.net/0h-aiko"' in page
        assert "Aiko Tanaka" in page
        assert "Tokyo / Osaka" in page
        assert "Japanese" in page
        assert conversation.social_profile.external_id in page
        assert conversation.messaging_account.name in page
        assert "Reachable" in page
        assert "Not linked to a contact." in page

    def test_a_customer_who_blocked_the_account_is_shown_as_blocked(self, agent):
        profile = SocialProfileFactory(is_reachable=False, reachability_changed_at=timezone.now())
        conversation = worked_by(agent, social_profile=profile)

        page = text(client_for(agent).get(pane_url(conversation)))

        assert "Blocked the account" in page
        assert "Reachable<" not in page

    def test_the_agent_working_it_gets_the_search_and_the_create_form_with_the_display_name(
        self, agent, conversation
    ):
        page = text(client_for(agent).get(pane_url(conversation)))

        assert f'hx-get="{pane_url(conversation, "customer_search")}"' in page
        assert f'action="{pane_url(conversation, "customer_create")}"' in page
        assert 'name="name" value="Aiko Tanaka"' in page

    def test_a_linked_contact_is_shown_with_an_unlink_button(self, agent, conversation):
        contact = ContactFactory(name="Aiko Tanaka", email="aiko@example.jp", phone="090-1234-5678")
        SocialProfile.objects.filter(pk=conversation.social_profile_id).update(contact=contact)

        page = text(client_for(agent).get(pane_url(conversation)))

        assert "aiko@example.jp" in page and "090-1234-5678" in page
        assert f'action="{pane_url(conversation, "customer_unlink")}"' in page
        assert f'name="contact" value="{contact.pk}"' in page
        assert "customer_search" not in page and "Find a contact" not in page

    def test_a_viewer_who_does_not_work_the_conversation_sees_the_pane_without_buttons(self, pickable):
        conversation, member = pickable
        SocialProfile.objects.filter(pk=conversation.social_profile_id).update(contact=ContactFactory())

        page = text(client_for(member).get(pane_url(conversation)))

        assert "Unlink" not in page
        assert "<form" not in page
        assert "Find a contact" not in page

    def test_a_group_conversation_says_there_is_no_single_customer(self):
        account = SocialProfileFactory().messaging_account
        group = ConversationFactory(
            social_profile=None, messaging_account=account, thread_type="group", thread_id="Cgroup1"
        )

        response = client_for(SupervisorFactory()).get(pane_url(group))

        assert response.status_code == 200
        assert "no single customer" in text(response)

    def test_the_summary_brings_its_stylesheet_but_not_again_when_its_own_forms_replace_it(
        self, agent, conversation
    ):
        client = client_for(agent)

        loaded_by_the_page = client.get(pane_url(conversation), HTTP_HX_TARGET="customer-pane", **HTMX)
        replaced = client.post(
            pane_url(conversation, "customer_create"),
            {"name": "Aiko"},
            HTTP_HX_TARGET="customer-summary",
            **HTMX,
        )

        assert "inbox/customer.css" in text(loaded_by_the_page)
        assert 'id="customer-summary"' in text(loaded_by_the_page)
        assert "inbox/customer.css" not in text(replaced)

    def test_what_the_agent_types_in_the_search_and_the_create_form_survives_a_refresh(
        self, agent, conversation
    ):
        page = text(client_for(agent).get(pane_url(conversation), **HTMX))

        assert f'id="customer-search-{conversation.pk}" hx-preserve' in page
        assert f'id="customer-create-{conversation.pk}" hx-preserve' in page


class TestSuggestion:
    def test_the_one_contact_named_as_the_display_name_is_suggested_not_linked(self, agent, conversation):
        suggested = ContactFactory(name="AIKO TANAKA")

        page = text(client_for(agent).get(pane_url(conversation)))

        assert "Link to AIKO TANAKA?" in page
        assert f'name="contact" value="{suggested.pk}"' in page
        assert linked_contact(conversation) is None

    def test_several_matching_contacts_make_no_suggestion(self, agent, conversation):
        ContactFactory(name="Aiko Tanaka")
        ContactFactory(name="aiko tanaka")

        assert "Link to" not in text(client_for(agent).get(pane_url(conversation)))

    def test_no_matching_contact_makes_no_suggestion(self, agent, conversation):
        ContactFactory(name="Aiko")

        assert "Link to" not in text(client_for(agent).get(pane_url(conversation)))


class TestLinkingBySearch:
    def test_the_search_finds_contacts_by_name_email_or_phone_with_a_link_button(self, agent, conversation):
        aiko = ContactFactory(name="Aiko Tanaka", email="aiko@example.jp", phone="090-1234-5678")
        ContactFactory(name="Ken Sato", email="ken@example.com", phone="03-5555-0101")
        client = client_for(agent)
        search = pane_url(conversation, "customer_search")

        for query in ("tanaka", "AIKO@example", "09012345678"):
            page = text(client.get(search, {"q": query}, **HTMX))
            assert "Aiko Tanaka" in page and "Ken Sato" not in page, query
            assert f'name="contact" value="{aiko.pk}"' in page
        assert "No contact matches “nobody”." in text(client.get(search, {"q": "nobody"}, **HTMX))
        assert "Type at least 2 characters." in text(client.get(search, {"q": "a"}, **HTMX))

    def test_linking_a_found_contact_answers_with_the_pane_showing_it_and_tells_open_pages(
        self, agent, conversation
    ):
        contact = ContactFactory(name="Aiko Tanaka", email="aiko@example.jp")

        response = client_for(agent).post(
            pane_url(conversation, "customer_link"), {"contact": contact.pk}, **HTMX
        )

        assert response.status_code == 200
        assert linked_contact(conversation) == contact
        page = text(response)
        assert "aiko@example.jp" in page and "Unlink" in page
        assert LiveNotice.objects.filter(conversation=conversation, kind="conversation").count() == 1

    def test_a_plain_form_post_comes_back_to_the_conversation_page(self, agent, conversation):
        contact = ContactFactory()

        response = client_for(agent).post(pane_url(conversation, "customer_link"), {"contact": contact.pk})

        assert response.status_code == 302
        assert response["Location"] == reverse("inbox:conversation", args=[conversation.pk])
        assert linked_contact(conversation) == contact

    def test_linking_a_customer_someone_linked_meanwhile_is_a_conflict_showing_the_pane_as_it_is(
        self, agent, conversation
    ):
        first = ContactFactory(name="First choice")
        SocialProfile.objects.filter(pk=conversation.social_profile_id).update(contact=first)

        response = client_for(agent).post(
            pane_url(conversation, "customer_link"), {"contact": ContactFactory().pk}, **HTMX
        )

        assert response.status_code == 409
        page = text(response)
        assert "linked to a contact meanwhile" in page
        assert "First choice" in page
        assert linked_contact(conversation) == first

    def test_a_link_without_a_contact_id_is_a_bad_request(self, agent, conversation):
        response = client_for(agent).post(pane_url(conversation, "customer_link"), {"contact": "x"}, **HTMX)

        assert response.status_code == 400


class TestCreatingFromTheProfile:
    def test_creating_a_contact_links_it_and_shows_it(self, agent, conversation):
        response = client_for(agent).post(
            pane_url(conversation, "customer_create"),
            {"name": "Aiko Tanaka", "email": "aiko@example.jp", "phone": ""},
            **HTMX,
        )

        assert response.status_code == 200
        contact = linked_contact(conversation)
        assert (contact.name, contact.email, contact.phone) == ("Aiko Tanaka", "aiko@example.jp", "")
        assert "aiko@example.jp" in text(response)

    def test_an_invalid_email_shows_the_form_again_and_creates_nothing(self, agent, conversation):
        response = client_for(agent).post(
            pane_url(conversation, "customer_create"), {"name": "Aiko", "email": "not an email"}, **HTMX
        )

        assert response.status_code == 422
        page = text(response)
        assert "Enter a valid email address." in page
        assert f'id="customer-create-{conversation.pk}-invalid" hx-preserve open' in page
        assert Contact.objects.count() == 0


class TestUnlinking:
    def test_unlinking_clears_the_link_and_keeps_the_contact(self, agent, conversation):
        contact = ContactFactory()
        SocialProfile.objects.filter(pk=conversation.social_profile_id).update(contact=contact)

        response = client_for(agent).post(
            pane_url(conversation, "customer_unlink"), {"contact": contact.pk}, **HTMX
        )

        assert response.status_code == 200
        assert linked_contact(conversation) is None
        assert Contact.objects.filter(pk=contact.pk).exists()
        assert "Not linked to a contact." in text(response)


class TestLaterAndEarlierConversations:
    def test_a_later_conversation_of_the_linked_customer_shows_the_contact(self, agent, conversation):
        contact = ContactFactory(name="Aiko Tanaka", email="aiko@example.jp")
        client = client_for(agent)
        client.post(pane_url(conversation, "customer_link"), {"contact": contact.pk}, **HTMX)
        Conversation.objects.filter(pk=conversation.pk).update(
            state=ConversationState.CLOSED, closed_at=timezone.now()
        )

        later = worked_by(agent, social_profile=conversation.social_profile)
        page = text(client.get(pane_url(later)))

        assert "aiko@example.jp" in page
        assert f'href="{reverse("inbox:conversation", args=[conversation.pk])}"' in page

    def test_earlier_conversations_link_only_those_the_viewer_may_see(self, agent):
        contact = ContactFactory()
        profile = SocialProfileFactory(contact=contact)
        current = worked_by(agent, social_profile=profile)
        mine = ConversationFactory(
            social_profile=profile,
            state=ConversationState.CLOSED,
            closed_at=timezone.now(),
            assigned_agent=agent,
        )
        not_mine = ConversationFactory(
            social_profile=SocialProfileFactory(contact=contact),
            state=ConversationState.CLOSED,
            closed_at=timezone.now(),
            assigned_agent=AgentFactory(),
        )

        page = text(client_for(agent).get(pane_url(current)))

        assert f'href="{reverse("inbox:conversation", args=[mine.pk])}"' in page
        assert f'href="{reverse("inbox:conversation", args=[not_mine.pk])}"' not in page
        assert page.count('class="history-hidden"') == 1
        assert not_mine.messaging_account.name not in page


class TestAccess:
    @pytest.mark.parametrize("name", ["customer", "customer_search"])
    def test_a_guessed_id_is_404_for_reading(self, agent, name):
        theirs = worked_by(AgentFactory())
        client = client_for(agent)

        assert client.get(pane_url(theirs, name), {"q": "ai"}).status_code == 404
        assert client.get(pane_url(999_999, name), {"q": "ai"}).status_code == 404

    @pytest.mark.parametrize("name", ["customer_link", "customer_create", "customer_unlink"])
    def test_a_guessed_id_is_404_for_changes_and_changes_nothing(self, agent, name):
        contact = ContactFactory()
        theirs = worked_by(AgentFactory())

        response = client_for(agent).post(
            pane_url(theirs, name), {"contact": contact.pk, "name": "X"}, **HTMX
        )

        assert response.status_code == 404
        assert linked_contact(theirs) is None
        assert Contact.objects.count() == 1

    @pytest.mark.parametrize(
        "name", ["customer_link", "customer_create", "customer_unlink", "customer_search"]
    )
    def test_an_agent_who_sees_but_does_not_work_the_conversation_gets_403(self, pickable, name):
        conversation, member = pickable
        contact = ContactFactory()
        client = client_for(member)

        if name == "customer_search":
            response = client.get(pane_url(conversation, name), {"q": contact.name}, **HTMX)
        else:
            response = client.post(pane_url(conversation, name), {"contact": contact.pk, "name": "X"}, **HTMX)

        assert response.status_code == 403
        assert linked_contact(conversation) is None
        assert Contact.objects.count() == 1

    @pytest.mark.parametrize("factory", [SupervisorFactory, AdministratorFactory])
    def test_supervisors_and_administrators_change_any_conversations_contact(
        self, agent, conversation, factory
    ):
        contact = ContactFactory()

        response = client_for(factory()).post(
            pane_url(conversation, "customer_link"), {"contact": contact.pk}, **HTMX
        )

        assert response.status_code == 200
        assert linked_contact(conversation) == contact

    def test_a_user_without_an_inbox_role_gets_403_and_an_anonymous_one_the_sign_in_page(self, conversation):
        assert client_for(UserFactory()).get(pane_url(conversation)).status_code == 403
        response = Client().get(pane_url(conversation))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    def test_changes_are_post_only(self, agent, conversation):
        assert client_for(agent).get(pane_url(conversation, "customer_link")).status_code == 405


class TestCsrf:
    def test_a_change_without_the_csrf_token_is_refused(self, agent, conversation):
        client = client_for(agent, enforce_csrf_checks=True)

        response = client.post(
            pane_url(conversation, "customer_link"), {"contact": ContactFactory().pk}, **HTMX
        )

        assert response.status_code == 403
        assert linked_contact(conversation) is None

    def test_the_panes_own_form_carries_the_token(self, agent, conversation):
        client = client_for(agent, enforce_csrf_checks=True)
        page = client.get(pane_url(conversation), **HTMX).content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

        response = client.post(
            pane_url(conversation, "customer_create"), {"csrfmiddlewaretoken": token, "name": "Aiko"}, **HTMX
        )

        assert response.status_code == 200
        assert linked_contact(conversation).name == "Aiko"


class TestQueries:
    def test_the_pane_takes_a_fixed_number_of_queries_whatever_the_history(
        self, agent, conversation, django_assert_num_queries
    ):
        def fresh_client() -> Client:
            # A fresh user each time: no permissions cached on it.
            return client_for(get_user_model().objects.get(pk=agent.pk))

        ContactFactory(name="Aiko Tanaka")  # suggested: its query runs
        client = fresh_client()
        # Session, user, agent preferences, the user's permissions (two), the conversation, the
        # suggestion, the earlier conversations.
        with django_assert_num_queries(8):
            assert client.get(pane_url(conversation), **HTMX).status_code == 200

        contact = ContactFactory()
        SocialProfile.objects.filter(pk=conversation.social_profile_id).update(contact=contact)
        for _ in range(15):
            ConversationFactory(
                social_profile=SocialProfileFactory(contact=contact),
                state=ConversationState.CLOSED,
                closed_at=timezone.now(),
                assigned_agent=agent,
            )
        client = fresh_client()
        # Linked: no suggestion to look for.
        with django_assert_num_queries(7):
            assert "history-list" in client.get(pane_url(conversation), **HTMX).content.decode()

    def test_the_search_takes_a_fixed_number_of_queries(self, agent, conversation, django_assert_num_queries):
        for number in range(20):
            ContactFactory(name=f"Sato {number}")
        client = client_for(get_user_model().objects.get(pk=agent.pk))

        # Session, user, agent preferences, the user's permissions (two), the conversation, contacts.
        with django_assert_num_queries(7):
            assert (
                client.get(pane_url(conversation, "customer_search"), {"q": "sato"}, **HTMX).status_code
                == 200
            )
