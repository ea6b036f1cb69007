"""Contacts and the customer summary: linking a customer's social profile to a contact record.

The link lives on the social profile (`SocialProfile.contact`), so every later conversation of that
LINE user shows the contact without anyone linking it again. A contact whose name matches the
profile's display name is only ever suggested (`contact_suggestion`): linking is an agent's decision.

Writes change the link only from the state the agent saw (a profile still unlinked, or still linked
to the contact being unlinked), so two agents acting at once cannot overwrite each other's choice
unknowingly: the second gets a ContactConflict with a message to show. Every change tells the open
pages of the profile's conversations (a `conversation` live notice, in the same transaction).
Reads are a fixed number of queries whatever the data size."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Replace
from django.utils.translation import gettext as _

from . import live
from .models import Contact, Conversation, ConversationState, SocialProfile, ThreadType
from .selectors import conversation_worked_by, conversations_visible

# How many of a contact's other conversations the summary lists (newest first).
EARLIER_CONVERSATIONS_SHOWN = 10
# How many contacts a search answers with, and the shortest query it runs.
SEARCH_RESULTS = 10
SEARCH_MIN_LENGTH = 2
# What an agent's role needs (besides working the conversation) to change a customer's link.
LINK_PERMISSION = "omnichannel.change_socialprofile"
CREATE_PERMISSION = "omnichannel.add_contact"
# Characters people type in phone numbers that say nothing about the number.
PHONE_PUNCTUATION = (" ", "-", "(", ")", ".", "+")


class ContactConflict(Exception):
    """The link is not what the agent saw any more (someone else changed it), or the contact is gone.
    `.message` is for the agent, `.code` for programs (as lifecycle.LifecycleConflict)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def customer_profile_of(conversation: Conversation) -> SocialProfile | None:
    """The one customer of a one-to-one conversation; None for group and room threads."""
    if conversation.thread_type != ThreadType.USER:
        return None
    return conversation.social_profile


def contact_link_allowed(*, viewer: AbstractBaseUser | AnonymousUser, conversation: Conversation) -> bool:
    """Whether `viewer` may link, create and unlink the contact of a conversation they can see: the
    agent working it, supervisors and administrators (as for sending: selectors.conversation_worked_by),
    with a role that may change social profiles. Others (an agent offered it, a consulted agent, a pick
    queue member) see the summary read-only."""
    return conversation_worked_by(viewer=viewer, conversation=conversation) and viewer.has_perm(
        LINK_PERMISSION
    )


def contact_create_allowed(*, viewer: AbstractBaseUser | AnonymousUser, conversation: Conversation) -> bool:
    return contact_link_allowed(viewer=viewer, conversation=conversation) and viewer.has_perm(
        CREATE_PERMISSION
    )


def _profile_required(conversation: Conversation) -> SocialProfile:
    profile = customer_profile_of(conversation)
    if profile is None:
        raise ContactConflict(
            _("A group or room conversation has no single customer to link to a contact."), "no_customer"
        )
    return profile


def _announce(*, profile_id: int, conversation_id: int) -> None:
    """The pages showing this conversation, and the other open conversation of the same profile (if
    any), refresh their customer pane."""
    open_ids = set(
        Conversation.objects.filter(social_profile_id=profile_id)
        .exclude(state=ConversationState.CLOSED)
        .values_list("pk", flat=True)
    )
    for pk in sorted(open_ids | {conversation_id}):
        live.publish(live.CONVERSATION, conversation_id=pk, change="customer")


@transaction.atomic
def contact_link(*, conversation: Conversation, contact_id: int) -> Contact:
    """Link the conversation's customer (their social profile) to an existing contact. The profile must
    still be unlinked: linking over someone else's choice is a conflict (unlink first)."""
    profile = _profile_required(conversation)
    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        raise ContactConflict(_("That contact does not exist any more."), "contact_gone")
    linked = SocialProfile.objects.filter(pk=profile.pk, contact__isnull=True).update(contact=contact)
    if not linked:
        raise ContactConflict(
            _("This customer was linked to a contact meanwhile: unlink it first to link another."),
            "already_linked",
        )
    profile.contact = contact
    _announce(profile_id=profile.pk, conversation_id=conversation.pk)
    return contact


@transaction.atomic
def contact_create_from_profile(
    *, conversation: Conversation, name: str = "", email: str = "", phone: str = ""
) -> Contact:
    """Create a contact for the conversation's customer and link their profile to it. The name
    defaults to the profile's display name (or its user ID when it has none)."""
    profile = _profile_required(conversation)
    name = (name or "").strip() or profile.display_name.strip() or profile.external_id
    contact = Contact.objects.create(name=name, email=(email or "").strip(), phone=(phone or "").strip())
    linked = SocialProfile.objects.filter(pk=profile.pk, contact__isnull=True).update(contact=contact)
    if not linked:
        # Rolls the new contact back with it.
        raise ContactConflict(
            _("This customer was linked to a contact meanwhile: unlink it first to create another."),
            "already_linked",
        )
    profile.contact = contact
    _announce(profile_id=profile.pk, conversation_id=conversation.pk)
    return contact


