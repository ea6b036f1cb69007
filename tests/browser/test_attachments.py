"""Customer files in the admin, the whole way in a real browser: a customer sends an image, a PDF and an
HTML file through the LINE stand-in; the stand-in signs the events and POSTs them to the webhook on
the live server; a real Celery worker processes them and downloads the files from the stand-in's data
host; an administrator opens the conversation in the admin in headless Chromium, sees the image's
thumbnail, downloads the PDF through the attachment view, and the HTML file only ever downloads."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from omnichannel.models import Attachment, AttachmentState, Conversation
from tests.conftest import wait_for
from tests.factories import AdministratorFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def png(width: int, height: int) -> bytes:
    """A real PNG (an orange-to-blue gradient) that a browser decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((255 - x * 255 // width, 120, x * 255 // width)) for x in range(width))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PHOTO = png(120, 80)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
HTML = (
    b"<html><head><title>owned</title></head><body><script>document.title='ran'</script>offer</body></html>"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def shop(line_shop_online, celery_worker):
    """The worker (another process) stores into the MEDIA_ROOT of the settings it reads, which the
    live server (this process) serves from: the default one, not overridden here."""
    return line_shop_online


def customer_sends(shop, **action) -> str:
    result = shop.act(**action)
    assert result["delivery"]["status"] == 200, result["delivery"]
    return result["message_ids"][0]


def downloaded(line_message_id: str) -> Attachment:
    return wait_for(
        lambda: Attachment.objects.filter(
            message__external_id=line_message_id, state=AttachmentState.READY
        ).first(),
        timeout=30,
        message=f"the worker to download the content of LINE message {line_message_id}",
    )


def test_an_administrator_sees_the_thumbnail_downloads_the_pdf_and_an_html_file_never_renders(
    shop, browser, context, page, login_as, live_server, screenshot
):
    photo_id = customer_sends(shop, type="image", content_base64=b64(PHOTO), content_type="image/png")
    pdf_id = customer_sends(
        shop,
        type="file",
        file_name="invoice-1042.pdf",
        content_base64=b64(PDF),
        content_type="application/pdf",
    )
    html_id = customer_sends(
        shop, type="file", file_name="offer.html", content_base64=b64(HTML), content_type="text/html"
    )
    photo, pdf, html = downloaded(photo_id), downloaded(pdf_id), downloaded(html_id)
    conversation = Conversation.objects.get(messages__external_id=photo_id)
    assert {pdf.message.conversation_id, html.message.conversation_id} == {conversation.pk}

    login_as(AdministratorFactory())
    page.goto(reverse("admin:omnichannel_conversation_change", args=[conversation.pk]))

    thumbnail = page.locator(f'img.attachment-thumbnail[src="/attachments/{photo.pk}/"]')
    expect(thumbnail).to_be_visible()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    assert thumbnail.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [120, 80]
    screenshot(page, "admin-conversation-attachments")

    with page.expect_download() as pdf_download:
        page.get_by_role("link", name="Download invoice-1042.pdf").click()
    assert pdf_download.value.suggested_filename == "invoice-1042.pdf"
    assert pdf_download.value.url == f"{live_server.url}/attachments/{pdf.pk}/?download=1"
    with open(pdf_download.value.path(), "rb") as saved:
        assert saved.read() == PDF

    # The HTML file, opened by its plain URL (no download attribute, no ?download): the server makes
    # it a download; the browser never renders it, so its script never runs.
    admin_url = page.url
    with page.expect_download() as html_download:
        try:
            page.goto(f"/attachments/{html.pk}/")
        except PlaywrightError as error:  # Chromium reports a navigation that became a download so
            assert "net::ERR_ABORTED" in str(error) or "Download is starting" in str(error)
    assert html_download.value.suggested_filename == "offer.html"
    with open(html_download.value.path(), "rb") as saved:
        assert saved.read() == HTML
    assert page.url == admin_url
    assert page.title() != "ran" and "owned" not in page.title()
    served = page.request.get(f"/attachments/{html.pk}/")
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == 'attachment; filename="offer.html"'
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("sandbox;")

    # A signed-in user whose role does not let them see conversations gets 404 for the same files.
    outsider = browser.new_context(base_url=live_server.url)
    try:
        client = Client()
        client.force_login(UserFactory())
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
        outsider.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
        for attachment in (photo, pdf, html):
            assert outsider.request.get(f"/attachments/{attachment.pk}/").status == 404
        # ...and a visitor who is not signed in is sent to the sign-in page.
        anonymous = browser.new_context(base_url=live_server.url)
        try:
            anonymous_page = anonymous.new_page()
            anonymous_page.goto(f"/attachments/{photo.pk}/")
            expect(anonymous_page).to_have_url(
                f"{live_server.url}/accounts/login/?next=/attachments/{photo.pk}/"
            )
        finally:
            anonymous.close()
    finally:
        outsider.close()
