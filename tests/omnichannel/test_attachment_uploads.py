"""An agent's file sent to a customer through the REST API: a size cap (ATTACHMENT_UPLOAD_MAX_BYTES)
and, per message kind, an allow-list of types checked by declared type, extension and first bytes,
refused with a 400 that names the limit. Real database and storage; the broker is not needed (the
delivery is queued after the commit, and a refused upload stores nothing)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from omnichannel.models import Attachment, Message
from tests.factories import ConversationFactory, SupervisorFactory

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
PDF = b"%PDF-1.7\n" + b"x" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _no_delivery(monkeypatch):
    """The accepted messages' deliveries are queued after the commit: kept here instead of sent to a
    broker (delivery has its own tests)."""
    from channels_line import adapter

    monkeypatch.setattr(adapter.LineChannel, "message_delivery_schedule", lambda self, *, message: None)


@pytest.fixture
def api() -> APIClient:
    # A supervisor sends in any conversation (an agent, only in theirs: test_access_policy.py).
    client = APIClient()
    client.force_authenticate(SupervisorFactory())
    return client


def send(api: APIClient, kind: str, name: str, data: bytes, content_type: str):
    conversation = ConversationFactory()
    upload = SimpleUploadedFile(name, data, content_type=content_type)
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"kind": kind, "file": upload},
        format="multipart",
    )


@pytest.mark.parametrize(
    ("kind", "name", "data", "content_type"),
    [
        ("image", "photo.png", PNG, "image/png"),
        ("image", "photo.JPG", JPEG, "image/jpeg"),
        ("video", "clip.mp4", MP4, "video/mp4"),
        ("audio", "voice.m4a", MP4, "audio/x-m4a"),
        ("audio", "voice.mp3", b"ID3" + b"\x00" * 100, "audio/mpeg"),
        ("document", "invoice.pdf", PDF, "application/pdf"),
        ("document", "prices.csv", b"a,b\n1,2\n", "text/csv"),
    ],
)
def test_the_types_line_can_carry_are_accepted(api, kind, name, data, content_type):
    response = send(api, kind, name, data, content_type)

    assert response.status_code == 202, response.content
    attachment = Attachment.objects.get(message__uuid=response.json()["uuid"])
    assert (attachment.content_type, attachment.size) == (content_type, len(data))
    with attachment.file.open("rb") as stored:
        assert stored.read() == data


def test_a_file_declared_as_octet_stream_is_judged_by_its_extension(api):
    response = send(api, "document", "invoice.pdf", PDF, "application/octet-stream")

    assert response.status_code == 202, response.content
    assert Attachment.objects.get().content_type == "application/pdf"


def test_a_file_over_the_cap_is_refused_with_the_limit_named(api, settings):
    settings.ATTACHMENT_UPLOAD_MAX_BYTES = 1000

    response = send(api, "document", "big.pdf", b"%PDF-1.7\n" + b"x" * 1000, "application/pdf")

    assert response.status_code == 400
    assert response.json() == {
        "file": ["The file is 1,009 bytes; a file sent to customers may be at most 1,000 bytes."]
    }
    assert not Message.objects.exists() and not Attachment.objects.exists()


def test_a_file_at_the_cap_is_accepted(api, settings):
    settings.ATTACHMENT_UPLOAD_MAX_BYTES = len(PDF)

    assert send(api, "document", "invoice.pdf", PDF, "application/pdf").status_code == 202


@pytest.mark.parametrize(
    ("kind", "name", "data", "content_type", "allowed"),
    [
        ("document", "offer.html", b"<script>alert(1)</script>", "text/html", ".csv, .doc, .docx"),
        ("image", "logo.svg", b"<svg onload=alert(1)/>", "image/svg+xml", ".jpeg, .jpg, .png"),
        ("image", "photo.gif", b"GIF89a", "image/gif", ".jpeg, .jpg, .png"),
        ("image", "photo.png", PNG, "text/html", ".jpeg, .jpg, .png"),  # declared type not allowed
        ("image", "photo.html", PNG, "image/png", ".jpeg, .jpg, .png"),  # extension does not match
        ("image", "photo.jpg", PNG, "image/png", ".jpeg, .jpg, .png"),  # extension of another type
        ("video", "clip.mov", MP4, "video/quicktime", ".mp4"),
        ("audio", "voice.wav", b"RIFF", "audio/wav", ".m4a, .mp3"),
        ("document", "run.exe", b"MZ", "application/octet-stream", ".csv, .doc, .docx"),
    ],
)
def test_a_type_outside_the_allow_list_is_refused_naming_the_types_allowed(
    api, kind, name, data, content_type, allowed
):
    response = send(api, kind, name, data, content_type)

    assert response.status_code == 400
    (error,) = response.json()["file"]
    assert error.startswith(f"A {kind} must be one of these types: {allowed}")
    assert not Attachment.objects.exists()


def test_a_file_whose_bytes_are_not_what_its_name_and_type_say_is_refused(api):
    response = send(api, "image", "photo.png", b"<html><script>alert(1)</script></html>", "image/png")

    assert response.status_code == 400
    assert response.json() == {"file": ["The file's content is not image/png, as its name or type says."]}
    assert not Attachment.objects.exists()


def test_an_uploaded_name_is_made_safe_and_the_original_kept(api):
    response = send(api, "document", "../../reports/q3..final résumé.pdf", PDF, "application/pdf")

    assert response.status_code == 202, response.content
    attachment = Attachment.objects.get()
    assert attachment.file_name == "q3.final résumé.pdf"
    assert response.json()["attachments"][0]["file_name"] == "q3.final résumé.pdf"
    # Django's multipart parser keeps only the last path component; the rest is ours to clean.
    assert attachment.original_name == "q3..final résumé.pdf"
    assert attachment.file.name.endswith("/q3.final_résumé.pdf")  # the storage's own spelling of the name