@transaction.atomic
def contact_unlink(*, conversation: Conversation, contact_id: int) -> None:
    """Unlink the conversation's customer from the contact `contact_id` (the one the agent saw). The
    contact record stays, with its other profiles."""
    profile = _profile_required(conversation)
    unlinked = SocialProfile.objects.filter(pk=profile.pk, contact_id=contact_id).update(contact=None)
    if not unlinked:
        raise ContactConflict(
            _("This customer's contact changed meanwhile: look again before unlinking."), "link_changed"
        )
    profile.contact = None
    _announce(profile_id=profile.pk, conversation_id=conversation.pk)


# --- Reads ------------------------------------------------------------------------------------------


def contact_suggestion(*, profile: SocialProfile | None) -> Contact | None:
    """The contact to suggest for an unlinked profile: the only one whose name is the profile's
    display name (case-insensitive, exact, spaces around ignored). Several such contacts, or none:
    no suggestion. Never for a linked profile. At most one query."""
    if profile is None or profile.contact_id is not None:
        return None
    name = profile.display_name.strip()
    if not name:
        return None
    matches = list(Contact.objects.filter(name__iexact=name).order_by("pk")[:2])
    return matches[0] if len(matches) == 1 else None


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit())


def contacts_search(*, query: str, limit: int = SEARCH_RESULTS) -> list[Contact]:
    """Contacts whose name, email or phone contains `query` (case-insensitive), by name. A phone is
    matched on its digits whatever the spaces, dashes and brackets typed or stored ("0812345678"
    finds "081-234-5678"). Fewer than SEARCH_MIN_LENGTH characters: nothing (no query run). One
    query."""
    query = (query or "").strip()
    if len(query) < SEARCH_MIN_LENGTH:
        return []
    condition = Q(name__icontains=query) | Q(email__icontains=query) | Q(phone__icontains=query)
    contacts: QuerySet[Contact] = Contact.objects.all()
    digits = _digits(query)
    if len(digits) >= SEARCH_MIN_LENGTH and len(digits) * 2 >= len(query.replace(" ", "")):
        phone_digits = "phone"
        for character in PHONE_PUNCTUATION:
            phone_digits = Replace(phone_digits, Value(character), Value(""))
        contacts = contacts.annotate(phone_digits=phone_digits)
        condition |= Q(phone_digits__contains=digits)
    return list(contacts.filter(condition).order_by("name", "pk")[:limit])


@dataclass
class EarlierConversation:
    conversation: Conversation
    visible: bool  # the viewer may open it (else only its date and state are shown)
    state_label: str = ""  # for pages to fill in, in the viewer's language


@dataclass
class CustomerSummary:
    """What the customer pane of a conversation shows."""

    conversation: Conversation
    profile: SocialProfile | None
    contact: Contact | None
    suggestion: Contact | None
    earlier: list[EarlierConversation] = field(default_factory=list)
    more_earlier: bool = False  # there are more than EARLIER_CONVERSATIONS_SHOWN


def customer_summary(
    *, viewer: AbstractBaseUser | AnonymousUser, conversation: Conversation
) -> CustomerSummary:
    """The customer pane of `conversation` (as selectors.conversation_get gives it, with its profile
    and contact) for `viewer`: the profile, its contact or a suggested one, and the customer's other
    conversations, newest first: every conversation of every profile of the contact once linked,
    the profile's own before that; each says whether the viewer may open it. Two queries at most."""
    profile = customer_profile_of(conversation)
    contact = profile.contact if profile is not None and profile.contact_id else None
    summary = CustomerSummary(
        conversation=conversation,
        profile=profile,
        contact=contact,
        suggestion=contact_suggestion(profile=profile),
    )
    if profile is None:
        return summary
    if contact is not None:
        others = Conversation.objects.filter(social_profile__contact_id=contact.pk)
    else:
        others = Conversation.objects.filter(social_profile_id=profile.pk)
    visible = conversations_visible(viewer=viewer).filter(pk=OuterRef("pk"))
    rows = list(
        others.exclude(pk=conversation.pk)
        .select_related("messaging_account")
        .annotate(viewer_may_open=Exists(visible))
        .order_by("-created_at", "-pk")[: EARLIER_CONVERSATIONS_SHOWN + 1]
    )
    summary.more_earlier = len(rows) > EARLIER_CONVERSATIONS_SHOWN
    summary.earlier = [
        EarlierConversation(conversation=row, visible=row.viewer_may_open)
        for row in rows[:EARLIER_CONVERSATIONS_SHOWN]
    ]
    return summary
