"""factory_boy factories for the records tests need.

Messaging accounts are made through `channels_line.services.line_account_create`, as the admin and the
API make them, so their credentials are encrypted exactly as in production. Users get their role
through the groups that `agents.roles` defines (rebuilt by migrate)."""

from __future__ import annotations

import secrets

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from agents import roles
from channels_line.models import EventState, LineWebhookEvent
from channels_line.services.accounts import line_account_create
from omnichannel.models import (
    Attachment,
    AttachmentState,
    Contact,
    Conversation,
    ConversationState,
    DeliveryState,
    Direction,
    Message,
    MessageKind,
    MessagingAccount,
    SocialProfile,
    ThreadType,
)

TEST_PASSWORD = "pw-for-tests-123"


def channel_secret_new() -> str:
    """A channel secret as the LINE console shows it: 32 hexadecimal characters."""
    return secrets.token_hex(16)


def channel_access_token_new() -> str:
    """A long-lived channel access token look-alike (LINE's are about 172 characters)."""
    return secrets.token_urlsafe(128)


def _role_add(user, create: bool, role: str | None) -> None:
    if create and role:
        user.groups.add(Group.objects.get(name=role))


class UserFactory(factory.django.DjangoModelFactory):
    """A user; `role=roles.AGENT` (or ADMINISTRATOR, SUPERVISOR) puts them in that role's group."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Sequence(lambda n: f"Person {n}")
    password = factory.django.Password(TEST_PASSWORD)
    is_staff = False
    role = factory.PostGeneration(
        lambda user, create, extracted, **kwargs: _role_add(user, create, extracted)
    )


class AdministratorFactory(UserFactory):
    """An Administrator: staff, sets up messaging accounts in the admin site."""

    username = factory.Sequence(lambda n: f"admin{n}")
    is_staff = True
    role = factory.PostGeneration(
        lambda user, create, extracted, **kwargs: _role_add(user, create, extracted or roles.ADMINISTRATOR)
    )


class SupervisorFactory(UserFactory):
    username = factory.Sequence(lambda n: f"supervisor{n}")
    is_staff = True
    role = factory.PostGeneration(
        lambda user, create, extracted, **kwargs: _role_add(user, create, extracted or roles.SUPERVISOR)
    )


class AgentFactory(UserFactory):
    """An Agent: works conversations, not staff."""

    username = factory.Sequence(lambda n: f"agent{n}")
    role = factory.PostGeneration(
        lambda user, create, extracted, **kwargs: _role_add(user, create, extracted or roles.AGENT)
    )


class LineMessagingAccountFactory(factory.Factory):
    """A messaging account of type LINE with its credentials, made by `line_account_create`.

    `factory.build()` is not supported: an account without its LINE details is not a valid record."""

    class Meta:
        model = MessagingAccount

    name = factory.Sequence(lambda n: f"LINE account {n}")
    channel_id = factory.Sequence(lambda n: str(1_650_000_000 + n))
    channel_secret = factory.LazyFunction(channel_secret_new)
    channel_access_token = factory.LazyFunction(channel_access_token_new)
    enabled = True

    @classmethod
    def _create(cls, model_class, *args, **kwargs) -> MessagingAccount:
        return line_account_create(**kwargs)

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        raise NotImplementedError("LINE messaging accounts are only created, through line_account_create.")


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    phone = factory.Sequence(lambda n: f"+66 2 000 {n:04d}")


class SocialProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SocialProfile

    messaging_account = factory.SubFactory(LineMessagingAccountFactory)
    external_id = factory.LazyFunction(lambda: f"U{secrets.token_hex(16)}")
    display_name = factory.Sequence(lambda n: f"LINE user {n}")
    picture_url = factory.LazyAttribute(lambda o: f"https://profile.line-scdn.net/{o.external_id}")
    language = "en"
    is_reachable = True


class ConversationFactory(factory.django.DjangoModelFactory):
    """A one-to-one conversation with a social profile, on that profile's messaging account."""

    class Meta:
        model = Conversation

    social_profile = factory.SubFactory(SocialProfileFactory)
    messaging_account = factory.SelfAttribute("social_profile.messaging_account")
    thread_type = ThreadType.USER
    thread_id = factory.SelfAttribute("social_profile.external_id")
    state = ConversationState.OPEN
    last_message_at = factory.LazyFunction(timezone.now)


class MessageFactory(factory.django.DjangoModelFactory):
    """An inbound text message from the conversation's customer; `outbound=True` for an agent's."""

    class Meta:
        model = Message

    class Params:
        outbound = factory.Trait(
            direction=Direction.OUTBOUND,
            external_id="",
            sender_profile=None,
            delivery_state=DeliveryState.DELIVERED,
        )
        failed = factory.Trait(
            direction=Direction.OUTBOUND,
            external_id="",
            sender_profile=None,
            delivery_state=DeliveryState.FAILED,
            delivery_attempts=3,
            delivery_error="LINE answered 500: internal error",
        )

    conversation = factory.SubFactory(ConversationFactory)
    direction = Direction.INBOUND
    kind = MessageKind.TEXT
    text = factory.Sequence(lambda n: f"Message number {n}")
    external_id = factory.Sequence(lambda n: str(590_000_000_000_000_000 + n))
    sender_profile = factory.SelfAttribute("conversation.social_profile")
    sent_at = factory.LazyFunction(timezone.now)
    delivery_state = DeliveryState.RECEIVED


class AttachmentFactory(factory.django.DjangoModelFactory):
    """An attachment hosted elsewhere (no file in storage); pass `file=` for a stored one."""

    class Meta:
        model = Attachment

    message = factory.SubFactory(MessageFactory, kind=MessageKind.IMAGE, text="")
    file_name = "photo.jpg"
    content_type = "image/jpeg"
    external_url = "https://cdn.example.com/photo.jpg"
    state = AttachmentState.EXTERNAL


class LineWebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LineWebhookEvent

    messaging_account = factory.SubFactory(LineMessagingAccountFactory)
    webhook_event_id = factory.Sequence(lambda n: f"01HZZZZZZZZZZZZZZZZZZZ{n:04d}")
    event_type = "message"
    mode = "active"
    source_type = "user"
    source_user_id = factory.LazyFunction(lambda: f"U{secrets.token_hex(16)}")
    line_timestamp = factory.LazyFunction(timezone.now)
    state = EventState.PENDING
    raw = factory.LazyAttribute(
        lambda o: {
            "type": o.event_type,
            "webhookEventId": o.webhook_event_id,
            "mode": o.mode,
            "source": {"type": o.source_type, "userId": o.source_user_id},
            "message": {"type": "text", "id": "590000000000000001", "text": "Hello from the raw event"},
        }
    )
