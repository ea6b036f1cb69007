"""The customer's phone: a self-contained page (no external assets, no network beyond the stand-in)
that plays a LINE user chatting with the business through the control API."""

from __future__ import annotations

import functools
from pathlib import Path

PAGE_PATH = Path(__file__).resolve().parent / "static" / "phone.html"


@functools.cache
def page() -> bytes:
    """The phone page's HTML, read once."""
    return PAGE_PATH.read_bytes()
