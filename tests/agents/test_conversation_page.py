"""The conversation page (/inbox/c/<id>/): every message kind rendered, the timeline in pages and
live, the composer of the agent working it (send, retry, quick replies, typing), the read mark, and
the access policy on the page and every fragment."""

from __future__ import annotations

import datetime
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from omnichannel import live, selectors
from omnichannel.models import (
    ActivityKind,
    AttachmentState,
    Conversation,
    ConversationActivity,
    ConversationState,
    DeliveryState,
    Direction,
    LiveNotice,
    Message,
    MessageEdit,
    MessageKind,
    QuickReply,
)
from routing.models import ChannelInstance
from routing.services import channel_instance_save
from tests.factories import (
    AgentFactory,
    AttachmentFactory,
    ConversationFactory,
    MessageFactory,
    SupervisorFactory,
    UserFactory,
)
from tests.routing.conftest import workstream_make

pytestmark = pytest.mark.django_db

FRAGMENT = {"HTTP_X_INBOX_FRAGMENT": "1"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(autouse=True)
def _no_live_hub(monkeypatch):
    """Pages take the live cursor from the process's hub; these tests do not listen (omnichannel.live
    has its own tests), so no hub thread starts and reads the database behind the test's back."""
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


def page_url(conversation) -> str:
    return reverse("inbox:conversation", args=[conversation.pk])


def timeline_url(conversation) -> str:
    return reverse("inbox:conversation-timeline", args=[conversation.pk])


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def agent():
    return AgentFactory(first_name="Mei", last_name="Sato")


@pytest.fixture
def worked(agent):
    """A conversation the agent works (Active with them), with a customer named Aiko."""
    return ConversationFactory(
        state=ConversationState.ACTIVE,
        assigned_agent=agent,
        social_profile__display_name="Aiko",
        social_profile__language="ja",
    )


def messages_at(conversation, count: int, start: datetime.datetime | None = None) -> list[Message]:
    start = start or timezone.now() - datetime.timedelta(days=1)
    return [
        MessageFactory(
            conversation=conversation, text=f"Line {n}", sent_at=start + datetime.timedelta(minutes=n)
        )
        for n in range(count)
    ]


def shown_message_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'id="message-(\d+)"', html)]


class TestAccess:
    def test_an_agent_guessing_another_agents_conversation_gets_404_on_the_page_and_every_fragment(
        self, worked
    ):
        message = MessageFactory(conversation=worked, failed=True)
        intruder = client_for(AgentFactory())

        assert intruder.get(page_url(worked)).status_code == 404
        assert intruder.get(timeline_url(worked), {"after": 0}).status_code == 404
        assert intruder.get(timeline_url(worked), {"before": message.pk}).status_code == 404
        urls = [
            reverse("inbox:conversation-send", args=[worked.pk]),
            reverse("inbox:conversation-retry", args=[worked.pk, message.pk]),
            reverse("inbox:conversation-typing", args=[worked.pk]),
        ]
        for url in urls:
            assert intruder.post(url, {"text": "hello"}, **FRAGMENT).status_code == 404
        quick = reverse("inbox:conversation-quick-replies", args=[worked.pk])
        assert intruder.get(quick, {"q": ""}).status_code == 404
        assert intruder.get(page_url(worked) + "x").status_code == 404
        assert Message.objects.filter(conversation=worked).count() == 1

    def test_a_conversation_that_does_not_exist_is_404_as_one_that_cannot_be_seen(self, agent):
        assert client_for(agent).get(reverse("inbox:conversation", args=[999_999])).status_code == 404

    def test_a_user_without_an_inbox_role_gets_403_and_a_stranger_is_sent_to_sign_in(self, worked):
        assert client_for(UserFactory()).get(page_url(worked)).status_code == 403
        response = Client().get(page_url(worked))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    def test_a_supervisor_reads_any_conversation_without_a_composer_and_cannot_send(self, worked):
        MessageFactory(conversation=worked, text="Where is my parcel?")
        supervisor = client_for(SupervisorFactory())

        response = supervisor.get(page_url(worked))

        html = response.content.decode()
        assert response.status_code == 200
        assert "Where is my parcel?" in html
        assert 'id="composer"' not in html and 'id="read-only"' in html
        assert response.context["can_act"] is True  # the toolbar: transfer and close
        send = reverse("inbox:conversation-send", args=[worked.pk])
        refused = supervisor.post(send, {"text": "hi"}, **FRAGMENT)
        assert refused.status_code == 403 and refused["Content-Type"].startswith("text/plain")
        assert "Only the agent working this conversation" in refused.content.decode()
        assert supervisor.post(send, {"text": "hi"}).status_code == 403
        assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()

    def test_the_agent_working_it_gets_the_composer_and_a_closed_conversation_is_read_only(
        self, agent, worked
    ):
        html = client_for(agent).get(page_url(worked)).content.decode()
        assert 'id="composer"' in html and 'id="read-only"' not in html

        closed = ConversationFactory(
            state=ConversationState.CLOSED, closed_at=timezone.now(), assigned_agent=agent
        )
        html = client_for(agent).get(page_url(closed)).content.decode()
        assert 'id="composer"' not in html and "This conversation is closed." in html

    def test_the_page_includes_the_toolbar_and_the_customer_pane_listening_to_the_conversation(
        self, agent, worked
    ):
        html = client_for(agent).get(page_url(worked)).content.decode()

        assert f'hx-get="{reverse("inbox:customer", args=[worked.pk])}"' in html
        assert f"live-conversation-{worked.pk} from:body" in html
        assert f"?conversation={worked.pk}" in html  # the page's live stream hears this conversation


