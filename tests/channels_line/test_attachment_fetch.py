"""Downloading a customer's media from LINE: streamed into storage within LINE_MEDIA_MAX_BYTES, under a
safe name. The customer sends through the LINE stand-in; the event is taken by the webhook service and
processed as the worker processes it; the download runs as the worker's task runs it, with the real
line-bot-sdk over HTTP against the stand-in (or, for a body sent without its length, against a small
HTTP server of this test on loopback, as LINE's data host)."""

from __future__ import annotations

import base64
import os
import threading
import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from channels_line.models import LineWebhookEvent
from channels_line.services import line_event_process, line_webhook_receive
from channels_line.services.inbound import line_attachment_fetch
from omnichannel.files import FILE_NAME_MAX_BYTES, file_name_clean
from omnichannel.models import Attachment, AttachmentState
from tests.channels_line.payloads import body_bytes, sign

# The production path: every transaction commits; what is queued after a commit is captured instead of
# sent (no worker runs here: test_end_to_end.py runs one).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def downloads(monkeypatch, enqueued) -> list[int]:
    """The media downloads queued after processing's commits, kept here; the test runs them."""
    from channels_line.tasks import line_message_content_fetch

    queued: list[int] = []
    monkeypatch.setattr(line_message_content_fetch, "delay", queued.append)
    return queued


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def customer_sends(shop, downloads: list[int], **action) -> Attachment:
    """The customer sends media in LINE; the webhook service keeps the event, processing makes the
    message and its attachment, and the download it queued runs."""
    result = shop.act(deliver=False, **action)
    body = body_bytes(result["body"])
    line_webhook_receive(
        account=shop.account, body=body, signature=sign(body, shop.account.line.channel_secret)
    )
    event = LineWebhookEvent.objects.get(webhook_event_id=result["webhook_event_ids"][0])
    line_event_process(event_pk=event.pk)
    attachment = Attachment.objects.get(message__external_id=result["message_ids"][0])
    if attachment.pk in downloads:
        line_attachment_fetch(attachment_pk=attachment.pk)
        attachment.refresh_from_db()
    return attachment


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- Names ------------------------------------------------------------------------------------------

