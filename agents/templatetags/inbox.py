"""Template filters of the inbox pages."""

from __future__ import annotations

import datetime

from django import template
from django.utils import dateformat, timezone
from django.utils.formats import get_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def time_stamp(value: datetime.datetime | None) -> SafeString | str:
    """`<time>` of a moment in the agent's time zone: the short date and time, the full one as its
    title, ISO 8601 as its datetime. What `|date` thrice would give, converted and formatted once per
    format (a conversation page shows fifty of them)."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        dateformat.format(local, get_format("DATETIME_FORMAT")),
        dateformat.format(local, get_format("SHORT_DATETIME_FORMAT")),
    )