class TestEveryKindRenders:
    def test_one_message_of_each_kind_is_shown_with_its_own_markup(self, agent, worked):
        at = timezone.now() - datetime.timedelta(hours=1)

        def add(minutes: int, **fields):
            return MessageFactory(
                conversation=worked, sent_at=at + datetime.timedelta(minutes=minutes), **fields
            )

        text = add(1, text="<b>Hi</b> see https://example.com/order\nsecond line")
        image = add(2, kind=MessageKind.IMAGE, text="")
        stored = AttachmentFactory(
            message=image, state=AttachmentState.READY, external_url="", file_name="photo.png"
        )
        stored.file.save("photo.png", ContentFile(PNG), save=True)
        video = add(3, kind=MessageKind.VIDEO, text="")
        AttachmentFactory(
            message=video,
            file_name="clip.mp4",
            content_type="video/mp4",
            external_url="https://cdn.example.com/clip.mp4",
            preview_url="https://cdn.example.com/clip.jpg",
        )
        audio = add(4, kind=MessageKind.AUDIO, text="")
        AttachmentFactory(
            message=audio,
            file_name="voice.m4a",
            content_type="audio/m4a",
            external_url="https://cdn.example.com/v.m4a",
        )
        document = add(5, kind=MessageKind.FILE, text="invoice.pdf")
        AttachmentFactory(
            message=document,
            file_name="invoice.pdf",
            content_type="application/pdf",
            size=2048,
            external_url="https://cdn.example.com/invoice.pdf",
        )
        refused = add(6, kind=MessageKind.FILE, text="secret.zip", is_flagged=True)
        AttachmentFactory(
            message=refused,
            file_name="secret.zip",
            external_url="",
            state=AttachmentState.REFUSED,
            error="This channel does not accept customers' files",
        )
        sticker = add(
            7,
            kind=MessageKind.STICKER,
            text="",
            payload={
                "package_id": "446",
                "sticker_id": "1988",
                "keywords": ["happy"],
                "image_url": "https://stickershop.line-scdn.net/stickershop/v1/sticker/1988/android/sticker.png",
            },
        )
        location = add(
            8,
            kind=MessageKind.LOCATION,
            text="Tokyo Tower",
            payload={
                "title": "Tokyo Tower",
                "address": "4-2-8 Shibakoen",
                "latitude": 35.6586,
                "longitude": 139.7454,
            },
        )
        edited = add(9, text="I want two", edited_at=at + datetime.timedelta(minutes=10))
        MessageEdit.objects.create(
            message=edited, previous_text="I want one", new_text="I want two", edited_at=edited.edited_at
        )
        unsent = add(11, text="", unsent_at=at + datetime.timedelta(minutes=12))
        postback = add(
            13,
            kind=MessageKind.POSTBACK,
            text="action=buy&item=111",
            payload={"data": "action=buy&item=111", "params": {"date": "2026-12-24"}},
        )
        follow = add(
            14, kind=MessageKind.EVENT, text="Added the account as a friend", payload={"event": "follow"}
        )
        unknown = add(
            15,
            kind=MessageKind.UNKNOWN,
            text="Unsupported LINE event “futureThing”",
            is_flagged=True,
            payload={"event": "futureThing"},
            raw={"type": "futureThing", "odd": 1},
        )
        system = add(
            16,
            direction=Direction.OUTBOUND,
            external_id="",
            sender_profile=None,
            delivery_state=DeliveryState.DELIVERED,
            text="Thank you for waiting",
        )
        failed = add(17, failed=True, author=agent, text="Sorry for the delay")
        pending = add(
            18,
            direction=Direction.OUTBOUND,
            external_id="",
            sender_profile=None,
            author=agent,
            delivery_state=DeliveryState.PENDING,
            text="On its way",
        )
        transfer = ConversationActivity.objects.create(
            conversation=worked,
            kind=ActivityKind.TRANSFERRED,
            from_state="active",
            to_state="open",
            actor=agent,
            note="Billing question",
            created_at=at + datetime.timedelta(minutes=19),
        )

        html = client_for(agent).get(page_url(worked)).content.decode()

        def block(message_or_id) -> str:
            element_id = message_or_id if isinstance(message_or_id, str) else f"message-{message_or_id.pk}"
            start = html.index(f'id="{element_id}"')
            end = html.find('data-key="', html.find('data-key="', start) + 1)
            return html[start : end if end > 0 else len(html)]

        # Text: escaped, links clickable, line breaks kept.
        assert "&lt;b&gt;Hi&lt;/b&gt;" in block(text) and "<b>Hi</b>" not in html
        assert '<a href="https://example.com/order"' in block(text) and "<br>second line" in block(text)
        # Image: a thumbnail from the signed-in attachment view, that enlarges.
        open_url = reverse("attachment-open", args=[stored.pk])
        assert f'data-enlarge="{open_url}"' in block(image) and f'<img src="{open_url}"' in block(image)
        # Video and audio players; a file to download.
        assert '<video controls preload="metadata" src="https://cdn.example.com/clip.mp4"' in block(video)
        assert 'poster="https://cdn.example.com/clip.jpg"' in block(video)
        assert '<audio controls preload="metadata" src="https://cdn.example.com/v.m4a"' in block(audio)
        assert 'href="https://cdn.example.com/invoice.pdf"' in block(document) and "invoice.pdf" in block(
            document
        )
        assert "2.0\xa0KB" in block(document)
        # A refused file: flagged with its name, no link.
        assert "File not accepted" in block(refused) and "secret.zip" in block(refused)
        assert "attachment-refused" in block(refused) and "href=" not in block(refused)
        # Sticker as an image; location with its map link.
        assert 'class="sticker" src="https://stickershop.line-scdn.net/' in block(sticker)
        assert "Tokyo Tower" in block(location) and "4-2-8 Shibakoen" in block(location)
        assert "https://www.openstreetmap.org/?mlat=35.6586&amp;mlon=139.7454" in block(location)
        # Edited with its history; unsent as a marker.
        assert "Edited" in block(edited) and "<del>I want one</del>" in block(edited)
        assert "The customer unsent this message." in block(unsent)
        # Postback as a customer action; events; a flagged unknown event with what was received.
        assert "Customer action" in block(postback) and "action=buy&amp;item=111" in block(postback)
        assert "<dt>date</dt><dd>2026-12-24</dd>" in block(postback)
        assert "Added the account as a friend" in block(follow) and "msg-event" in block(follow)
        assert "Not understood" in block(unknown) and "futureThing" in block(unknown)
        assert "&quot;odd&quot;: 1" in block(unknown)
        # Outbound: automated messages, delivery states, Retry on a failed one only.
        assert "Automated" in block(system) and "Delivered" in block(system)
        assert "Not delivered" in block(failed) and "LINE answered 500" in block(failed)
        retry = reverse("inbox:conversation-retry", args=[worked.pk, failed.pk])
        assert f'action="{retry}"' in block(failed)
        assert "Queued" in block(pending) and "/retry/" not in block(pending)
        assert "Mei Sato" in block(pending)
        # A transfer note, between the messages by time.
        assert "Transferred by Mei Sato" in block(f"activity-{transfer.pk}")
        assert "Billing question" in block(f"activity-{transfer.pk}")
        order = [html.index(f'id="message-{m.pk}"') for m in (pending,)] + [
            html.index(f'id="activity-{transfer.pk}"')
        ]
        assert order == sorted(order)
        assert html.index(f'id="message-{text.pk}"') < html.index(f'id="message-{pending.pk}"')

    def test_a_supervisor_sees_a_failed_message_without_a_retry_button(self, worked):
        failed = MessageFactory(conversation=worked, failed=True)
        html = client_for(SupervisorFactory()).get(page_url(worked)).content.decode()
        assert f'id="message-{failed.pk}"' in html and "/retry/" not in html


