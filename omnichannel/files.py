"""Customer and agent files: safe names, the types that may show inline, the one response that serves a
stored file (to signed-in users and behind signed links), and the signed, expiring links sent to
customers."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.http import FileResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from .models import Attachment

if TYPE_CHECKING:
    from django.http import HttpResponseBase

SALT = "omnichannel.attachment-link"

# --- Names ----------------------------------------------------------------------------------------

# Filesystems allow 255 bytes per name; the rest of the storage path is ours. In UTF-8 bytes, so that
# a Japanese name (3 bytes a character) is capped as surely as an English one.
FILE_NAME_MAX_BYTES = 150
ORIGINAL_NAME_MAX_CHARS = 1000
# Characters that Windows, shells or a Content-Disposition header treat specially.
_UNSAFE_CHARACTERS = re.compile(r'[<>:"|?*;\x00-\x1f\x7f]')
_DOTS = re.compile(r"\.{2,}")


def file_name_clean(name: str, *, fallback: str) -> str:
    """A name safe to store and to offer for download: the last path component of `name` only (no
    `/` or `\\`), no control or format characters (NUL, newlines, right-to-left overrides that hide
    an extension), no `..`, no leading or trailing dots or spaces, at most FILE_NAME_MAX_BYTES in
    UTF-8 (the extension kept). Letters of any script are kept. When nothing usable is left,
    `fallback` (cleaned the same way; it should be a generated name such as the message ID)."""
    cleaned = _clean(name)
    return cleaned or _clean(fallback) or "file"


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Cc: control characters; Cf: format characters (bidi overrides, zero-width); Cs, Co, Cn: surrogates,
    # private use and unassigned code points.
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = _UNSAFE_CHARACTERS.sub("_", name)
    name = _DOTS.sub(".", name)
    name = " ".join(name.split())  # any run of whitespace is one space
    name = name.strip(" .")
    if len(name.encode()) > FILE_NAME_MAX_BYTES:
        stem, extension = posixpath.splitext(name)
        extension = extension if len(extension.encode()) <= 16 else ""
        budget = FILE_NAME_MAX_BYTES - len(extension.encode())
        stem = stem.encode()[:budget].decode(errors="ignore").rstrip(" .")
        name = f"{stem}{extension}" if stem else ""
    return name


def original_name_keep(name: str) -> str:
    """The name as the sender gave it, for the record: only what a database refuses (NUL) removed."""
    return (name or "").replace("\x00", "")[:ORIGINAL_NAME_MAX_CHARS]


# --- Serving --------------------------------------------------------------------------------------

# Types a browser shows as media, never runs as a page of ours: raster images, audio, video, PDF.
# Everything else (HTML, SVG, XML, scripts, unknown) is served as a download of octet-stream.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
INLINE_DOCUMENT_TYPES = frozenset({"application/pdf"})
INLINE_TYPE_PREFIXES = ("audio/", "video/")
# The file is the only thing on its page: no scripts, no plugins, no forms, nothing fetched from
# elsewhere; an HTML or SVG file that slipped through would render inert.
ATTACHMENT_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


def content_type_base(content_type: str) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def is_inline_type(content_type: str) -> bool:
    """True for the types served inline (shown in the browser); the others are downloads."""
    base = content_type_base(content_type)
    return (
        base in INLINE_IMAGE_TYPES
        or base in INLINE_DOCUMENT_TYPES
        or (base.startswith(INLINE_TYPE_PREFIXES) and "+" not in base)
    )


def is_thumbnail_type(content_type: str) -> bool:
    return content_type_base(content_type) in INLINE_IMAGE_TYPES


def attachment_file_response(*, attachment: Attachment, download: bool = False) -> HttpResponseBase:
    """The stored file of an attachment, streamed from storage in chunks (never read whole), with
    the headers that keep a customer's file from acting as a page of ours: inline only for the types
    above (unless `download`), `Content-Disposition: attachment` and octet-stream otherwise, nosniff,
    a sandboxing Content-Security-Policy, not cached by shared caches.

    The one place that serves stored files, for the signed-in view and the signed links alike. With
    the filesystem storage of today the app streams the file. When a real object store is configured
    later, this is the place to change: answer with a redirect to `attachment.file.storage.url(name)`
    (a short-lived URL from the store, carrying these same headers as response overrides) instead of
    streaming the bytes through the app; both views call this function and need no change."""
    inline = not download and is_inline_type(attachment.content_type)
    response = FileResponse(
        attachment.file.open("rb"),
        as_attachment=not inline,
        filename=attachment.file_name or posixpath.basename(attachment.file.name),
        content_type=content_type_base(attachment.content_type) if inline else "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = ATTACHMENT_CSP
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    add_never_cache_headers(response)
    return response


# --- Links ----------------------------------------------------------------------------------------


def attachment_view_url(*, attachment: Attachment | int, download: bool = False) -> str:
    """The path of the signed-in attachment view (relative; the caller makes it absolute if needed)."""
    pk = attachment.pk if isinstance(attachment, Attachment) else attachment
    url = reverse("attachment-open", args=[pk])
    return f"{url}?download=1" if download else url


def attachment_signed_url(*, attachment: Attachment) -> str:
    """An absolute URL that serves the attachment to anyone holding it, for
    DOCUMENT_LINK_MAX_AGE_SECONDS."""
    token = signing.dumps({"a": attachment.pk, "m": str(attachment.message.uuid)}, salt=SALT, compress=True)
    return f"{settings.PUBLIC_BASE_URL}{reverse('attachment-download', args=[token])}"


def attachment_from_token(token: str) -> Attachment:
    """The attachment a signed token points to. Raises signing.BadSignature (or its subclass
    SignatureExpired) for a forged or expired link, Attachment.DoesNotExist once it is gone."""
    data = signing.loads(token, salt=SALT, max_age=settings.DOCUMENT_LINK_MAX_AGE_SECONDS)
    return Attachment.objects.select_related("message").get(pk=data["a"], message__uuid=data["m"])
