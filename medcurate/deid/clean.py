"""Clean Descriptors: a descriptor survives only when every word of it is a known safe term.

An allow-list (not a block-list of names) because names, places and hospital jargon cannot be
enumerated; a description like "CT HEAD W/O CONTRAST" is kept, "CT HEAD DR SMITH" is removed.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

TERMS_FILE = "deid-safe-terms.txt"
_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?")
_SEPARATORS = " \t/\\-_.,:;()[]+&%#*='\"<>"
MAX_NUMBER_CHARS = 4
"""Short numbers ("5", "2.5", "120") are kept; longer digit runs may be identifiers."""


@cache
def safe_terms() -> frozenset[str]:
    text = (resources.files("medcurate") / "data" / TERMS_FILE).read_text(encoding="utf-8")
    words: set[str] = set()
    for line in text.splitlines():
        words.update(line.split("#", 1)[0].upper().split())
    return frozenset(words)


def word_tokens(text: str) -> list[str]:
    """Letter runs and numbers of a text (separators and punctuation dropped)."""
    return _TOKEN.findall(text)


def is_safe_token(token: str, terms: frozenset[str] | None = None) -> bool:
    terms = safe_terms() if terms is None else terms
    if token[0].isdigit():
        return len(token) <= MAX_NUMBER_CHARS
    return token.upper() in terms


def clean_text(value: str) -> str | None:
    """The value itself when every word is safe, else None (the caller removes the attribute)."""
    terms = safe_terms()
    if _TOKEN.sub("", value).strip(_SEPARATORS):
        return None  # characters that are neither safe words nor plain separators (e.g. non-ASCII)
    tokens = word_tokens(value)
    if all(is_safe_token(t, terms) for t in tokens):
        return value
    return None