class TestPaging:
    def test_the_latest_page_comes_first_and_load_earlier_walks_back_to_the_first_message(
        self, agent, worked
    ):
        sent = messages_at(worked, selectors.TIMELINE_PAGE_SIZE * 2 + 10)
        worked.routing = {"queue": {"id": 1, "name": "Billing"}, "reason": "rule 'Invoices' matched"}
        worked.save()
        client = client_for(agent)

        html = client.get(page_url(worked)).content.decode()
        assert shown_message_ids(html) == [m.pk for m in sent[-50:]]
        before = re.search(r'class="load-earlier" data-before="(\d+)"', html).group(1)
        assert int(before) == sent[-50].pk

        earlier = client.get(timeline_url(worked), {"before": before}, **FRAGMENT).content.decode()
        assert shown_message_ids(earlier) == [m.pk for m in sent[10:60]]
        before = re.search(r'data-before="(\d+)"', earlier).group(1)

        first = client.get(timeline_url(worked), {"before": before}, **FRAGMENT).content.decode()
        assert shown_message_ids(first) == [m.pk for m in sent[:10]]
        assert "load-earlier" not in first
        # The routing decision opens the history.
        assert "Routed to the queue Billing: rule &#x27;Invoices&#x27; matched" in first
        assert "Routed to the queue" not in html + earlier

    def test_messages_at_the_same_instant_are_neither_lost_nor_repeated_between_pages(self, agent, worked):
        instant = timezone.now() - datetime.timedelta(hours=2)
        sent = [
            MessageFactory(conversation=worked, sent_at=instant)
            for _ in range(selectors.TIMELINE_PAGE_SIZE + 5)
        ]
        client = client_for(agent)

        html = client.get(page_url(worked)).content.decode()
        before = re.search(r'data-before="(\d+)"', html).group(1)
        earlier = client.get(timeline_url(worked), {"before": before}).content.decode()

        assert shown_message_ids(earlier) + shown_message_ids(html) == [m.pk for m in sent]

    def test_activities_go_with_the_page_of_their_time(self, agent, worked):
        start = timezone.now() - datetime.timedelta(days=1)
        messages_at(worked, selectors.TIMELINE_PAGE_SIZE + 10, start=start)
        old = ConversationActivity.objects.create(
            conversation=worked,
            kind=ActivityKind.OFFERED,
            agent=agent,
            created_at=start + datetime.timedelta(seconds=30),
        )
        recent = ConversationActivity.objects.create(
            conversation=worked,
            kind=ActivityKind.OFFER_ANSWERED,
            agent=agent,
            data={"state": "accepted"},
            created_at=start + datetime.timedelta(minutes=55, seconds=30),
        )
        client = client_for(agent)

        html = client.get(page_url(worked)).content.decode()
        before = re.search(r'data-before="(\d+)"', html).group(1)
        earlier = client.get(timeline_url(worked), {"before": before}).content.decode()

        assert f'id="activity-{recent.pk}"' in html and f'id="activity-{old.pk}"' not in html
        assert f'id="activity-{old.pk}"' in earlier and f'id="activity-{recent.pk}"' not in earlier
        assert "Offered to Mei Sato" in earlier and "accepted the offer" in html

    def test_the_page_runs_the_same_number_of_queries_whatever_the_number_of_messages(
        self, agent, worked, django_assert_num_queries
    ):
        client = client_for(agent)

        def page_queries() -> int:
            # Something new from the customer each time: the read mark is part of the opening.
            Conversation.objects.filter(pk=worked.pk).update(last_message_at=timezone.now())
            with CaptureQueriesContext(connection) as queries:
                assert client.get(page_url(worked)).status_code == 200
            return len(queries)

        def with_files_and_edits(count: int) -> None:
            for message in messages_at(worked, count):
                AttachmentFactory(message=message)
                MessageEdit.objects.create(
                    message=message, previous_text="a", new_text="b", edited_at=timezone.now()
                )
            ConversationActivity.objects.create(conversation=worked, kind=ActivityKind.OFFERED, agent=agent)

        with_files_and_edits(2)
        few = page_queries()
        with_files_and_edits(150)
        many = page_queries()

        assert few == many
        # Session, user, the agent's language and time zone, permissions (2), the conversation, its
        # messages, files, edits and activities, the read mark (update and notice, in a savepoint
        # here: a transaction outside tests) and the attachment policy.
        Conversation.objects.filter(pk=worked.pk).update(last_message_at=timezone.now())
        with django_assert_num_queries(15):
            client.get(page_url(worked))

    def test_load_earlier_runs_a_fixed_number_of_queries(self, agent, worked, django_assert_max_num_queries):
        sent = messages_at(worked, 300)
        for message in sent:
            AttachmentFactory(message=message)
        client = client_for(agent)
        with django_assert_max_num_queries(10):
            response = client.get(timeline_url(worked), {"before": sent[-1].pk})
        assert len(shown_message_ids(response.content.decode())) == selectors.TIMELINE_PAGE_SIZE


