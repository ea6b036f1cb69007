"""Signed, expiring links to attachments, for customers who receive a document or a media file."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .models import Attachment

SALT = "omnichannel.attachment-link"


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
