"""The customer's language (a LINE profile's code) as the agent reads it."""

from __future__ import annotations

from django import template
from django.utils import translation

register = template.Library()


@register.filter
def customer_language(code: str | None) -> str:
    """The name of a language code in the active language ("ja": "Japanese", or 日本語 for an agent
    who reads Japanese). LINE gives BCP 47 codes with a region or a script ("zh-TW", "pt-BR"): one that
    Django does not know is named by its language ("de-AT": German); an unknown language stays its
    code."""
    if not code:
        return ""
    for candidate in (code.lower(), code.lower().split("-")[0]):
        try:
            return str(translation.get_language_info(candidate)["name_translated"])
        except KeyError:
            continue
    return code