class TestLiveUpdates:
    def test_the_fragment_gives_what_came_after_the_last_shown_and_the_changed_ones_again(
        self, agent, worked
    ):
        shown = messages_at(worked, 3)
        failed = MessageFactory(
            conversation=worked, failed=True, sent_at=timezone.now() - datetime.timedelta(hours=1)
        )
        new = MessageFactory(conversation=worked, text="Are you there?")
        activity = ConversationActivity.objects.create(
            conversation=worked,
            kind=ActivityKind.STATE_CHANGED,
            from_state="active",
            to_state="waiting",
            actor=agent,
        )

        response = client_for(agent).get(
            timeline_url(worked), {"after": failed.pk, "after_activity": 0, "changed": f"{shown[0].pk},x"}
        )

        html = response.content.decode()
        assert shown_message_ids(html) == [shown[0].pk, new.pk]
        assert f'id="activity-{activity.pk}"' in html and "Active → Waiting" in html

    def test_a_reader_sees_no_retry_button_in_live_updates_either(self, worked):
        failed = MessageFactory(conversation=worked, failed=True)
        html = (
            client_for(SupervisorFactory()).get(timeline_url(worked), {"changed": failed.pk}).content.decode()
        )
        assert f'id="message-{failed.pk}"' in html and "/retry/" not in html


