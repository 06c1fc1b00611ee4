"""Keyed pseudonyms: HMAC-SHA256 of the original identifiers under MEDCURATE_DEID_SALT.

Keyed (not a plain hash) so nobody without the salt can confirm a guessed patient ID; stable so the
same patient gets the same pseudonym in every batch, process and run.
"""

from __future__ import annotations

import hashlib
import hmac


class Keyer:
    """All keyed derivations from one salt. The salt is held, never printed (see ``__repr__``)."""

    __slots__ = ("_key",)

    def __init__(self, salt: bytes) -> None:
        if not salt:
            raise ValueError("empty de-identification salt")
        self._key = salt

    def __repr__(self) -> str:
        return "Keyer(<salt hidden>)"

    def digest(self, purpose: str, *parts: str) -> bytes:
        """HMAC-SHA256 over a purpose label and the parts (NUL-separated, so parts cannot blur)."""
        msg = "\x00".join((purpose, *parts)).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def hexcode(self, purpose: str, *parts: str, n: int = 12) -> str:
        return self.digest(purpose, *parts).hex()[:n]


def patient_key(
    patient_id: str, issuer: str, name: str, birth_date: str, study_uid: str
) -> tuple[str, ...]:
    """The identifiers a patient pseudonym derives from, best first.

    Patient ID with its issuer when present; else name with birth date; else the study (each
    anonymous study is then its own patient, which is the safe failure).
    """
    if patient_id.strip():
        return ("id", issuer.strip(), patient_id.strip())
    if name.strip():
        return ("name", name.strip().upper(), birth_date.strip())
    return ("study", study_uid.strip())


def patient_pseudonym(keyer: Keyer, key: tuple[str, ...]) -> str:
    """'P-' and 12 hex digits of the keyed hash: used as PatientID, PatientName and path segment."""
    return "P-" + keyer.hexcode("patient", *key, n=12)


def site_code(keyer: Keyer, institution: str) -> str:
    """Keyed code of the institution name: later stages stratify by site without knowing it."""
    name = " ".join(institution.split()).upper()
    if not name:
        return "S-unknown"
    return "S-" + keyer.hexcode("site", name, n=6)


def dummy_id(keyer: Keyer, purpose: str, value: str) -> str:
    """A keyed dummy for other identifiers (accession, study ID): consistent, 16 characters max."""
    return "X" + keyer.hexcode(purpose, value.strip(), n=12).upper()
