"""Contacts (omnichannel.contacts): a customer's social profile is linked to a contact by an agent,
never silently; the link holds for the customer's later conversations; the customer summary lists
the contact's conversations with what the viewer may open; searches find contacts by name, email
or phone. Every change tells the conversation's open pages."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from channels_line.services.inbound import line_events_process
from omnichannel import contacts
from omnichannel.models import (
    Contact,
    Conversation,
    ConversationState,
    LiveNotice,
    SocialProfile,
    ThreadType,
)
from tests.factories import (
    AgentFactory,
    ContactFactory,
    ConversationFactory,
    LineWebhookEventFactory,
    SocialProfileFactory,
    SupervisorFactory,
)

pytestmark = pytest.mark.django_db


def closed(**fields) -> Conversation:
    return ConversationFactory(state=ConversationState.CLOSED, closed_at=timezone.now(), **fields)


def customer_notices(conversation: Conversation) -> list[dict]:
    return list(LiveNotice.objects.filter(conversation=conversation).values("kind", "data").order_by("id"))


class TestLinking:
    def test_linking_sets_the_contact_on_the_customers_profile_and_tells_the_open_pages(self):
        conversation = ConversationFactory(state=ConversationState.ACTIVE)
        contact = ContactFactory()

        assert contacts.contact_link(conversation=conversation, contact_id=contact.pk) == contact

        assert SocialProfile.objects.get(pk=conversation.social_profile_id).contact == contact
        assert conversation.social_profile.contact == contact
        assert customer_notices(conversation) == [{"kind": "conversation", "data": {"change": "customer"}}]

    def test_a_profile_linked_meanwhile_is_a_conflict_and_keeps_the_first_choice(self):
        first, second = ContactFactory(), ContactFactory()
        conversation = ConversationFactory()
        seen_unlinked = Conversation.objects.select_related("social_profile").get(pk=conversation.pk)
        contacts.contact_link(conversation=conversation, contact_id=first.pk)

        with pytest.raises(contacts.ContactConflict) as conflict:
            contacts.contact_link(conversation=seen_unlinked, contact_id=second.pk)

        assert conflict.value.code == "already_linked"
        assert SocialProfile.objects.get(pk=conversation.social_profile_id).contact == first

    def test_linking_to_a_deleted_contact_is_a_conflict(self):
        conversation = ConversationFactory()
        contact = ContactFactory()
        contact_id = contact.pk
        contact.delete()

        with pytest.raises(contacts.ContactConflict) as conflict:
            contacts.contact_link(conversation=conversation, contact_id=contact_id)

        assert conflict.value.code == "contact_gone"
        assert LiveNotice.objects.count() == 0

    def test_a_group_conversation_has_no_customer_to_link(self):
        account = SocialProfileFactory().messaging_account
        group = ConversationFactory(
            social_profile=None, messaging_account=account, thread_type=ThreadType.GROUP, thread_id="Cgroup1"
        )

        with pytest.raises(contacts.ContactConflict) as conflict:
            contacts.contact_link(conversation=group, contact_id=ContactFactory().pk)

        assert conflict.value.code == "no_customer"

    def test_the_other_open_conversation_of_the_same_customer_is_told_too(self):
        profile = SocialProfileFactory()
        old = closed(social_profile=profile)
        current = ConversationFactory(social_profile=profile, state=ConversationState.ACTIVE)

        contacts.contact_link(conversation=old, contact_id=ContactFactory().pk)

        assert len(customer_notices(old)) == 1
        assert len(customer_notices(current)) == 1


class TestCreatingFromTheProfile:
    def test_the_new_contact_takes_the_display_name_and_is_linked(self):
        profile = SocialProfileFactory(display_name="  Aiko Tanaka ")
        conversation = ConversationFactory(social_profile=profile)

        contact = contacts.contact_create_from_profile(conversation=conversation)

        assert (contact.name, contact.email, contact.phone) == ("Aiko Tanaka", "", "")
        assert SocialProfile.objects.get(pk=profile.pk).contact == contact
        assert len(customer_notices(conversation)) == 1

    def test_the_agent_may_give_a_name_email_and_phone(self):
        conversation = ConversationFactory()

        contact = contacts.contact_create_from_profile(
            conversation=conversation, name="Aiko T.", email=" aiko@example.jp ", phone="090-1234-5678"
        )

        assert (contact.name, contact.email, contact.phone) == ("Aiko T.", "aiko@example.jp", "090-1234-5678")

    def test_a_profile_without_display_name_names_the_contact_by_its_user_id(self):
        conversation = ConversationFactory(social_profile__display_name="")

        contact = contacts.contact_create_from_profile(conversation=conversation)

        assert contact.name == conversation.social_profile.external_id

    def test_creating_for_a_profile_linked_meanwhile_creates_nothing(self):
        conversation = ConversationFactory()
        seen_unlinked = Conversation.objects.select_related("social_profile").get(pk=conversation.pk)
        existing = ContactFactory()
        contacts.contact_link(conversation=conversation, contact_id=existing.pk)

        with pytest.raises(contacts.ContactConflict):
            contacts.contact_create_from_profile(conversation=seen_unlinked, name="Someone new")

        assert list(Contact.objects.all()) == [existing]


class TestUnlinking:
    def test_unlinking_keeps_the_contact_and_clears_the_profiles_link(self):
        contact = ContactFactory()
        conversation = ConversationFactory(social_profile__contact=contact)

        contacts.contact_unlink(conversation=conversation, contact_id=contact.pk)

        assert SocialProfile.objects.get(pk=conversation.social_profile_id).contact is None
        assert Contact.objects.filter(pk=contact.pk).exists()
        assert len(customer_notices(conversation)) == 1

    def test_unlinking_a_contact_that_is_not_the_linked_one_any_more_is_a_conflict(self):
        seen, now_linked = ContactFactory(), ContactFactory()
        conversation = ConversationFactory(social_profile__contact=now_linked)

        with pytest.raises(contacts.ContactConflict) as conflict:
            contacts.contact_unlink(conversation=conversation, contact_id=seen.pk)

        assert conflict.value.code == "link_changed"
        assert SocialProfile.objects.get(pk=conversation.social_profile_id).contact == now_linked


class TestSuggestion:
    def test_the_one_contact_named_as_the_display_name_is_suggested_whatever_the_case(self):
        match = ContactFactory(name="aiko TANAKA")
        ContactFactory(name="Aiko Tanaka-Smith")
        profile = SocialProfileFactory(display_name="Aiko Tanaka ")

        assert contacts.contact_suggestion(profile=profile) == match
        assert SocialProfile.objects.get(pk=profile.pk).contact is None  # suggested, never linked

    def test_several_contacts_with_that_name_make_no_suggestion(self):
        ContactFactory(name="Aiko Tanaka")
        ContactFactory(name="AIKO TANAKA")

        assert contacts.contact_suggestion(profile=SocialProfileFactory(display_name="Aiko Tanaka")) is None

    def test_no_contact_with_that_name_makes_no_suggestion(self):
        ContactFactory(name="Aiko")

        assert contacts.contact_suggestion(profile=SocialProfileFactory(display_name="Aiko Tanaka")) is None

    def test_a_linked_profile_or_one_without_display_name_gets_no_suggestion(self, django_assert_num_queries):
        ContactFactory(name="Aiko Tanaka")
        linked = SocialProfileFactory(display_name="Aiko Tanaka", contact=ContactFactory(name="Other"))
        nameless = SocialProfileFactory(display_name=" ")

        with django_assert_num_queries(0):
            assert contacts.contact_suggestion(profile=linked) is None
            assert contacts.contact_suggestion(profile=nameless) is None
            assert contacts.contact_suggestion(profile=None) is None


class TestSearch:
    @pytest.fixture
    def people(self):
        return {
            "aiko": ContactFactory(name="Aiko Tanaka", email="aiko@example.jp", phone="090-1234-5678"),
            "ken": ContactFactory(name="Ken Sato", email="ken@shop.example", phone="+81 (3) 5555 0101"),
            "emi": ContactFactory(name="Emi Suzuki", email="", phone=""),
        }

    def test_contacts_are_found_by_part_of_their_name_email_or_phone(self, people):
        assert contacts.contacts_search(query="tanaka") == [people["aiko"]]
        assert contacts.contacts_search(query="SHOP.example") == [people["ken"]]
        assert contacts.contacts_search(query="5555") == [people["ken"]]
        assert contacts.contacts_search(query="su") == [people["emi"]]

    def test_a_phone_number_is_found_whatever_the_spaces_dashes_and_brackets(self, people):
        assert contacts.contacts_search(query="09012345678") == [people["aiko"]]
        assert contacts.contacts_search(query="090 1234 5678") == [people["aiko"]]
        assert contacts.contacts_search(query="81355550101") == [people["ken"]]

    def test_results_come_by_name_and_are_limited(self, django_assert_num_queries):
        for number in range(5):
            ContactFactory(name=f"Sato {5 - number}")

        with django_assert_num_queries(1):
            found = contacts.contacts_search(query="sato", limit=3)

        assert [contact.name for contact in found] == ["Sato 1", "Sato 2", "Sato 3"]

    def test_a_query_shorter_than_two_characters_runs_no_search(self, people, django_assert_num_queries):
        with django_assert_num_queries(0):
            assert contacts.contacts_search(query=" a ") == []
            assert contacts.contacts_search(query="") == []


class TestSummary:
    def test_a_later_conversation_of_a_linked_line_user_shows_the_contact_without_linking_again(self):
        contact = ContactFactory(name="Aiko Tanaka")
        profile = SocialProfileFactory(profile_fetched_at=timezone.now())
        first = ConversationFactory(social_profile=profile, state=ConversationState.ACTIVE)
        contacts.contact_link(conversation=first, contact_id=contact.pk)
        Conversation.objects.filter(pk=first.pk).update(
            state=ConversationState.CLOSED, closed_at=timezone.now()
        )

        # The customer writes again on LINE: the webhook's event is processed into a new conversation.
        event = LineWebhookEventFactory(
            messaging_account=profile.messaging_account, source_user_id=profile.external_id
        )
        line_events_process(event_pks=[event.pk])

        later = Conversation.objects.exclude(pk=first.pk).get(social_profile=profile)
        later = Conversation.objects.select_related("social_profile__contact").get(pk=later.pk)
        summary = contacts.customer_summary(viewer=SupervisorFactory(), conversation=later)
        assert summary.contact == contact
        assert [item.conversation for item in summary.earlier] == [first]

    def test_every_profile_of_the_contact_gives_its_conversations_newest_first_with_what_the_viewer_may_open(
        self,
    ):
        agent = AgentFactory()
        contact = ContactFactory()
        on_line = SocialProfileFactory(contact=contact)
        on_another_account = SocialProfileFactory(contact=contact)
        current = ConversationFactory(
            social_profile=on_line, state=ConversationState.ACTIVE, assigned_agent=agent
        )
        now = timezone.now()
        mine_before = closed(social_profile=on_line, assigned_agent=agent)
        someone_elses = closed(social_profile=on_another_account, assigned_agent=AgentFactory())
        oldest = closed(social_profile=on_line)
        for conversation, days in ((mine_before, 1), (someone_elses, 2), (oldest, 3)):
            Conversation.objects.filter(pk=conversation.pk).update(
                created_at=now - datetime.timedelta(days=days)
            )
        closed(social_profile=SocialProfileFactory())  # another customer's

        summary = contacts.customer_summary(viewer=agent, conversation=current)

        assert [(item.conversation, item.visible) for item in summary.earlier] == [
            (mine_before, True),
            (someone_elses, False),
            (oldest, False),
        ]
        assert summary.more_earlier is False
        supervisor_view = contacts.customer_summary(viewer=SupervisorFactory(), conversation=current)
        assert all(item.visible for item in supervisor_view.earlier)

    def test_an_unlinked_customer_lists_their_own_earlier_conversations(self):
        profile = SocialProfileFactory()
        current = ConversationFactory(social_profile=profile)
        before = closed(social_profile=profile)

        summary = contacts.customer_summary(viewer=SupervisorFactory(), conversation=current)

        assert summary.contact is None
        assert [item.conversation for item in summary.earlier] == [before]

    def test_the_list_is_cut_at_a_fixed_number_and_says_so(self, django_assert_num_queries):
        contact = ContactFactory()
        profile = SocialProfileFactory(contact=contact)
        current = ConversationFactory(social_profile=profile)
        for _ in range(contacts.EARLIER_CONVERSATIONS_SHOWN + 2):
            closed(social_profile=profile)
        current = Conversation.objects.select_related("social_profile__contact").get(pk=current.pk)
        viewer = SupervisorFactory()
        viewer.has_perm("omnichannel.view_all_conversations")  # permissions cached before counting

        with django_assert_num_queries(1):
            summary = contacts.customer_summary(viewer=viewer, conversation=current)

        assert len(summary.earlier) == contacts.EARLIER_CONVERSATIONS_SHOWN
        assert summary.more_earlier is True
