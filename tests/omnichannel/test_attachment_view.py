"""Customer and agent files served by the app: the signed-in attachment view (/attachments/<id>/), the
signed links sent to customers (/files/<token>/), and the admin's conversation page that shows them.
Real database, real storage (a temporary MEDIA_ROOT), Django's test client."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents import roles
from omnichannel.files import ATTACHMENT_CSP, attachment_signed_url
from omnichannel.models import AttachmentState, ConversationState, MessageKind
from tests.factories import (
    AdministratorFactory,
    AgentFactory,
    AttachmentFactory,
    ConversationFactory,
    MessageFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def stored(name: str, content_type: str, data: bytes, *, kind: str = MessageKind.FILE, conversation=None):
    """A downloaded attachment with its file in storage."""
    message = MessageFactory(kind=kind, text="", **({"conversation": conversation} if conversation else {}))
    return AttachmentFactory(
        message=message,
        file=SimpleUploadedFile(name, data, content_type=content_type),
        file_name=name,
        content_type=content_type,
        size=len(data),
        external_url="",
        state=AttachmentState.READY,
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def view_url(attachment, **query) -> str:
    url = reverse("attachment-open", args=[attachment.pk])
    return url + ("?download=1" if query.get("download") else "")


class TestTheAttachmentView:
    def test_an_administrator_gets_the_file_streamed_from_storage(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)

        response = client_for(AdministratorFactory()).get(view_url(attachment))

        assert response.status_code == 200
        assert response.streaming  # a FileResponse over the storage file, read in chunks
        assert b"".join(response.streaming_content) == PNG
        assert response["Content-Length"] == str(len(PNG))
        assert response["Content-Type"] == "image/png"
        assert response["Content-Disposition"] == 'inline; filename="photo.png"'
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == ATTACHMENT_CSP
        assert response["Content-Security-Policy"].startswith("sandbox;")
        assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]

    @pytest.mark.parametrize(
        ("name", "content_type"),
        [
            ("photo.png", "image/png"),
            ("photo.jpg", "image/jpeg"),
            ("anim.gif", "image/gif"),
            ("photo.webp", "image/webp"),
            ("invoice.pdf", "application/pdf"),
            ("voice.m4a", "audio/x-m4a"),
            ("clip.mp4", "video/mp4"),
        ],
    )
    def test_images_audio_video_and_pdf_show_inline(self, name, content_type):
        attachment = stored(name, content_type, b"content")

        response = client_for(AdministratorFactory()).get(view_url(attachment))

        assert response["Content-Disposition"] == f'inline; filename="{name}"'
        assert response["Content-Type"] == content_type
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == ATTACHMENT_CSP

    @pytest.mark.parametrize(
        ("name", "content_type"),
        [
            ("page.html", "text/html"),
            ("page.html", "text/html; charset=utf-8"),
            ("drawing.svg", "image/svg+xml"),
            ("data.xml", "application/xml"),
            ("script.js", "text/javascript"),
            ("blob.bin", "application/octet-stream"),
            ("notes.txt", "text/plain"),
            ("unknown", ""),
            ("trick.mp4", "video/mp4+html"),
        ],
    )
    def test_anything_else_downloads_as_octet_stream_and_never_renders(self, name, content_type):
        attachment = stored(name, content_type, b"<html><script>alert(document.cookie)</script></html>")

        response = client_for(AdministratorFactory()).get(view_url(attachment))

        assert response.status_code == 200
        assert response["Content-Disposition"] == f'attachment; filename="{name}"'
        assert response["Content-Type"] == "application/octet-stream"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == ATTACHMENT_CSP

    def test_a_download_is_offered_for_an_inline_type_when_asked(self):
        attachment = stored("invoice.pdf", "application/pdf", b"%PDF-1.7")

        response = client_for(AdministratorFactory()).get(view_url(attachment, download=True))

        assert response["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
        assert b"".join(response.streaming_content) == b"%PDF-1.7"

    def test_a_name_in_any_script_is_offered_as_is(self):
        attachment = stored("請求書.pdf", "application/pdf", b"%PDF-1.7")

        response = client_for(AdministratorFactory()).get(view_url(attachment, download=True))

        assert (
            response["Content-Disposition"] == "attachment; filename*=utf-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf"
        )

    def test_a_supervisor_gets_the_files_of_every_conversation(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)

        response = client_for(UserFactory(role=roles.SUPERVISOR)).get(view_url(attachment))

        assert response.status_code == 200
        assert b"".join(response.streaming_content) == PNG

    def test_an_agent_gets_the_files_of_their_conversations_only(self):
        agent = AgentFactory()
        theirs = stored(
            "photo.png",
            "image/png",
            PNG,
            kind=MessageKind.IMAGE,
            conversation=ConversationFactory(state=ConversationState.ACTIVE, assigned_agent=agent),
        )
        someone_elses = stored(
            "other.png",
            "image/png",
            PNG,
            kind=MessageKind.IMAGE,
            conversation=ConversationFactory(state=ConversationState.ACTIVE, assigned_agent=AgentFactory()),
        )
        client = client_for(agent)

        response = client.get(view_url(theirs))
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == PNG
        assert client.get(view_url(someone_elses)).status_code == 404  # as for an ID that does not exist

    def test_an_anonymous_visitor_is_sent_to_the_sign_in_page(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)

        response = Client().get(view_url(attachment))

        assert response.status_code == 302
        assert response["Location"] == f"{reverse('login')}?next={view_url(attachment)}"

    def test_a_signed_in_user_without_access_to_conversations_gets_404(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)
        no_role = UserFactory()  # signed in, in no role: may not see conversations

        response = client_for(no_role).get(view_url(attachment))

        assert response.status_code == 404
        assert not getattr(response, "streaming", False)

    def test_a_deactivated_agent_is_signed_out_and_sent_to_the_sign_in_page(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)
        agent = AgentFactory()
        client = client_for(agent)
        agent.is_active = False
        agent.save(update_fields=["is_active"])

        response = client.get(view_url(attachment))

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))

    def test_a_guessed_id_gets_404(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)

        response = client_for(AdministratorFactory()).get(
            reverse("attachment-open", args=[attachment.pk + 1000])
        )

        assert response.status_code == 404

    @pytest.mark.parametrize(
        "state", [AttachmentState.PENDING, AttachmentState.TOO_LARGE, AttachmentState.FAILED]
    )
    def test_a_file_not_downloaded_gets_404(self, state):
        attachment = AttachmentFactory(state=state, external_url="", file_name="clip.mp4")

        assert client_for(AdministratorFactory()).get(view_url(attachment)).status_code == 404

    def test_only_get_and_head_are_answered(self):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)
        client = client_for(AdministratorFactory())

        assert client.head(view_url(attachment)).status_code == 200
        assert client.post(view_url(attachment)).status_code == 405


class TestTheSignedLinksSentToCustomers:
    def test_an_image_link_serves_it_inline_with_the_safe_headers(self):
        attachment = stored("map.png", "image/png", PNG, kind=MessageKind.IMAGE)
        path = attachment_signed_url(attachment=attachment).split("://", 1)[1].split("/", 1)[1]

        response = Client().get(f"/{path}")

        assert response.status_code == 200
        assert b"".join(response.streaming_content) == PNG
        assert response["Content-Type"] == "image/png"
        assert response["Content-Disposition"] == 'inline; filename="map.png"'
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == ATTACHMENT_CSP

    def test_an_html_document_link_downloads_it_and_never_renders_it(self):
        attachment = stored(
            "offer.html", "text/html", b"<script>alert(1)</script>", kind=MessageKind.DOCUMENT
        )
        path = attachment_signed_url(attachment=attachment).split("://", 1)[1].split("/", 1)[1]

        response = Client().get(f"/{path}")

        assert response.status_code == 200
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"] == 'attachment; filename="offer.html"'
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == ATTACHMENT_CSP


class TestTheAdminConversationPage:
    def test_images_show_as_thumbnails_audio_and_video_as_players_other_files_as_downloads(
        self, admin_client
    ):
        conversation = ConversationFactory()
        image = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE, conversation=conversation)
        voice = stored("voice.m4a", "audio/x-m4a", b"m4a", kind=MessageKind.AUDIO, conversation=conversation)
        clip = stored("clip.mp4", "video/mp4", b"mp4", kind=MessageKind.VIDEO, conversation=conversation)
        pdf = stored("invoice.pdf", "application/pdf", b"%PDF-1.7", conversation=conversation)
        page = stored("page.html", "text/html", b"<b>hi</b>", conversation=conversation)
        svg = stored(
            "logo.svg", "image/svg+xml", b"<svg/>", kind=MessageKind.IMAGE, conversation=conversation
        )

        response = admin_client.get(reverse("admin:omnichannel_conversation_change", args=[conversation.pk]))

        html = response.content.decode()
        assert response.status_code == 200
        assert f'<img src="{view_url(image)}"' in html
        assert f'<audio controls preload="metadata" src="{view_url(voice)}">' in html
        assert f'<video controls preload="metadata" src="{view_url(clip)}"' in html
        assert f'href="{view_url(pdf, download=True)}" download' in html
        assert f'href="{view_url(page, download=True)}" download' in html
        assert f'<img src="{view_url(svg)}"' not in html  # an SVG is a download, never an <img> of ours
        assert f'href="{view_url(svg, download=True)}" download' in html
        assert "/media/" not in html

    def test_the_page_reads_every_messages_files_in_one_query(self, admin_client):
        def queries_for(files: int) -> int:
            conversation = ConversationFactory()
            for index in range(files):
                stored(
                    f"photo{index}.png", "image/png", PNG, kind=MessageKind.IMAGE, conversation=conversation
                )
            url = reverse("admin:omnichannel_conversation_change", args=[conversation.pk])
            with CaptureQueriesContext(connection) as queries:
                assert admin_client.get(url).status_code == 200
            return len(queries)

        queries_for(1)  # warms the session and permission caches
        assert queries_for(1) == queries_for(8)

    def test_a_message_page_links_its_file_through_the_view_and_keeps_the_original_name(self, admin_client):
        attachment = stored("passwd", "text/plain", b"x")
        attachment.original_name = "../../etc/passwd"
        attachment.save(update_fields=["original_name"])

        response = admin_client.get(reverse("admin:omnichannel_message_change", args=[attachment.message.pk]))

        html = response.content.decode()
        assert f'href="{view_url(attachment, download=True)}" download' in html
        assert "../../etc/passwd" in html

    def test_the_open_link_works_for_the_administrator(self, admin_client):
        attachment = stored("photo.png", "image/png", PNG, kind=MessageKind.IMAGE)

        response = admin_client.get(view_url(attachment))

        assert response.status_code == 200
        assert b"".join(response.streaming_content) == PNG
