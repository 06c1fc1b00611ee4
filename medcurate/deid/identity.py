"""The patient's own identifiers, looked for in every text value the engine would keep.

A value can pass the safe-vocabulary or code-string rule and still be an identifier (an MRN is a
perfectly valid code string; a surname can look like a vendor). So the identifiers of the patient
(names and their parts, patient IDs, other IDs, issuer, accession number, birth date in its usual
written forms) are taken from the source before anything changes, and a kept value that contains
one is cleaned as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medcurate.deid.clean import safe_terms

_WORD = re.compile(r"[A-Z]+|[0-9]+")
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
_NAME_TAGS = (0x00100010, 0x00101001, 0x00101005, 0x00101060)  # name, other, birth, mother's
_ID_TAGS = (0x00100020, 0x00100021, 0x00101000, 0x00080050, 0x00102000)
_OTHER_IDS_SEQUENCE = 0x00101002
_BIRTH_DATE = 0x00100030
MIN_COMPACT = 4


@dataclass(frozen=True)
class PatientIdentifiers:
    words: frozenset[str]
    """Name parts (3+ letters, not a safe vocabulary word), upper-case: matched as whole words."""
    compact: tuple[str, ...]
    """Whole identifiers with separators dropped, upper-case: matched as substrings."""

    def found_in(self, text: str) -> bool:
        """Does ``text`` hold one of the patient's identifiers (any case, any separators)?"""
        up = text.upper()
        if self.words and any(w in self.words for w in _WORD.findall(up)):
            return True
        squeezed = _NOT_ALNUM.sub("", up)
        return any(c in squeezed for c in self.compact)


NO_IDENTIFIERS = PatientIdentifiers(frozenset(), ())


def patient_identifiers(
    text_of: Callable[[int], str], other_ids: Iterable[str] = ()
) -> PatientIdentifiers:
    """Identifiers from ``text_of(tag)`` (the source's raw text) and the Other Patient IDs
    Sequence's IDs."""
    vocabulary = safe_terms()
    words: set[str] = set()
    compact: set[str] = set()
    for tag in _NAME_TAGS:
        name = text_of(tag).upper()
        for part in re.split(r"[\^=\s,.\-]+", name):
            if len(part) >= 3 and part not in vocabulary and part.isalpha():
                words.add(part)
        whole = _NOT_ALNUM.sub("", name)
        if len(whole) >= 6:
            compact.add(whole)
    for value in (*(text_of(t) for t in _ID_TAGS), *other_ids):
        for one in value.split("\\"):
            squeezed = _NOT_ALNUM.sub("", one.upper())
            if len(squeezed) >= MIN_COMPACT:
                compact.add(squeezed)
            for run in re.findall(r"[0-9]{6,}", squeezed):
                compact.add(run)
    birth = re.sub(r"\D", "", text_of(_BIRTH_DATE))
    if len(birth) == 8:
        y, m, d = birth[:4], birth[4:6], birth[6:]
        for form in (birth, d + m + y, m + d + y):
            compact.add(form)
    return PatientIdentifiers(frozenset(words), tuple(sorted(compact)))