class TestComposer:
    def send_url(self, conversation) -> str:
        return reverse("inbox:conversation-send", args=[conversation.pk])

    def test_the_agent_sends_text_and_gets_the_message_back_as_a_timeline_item(self, agent, worked):
        response = client_for(agent).post(
            self.send_url(worked), {"text": "Hello Aiko\nHow can I help?"}, **FRAGMENT
        )

        message = Message.objects.get(direction=Direction.OUTBOUND)
        assert response.status_code == 200
        assert (message.text, message.author, message.delivery_state) == (
            "Hello Aiko\nHow can I help?",
            agent,
            DeliveryState.PENDING,
        )
        assert shown_message_ids(response.content.decode()) == [message.pk]
        assert LiveNotice.objects.filter(conversation=worked, data__message=message.pk).exists()

    def test_without_javascript_the_form_sends_and_comes_back_to_the_page(self, agent, worked):
        response = client_for(agent).post(self.send_url(worked), {"text": "Plain form"})
        assert response.status_code == 302 and response["Location"] == page_url(worked)
        assert Message.objects.get(direction=Direction.OUTBOUND).text == "Plain form"

    def test_an_empty_message_is_refused_with_the_reason(self, agent, worked):
        response = client_for(agent).post(self.send_url(worked), {"text": "   "}, **FRAGMENT)
        assert response.status_code == 400 and "Write a message" in response.content.decode()

    def test_a_file_goes_only_when_the_channel_instance_lets_agents_send_files(self, agent, worked):
        instance = channel_instance_save(
            instance=ChannelInstance(
                messaging_account=worked.messaging_account,
                workstream=workstream_make(),
                file_attachments=True,
                agents_can_send_attachments=False,
            )
        )
        client = client_for(agent)
        assert 'type="file"' not in client.get(page_url(worked)).content.decode()
        refused = client.post(
            self.send_url(worked), {"file": SimpleUploadedFile("map.png", PNG, "image/png")}, **FRAGMENT
        )
        assert refused.status_code == 400 and "does not let agents send files" in refused.content.decode()
        with_text = client.post(
            self.send_url(worked),
            {"text": "Here is the map", "file": SimpleUploadedFile("map.png", PNG, "image/png")},
            **FRAGMENT,
        )
        assert with_text.status_code == 400
        assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()  # not the text alone

        instance.agents_can_send_attachments = True
        channel_instance_save(instance=instance)
        assert 'type="file"' in client.get(page_url(worked)).content.decode()
        response = client.post(
            self.send_url(worked),
            {"text": "Here is the map", "file": SimpleUploadedFile("map.png", PNG, "image/png")},
            **FRAGMENT,
        )
        assert response.status_code == 200
        text, image = Message.objects.filter(direction=Direction.OUTBOUND).order_by("id")
        assert (text.kind, text.text, image.kind) == (MessageKind.TEXT, "Here is the map", MessageKind.IMAGE)
        assert image.attachments.get().content_type == "image/png"
        assert shown_message_ids(response.content.decode()) == [text.pk, image.pk]

    def test_retry_queues_a_failed_message_again_and_refuses_a_delivered_one(self, agent, worked):
        failed = MessageFactory(conversation=worked, failed=True, author=agent)
        delivered = MessageFactory(conversation=worked, outbound=True, author=agent)
        client = client_for(agent)

        response = client.post(reverse("inbox:conversation-retry", args=[worked.pk, failed.pk]), **FRAGMENT)
        failed.refresh_from_db()
        assert response.status_code == 200 and failed.delivery_state == DeliveryState.PENDING
        assert "Queued" in response.content.decode()

        refused = client.post(reverse("inbox:conversation-retry", args=[worked.pk, delivered.pk]), **FRAGMENT)
        assert refused.status_code == 409 and "can be sent again" in refused.content.decode()

    def test_retry_of_a_message_of_another_conversation_is_404(self, agent, worked):
        elsewhere = MessageFactory(failed=True)
        response = client_for(agent).post(reverse("inbox:conversation-retry", args=[worked.pk, elsewhere.pk]))
        assert response.status_code == 404


