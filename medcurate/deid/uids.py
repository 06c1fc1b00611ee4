"""New UIDs in the 2.25 (UUID-derived) root: ``2.25.<int of the keyed hash of the original>``.

Deterministic from salt and original UID, so every occurrence (file meta, references, nested
sequences, other files of the same study) maps to the same new UID and references still resolve.
"""

from __future__ import annotations

from medcurate.deid.pseudonyms import Keyer

REGISTRY_ROOT = "1.2.840.10008."
"""UIDs registered by the standard (classes, transfer syntaxes, coding schemes): not identifying."""

KEEP_KEYWORD_SUFFIXES = ("ClassUID", "TransferSyntaxUID")
KEEP_KEYWORDS = frozenset(
    {
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
    }
)


class UIDMapper:
    """Maps original UIDs to new ones; caches per process (a study repeats its UIDs a lot)."""

    def __init__(self, keyer: Keyer) -> None:
        self._keyer = keyer
        self._cache: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = uid.strip().rstrip("\x00").strip()
        if not uid or uid.startswith(REGISTRY_ROOT):
            return uid
        new = self._cache.get(uid)
        if new is None:
            # 128 bits, as a UUID would be: at most 39 digits, so the UID stays within 64 chars.
            value = int.from_bytes(self._keyer.digest("uid", uid)[:16], "big")
            new = f"2.25.{value}"
            self._cache[uid] = new
        return new


def keeps_uid(keyword: str) -> bool:
    """True for UI attributes that name a class or syntax, not an instance (kept as they are)."""
    return keyword in KEEP_KEYWORDS or keyword.endswith(KEEP_KEYWORD_SUFFIXES)