NASTY_NAMES = [
    # (as sent, as stored)
    ("../../etc/passwd", "passwd"),
    ("a/b\\c", "c"),
    ("..\\..\\windows\\system32\\config.sys", "config.sys"),
    ("..", "generated.bin"),
    ("", "generated.bin"),
    ("   ", "generated.bin"),
    ("/", "generated.bin"),
    ("invoice..pdf", "invoice.pdf"),
    (".htaccess", "htaccess"),
    ("inv\x00oi\nce\r\t.pdf", "invoice.pdf"),
    ("report\u202efdp.exe", "reportfdp.exe"),  # a right-to-left override hiding the real extension
    ('a<b>c:d"e|f?g*h;.txt', "a_b_c_d_e_f_g_h_.txt"),
    ("請求書 2024年.pdf", "請求書 2024年.pdf"),
    ("Café résumé.docx", "Café résumé.docx"),
    ("x" * 300 + ".pdf", "x" * (FILE_NAME_MAX_BYTES - 4) + ".pdf"),
    ("請" * 100 + ".pdf", "請" * ((FILE_NAME_MAX_BYTES - 4) // 3) + ".pdf"),
]


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(("sent", "stored"), NASTY_NAMES)
def test_a_file_name_is_made_safe_keeping_what_can_be_kept(sent, stored):
    assert file_name_clean(sent, fallback="generated.bin") == stored


@pytest.mark.django_db(transaction=False)
@hypothesis_settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # the autouse ones are unused here
@given(name=st.text(max_size=400), fallback=st.sampled_from(["590000000000000001.jpg", "..", ""]))
def test_whatever_the_name_the_safe_one_is_a_single_short_plain_component(name, fallback):
    safe = file_name_clean(name, fallback=fallback)
    assert safe
    assert "/" not in safe and "\\" not in safe
    assert ".." not in safe
    assert not safe.startswith((".", " ")) and not safe.endswith((".", " "))
    assert not any(unicodedata.category(ch).startswith("C") for ch in safe)
    assert len(safe.encode()) <= FILE_NAME_MAX_BYTES
    assert file_name_clean(safe, fallback="other") == safe  # stable: cleaning twice changes nothing


def test_a_file_named_dot_dot_is_downloaded_under_a_generated_name_and_keeps_its_original(
    line_shop, downloads
):
    data = b"%PDF-1.7\n" + os.urandom(2000)

    attachment = customer_sends(
        line_shop,
        downloads,
        type="file",
        file_name="..",
        content_base64=b64(data),
        content_type="application/pdf",
    )

    assert attachment.state == AttachmentState.READY, attachment.error
    assert attachment.original_name == ".."
    assert attachment.file_name == attachment.message.external_id
    assert ".." not in attachment.file.name
    with attachment.file.open("rb") as stored:
        assert stored.read() == data


def test_a_file_named_with_a_path_is_stored_under_its_last_component_inside_its_folder(line_shop, downloads):
    data = b"not really a password file"

    attachment = customer_sends(
        line_shop,
        downloads,
        type="file",
        file_name="../../../etc/passwd",
        content_base64=b64(data),
        content_type="text/plain",
    )

    assert attachment.state == AttachmentState.READY, attachment.error
    assert (attachment.file_name, attachment.original_name) == ("passwd", "../../../etc/passwd")
    message = attachment.message
    assert attachment.file.name == f"attachments/{message.conversation_id}/{message.uuid}/passwd"
    assert attachment.file.path.startswith(str(attachment.file.storage.location))


# --- Size cap -----------------------------------------------------------------------------------------


def test_media_under_the_cap_is_stored_whole_with_its_type(line_shop, downloads, settings):
    settings.LINE_MEDIA_MAX_BYTES = 300_000
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(299_000)  # several chunks of the stream

    attachment = customer_sends(
        line_shop, downloads, type="image", content_base64=b64(photo), content_type="image/png"
    )

    assert attachment.state == AttachmentState.READY, attachment.error
    assert (attachment.size, attachment.content_type) == (len(photo), "image/png")
    assert attachment.file_name == f"{attachment.message.external_id}.png"
    with attachment.file.open("rb") as stored:
        assert stored.read() == photo


def test_media_exactly_at_the_cap_is_stored(line_shop, downloads, settings):
    settings.LINE_MEDIA_MAX_BYTES = 5_000
    clip = os.urandom(5_000)

    attachment = customer_sends(
        line_shop, downloads, type="video", content_base64=b64(clip), content_type="video/mp4"
    )

    assert attachment.state == AttachmentState.READY, attachment.error
    assert attachment.size == 5_000


def test_media_announced_over_the_cap_is_refused_without_reading_it(line_shop, downloads, settings, tmp_path):
    settings.LINE_MEDIA_MAX_BYTES = 10_000
    clip = os.urandom(10_001)

    attachment = customer_sends(
        line_shop, downloads, type="video", content_base64=b64(clip), content_type="video/mp4"
    )

    assert attachment.state == AttachmentState.TOO_LARGE
    assert attachment.error == "10001 bytes is over the 10000-byte limit"
    assert not attachment.file
    media = tmp_path / "media"
    assert not media.exists() or not any(path.is_file() for path in media.rglob("*"))


class ChunkedContent(BaseHTTPRequestHandler):
    """LINE's data host as a server that sends the content in chunks without announcing its length
    (Transfer-Encoding: chunked), counting what it managed to send before the reader hung up."""

    protocol_version = "HTTP/1.1"
    chunk = os.urandom(64 * 1024)
    total = 64 * 1024 * 1024
    sent = 0
    finished = False

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cls = type(self)
        try:
            while cls.sent < cls.total:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(self.chunk), self.chunk))
                cls.sent += len(self.chunk)
            self.wfile.write(b"0\r\n\r\n")
            cls.finished = True
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def chunked_data_host(settings) -> Iterator[type[ChunkedContent]]:
    handler = type("Handler", (ChunkedContent,), {"sent": 0, "finished": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_media_without_a_length_is_cut_off_once_over_the_cap_and_the_rest_is_never_read(
    line_shop, downloads, settings, chunked_data_host
):
    handler, data_host = chunked_data_host
    settings.LINE_MEDIA_MAX_BYTES = 1024 * 1024
    result = line_shop.act(
        deliver=False, type="video", content_base64=b64(os.urandom(100)), content_type="video/mp4"
    )
    body = body_bytes(result["body"])
    line_webhook_receive(
        account=line_shop.account, body=body, signature=sign(body, line_shop.account.line.channel_secret)
    )
    line_event_process(
        event_pk=LineWebhookEvent.objects.get(webhook_event_id=result["webhook_event_ids"][0]).pk
    )
    attachment = Attachment.objects.get(message__external_id=result["message_ids"][0])
    # The content comes from a data host that streams 64 MB without announcing it.
    settings.LINE_API_DATA_BASE_URL = data_host

    assert line_attachment_fetch(attachment_pk=attachment.pk) is None

    attachment.refresh_from_db()
    assert attachment.state == AttachmentState.TOO_LARGE
    assert attachment.error.startswith("Over the 1048576-byte limit: the download was stopped after ")
    read = int(attachment.error.rsplit(" ", 2)[-2])
    assert 1024 * 1024 < read <= 1024 * 1024 + 64 * 1024  # stopped at the first chunk over the cap
    assert not attachment.file
    assert not handler.finished  # the reader hung up long before the 64 MB were sent
    assert handler.sent < handler.total


# --- LINE's refusals, through the streamed request -------------------------------------------------------


def test_a_line_server_error_leaves_the_download_due_again_with_the_reason(line_shop, downloads, settings):
    settings.LINE_MEDIA_MAX_BYTES = 300_000
    line_shop.control.fault_add(r"^/v2/bot/message/\d+/content$", regex=True, status=500, times=1)

    attachment = customer_sends(line_shop, downloads, type="image", content_base64=b64(os.urandom(100)))

    assert attachment.state == AttachmentState.PENDING
    assert attachment.error.startswith("LINE answered 500")
    assert attachment.fetch_due_at > timezone.now()  # after the backoff
    assert attachment.fetch_attempts == 1
    # The next try (the task's retry, or the sweep) downloads it.
    assert line_attachment_fetch(attachment_pk=attachment.pk) is None
    attachment.refresh_from_db()
    assert attachment.state == AttachmentState.READY


def test_content_line_no_longer_has_fails_the_download_at_once(line_shop, downloads):
    line_shop.control.fault_add(
        r"^/v2/bot/message/\d+/content$", regex=True, status=404, body={"message": "Not found"}
    )

    attachment = customer_sends(line_shop, downloads, type="image", content_base64=b64(os.urandom(100)))

    assert attachment.state == AttachmentState.FAILED
    assert attachment.error == "LINE answered 404: Not found"