class TestQuickReplies:
    def test_a_search_by_title_or_tag_fills_in_the_customer_and_the_agent(self, agent, worked):
        QuickReply.objects.create(
            title="Greeting", tags="hello, welcome", text="Hello {CustomerName}, I am {AgentName}."
        )
        QuickReply.objects.create(title="Refund policy", tags="money", text="Refunds take 5 days.")
        QuickReply.objects.create(title="Hello (English)", language="en", text="Hi!")
        QuickReply.objects.create(title="Hello retired", is_active=False, text="Old")
        QuickReply.objects.create(title="こんにちは", language="ja", tags="hello", text="{CustomerName}様")
        client = client_for(agent)
        url = reverse("inbox:conversation-quick-replies", args=[worked.pk])

        html = client.get(url, {"q": "hello"}).content.decode()
        assert 'data-text="Hello Aiko, I am Mei Sato."' in html
        assert 'data-text="Aiko様"' in html
        assert "Hi!" not in html  # English: the customer reads Japanese
        assert "Old" not in html and "Refunds" not in html

        assert "Refunds take 5 days." in client.get(url, {"q": "money"}).content.decode()
        assert "No quick reply matches" in client.get(url, {"q": "zzz"}).content.decode()

    def test_placeholders_are_filled_in_as_text_and_escaped_in_the_page(self, agent, worked):
        worked.social_profile.display_name = '<img src=x onerror="alert(1)">'
        worked.social_profile.save()
        QuickReply.objects.create(title="Hi", text="Dear {CustomerName}")
        html = (
            client_for(agent)
            .get(reverse("inbox:conversation-quick-replies", args=[worked.pk]))
            .content.decode()
        )
        assert "<img src=x" not in html and "Dear &lt;img src=x" in html

    def test_only_the_agent_working_it_gets_quick_replies(self, worked):
        response = client_for(SupervisorFactory()).get(
            reverse("inbox:conversation-quick-replies", args=[worked.pk])
        )
        assert response.status_code == 403


class TestTypingAndReadMarks:
    def test_typing_is_passed_on_once_per_five_seconds_per_conversation(
        self, agent, worked, django_capture_on_commit_callbacks, monkeypatch
    ):
        calls: list[int] = []
        monkeypatch.setattr(
            "omnichannel.services.conversation_typing",
            lambda *, conversation, seconds=20: calls.append(conversation.pk),
        )
        client = client_for(agent)
        url = reverse("inbox:conversation-typing", args=[worked.pk])

        assert client.post(url).status_code == 204
        assert client.post(url).status_code == 429
        assert calls == [worked.pk]
        assert client_for(SupervisorFactory()).post(url).status_code == 403

    def test_typing_reaches_the_channel_after_the_commit(
        self, agent, worked, django_capture_on_commit_callbacks, monkeypatch
    ):
        scheduled: list[tuple[int, int]] = []
        monkeypatch.setattr(
            "channels_line.adapter.LineChannel.typing_indicator_schedule",
            lambda self, *, conversation_id, seconds: scheduled.append((conversation_id, seconds)),
        )
        with django_capture_on_commit_callbacks(execute=True):
            client_for(agent).post(reverse("inbox:conversation-typing", args=[worked.pk]))
        assert scheduled == [(worked.pk, 20)]

    def test_opening_it_as_its_agent_marks_the_customers_messages_read_once(
        self, agent, worked, django_capture_on_commit_callbacks
    ):
        MessageFactory(conversation=worked)
        worked.last_message_at = timezone.now()
        worked.save()
        client = client_for(agent)

        with django_capture_on_commit_callbacks() as callbacks:
            client.get(page_url(worked))
        worked.refresh_from_db()
        assert worked.agent_read_at is not None and len(callbacks) == 1
        assert LiveNotice.objects.filter(agent=agent, kind="conversation", data__read=worked.pk).exists()

        with django_capture_on_commit_callbacks() as again:
            client.get(page_url(worked))
        assert again == []  # nothing new since

    def test_a_customer_message_that_arrives_while_its_agent_has_it_open_is_read_at_once(
        self, agent, worked, django_capture_on_commit_callbacks
    ):
        client = client_for(agent)
        client.get(page_url(worked))
        message = MessageFactory(conversation=worked, text="One more thing")
        worked.last_message_at = message.created_at
        worked.save()

        with django_capture_on_commit_callbacks() as callbacks:
            client.get(timeline_url(worked), {"after": message.pk - 1})
        worked.refresh_from_db()
        assert worked.agent_read_at >= message.created_at and len(callbacks) == 1  # LINE's read mark

    def test_a_supervisor_opening_it_marks_nothing_read(self, worked, django_capture_on_commit_callbacks):
        MessageFactory(conversation=worked)
        with django_capture_on_commit_callbacks() as callbacks:
            client_for(SupervisorFactory()).get(page_url(worked))
        worked.refresh_from_db()
        assert worked.agent_read_at is None and callbacks == []


class TestQuickReplyAdmin:
    def test_quick_replies_are_managed_in_the_admin_with_search_and_filters(self):
        from tests.factories import AdministratorFactory

        QuickReply.objects.create(title="Greeting", tags="hello", text="Hi")
        client = client_for(AdministratorFactory(is_superuser=True))
        response = client.get(reverse("admin:omnichannel_quickreply_changelist"), {"q": "hello"})
        assert response.status_code == 200 and "Greeting" in response.content.decode()


class TestGroupChats:
    def test_in_a_group_each_customer_message_names_its_sender(self, agent):
        from tests.factories import SocialProfileFactory

        group = ConversationFactory(
            state=ConversationState.ACTIVE, assigned_agent=agent, thread_type="group", thread_id="Cgroup1"
        )
        member = SocialProfileFactory(messaging_account=group.messaging_account, display_name="Kenji")
        message = MessageFactory(conversation=group, sender_profile=member, text="Me too")

        html = client_for(agent).get(page_url(group)).content.decode()

        start = html.index(f'id="message-{message.pk}"')
        assert '<span class="author">Kenji</span>' in html[start : html.index("</article>", start)]


class TestUnsafeLinks:
    def test_a_link_from_a_payload_that_is_not_a_web_address_is_not_shown(self, agent, worked):
        video = MessageFactory(conversation=worked, kind=MessageKind.VIDEO, text="")
        AttachmentFactory(message=video, content_type="video/mp4", external_url="javascript:alert(1)")
        MessageFactory(
            conversation=worked,
            kind=MessageKind.STICKER,
            text="",
            payload={"image_url": "javascript:alert(2)"},
        )

        html = client_for(agent).get(page_url(worked)).content.decode()

        assert "javascript:" not in html
