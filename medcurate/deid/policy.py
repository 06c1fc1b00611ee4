"""The de-identification policy: which PS3.15 options we claim, and how we say so in every output.

Basic Application Level Confidentiality Profile with Retain Patient Characteristics (sex, age, size
and weight are needed for fairness and stratification), Retain Longitudinal Temporal Information
with Modified Dates, Clean Descriptors and Retain Safe Private. Device identity, institution
identity and UIDs are not retained.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundMultiFrameImageStorage

# CID 7050 (De-identification Method): (code value, code meaning).
CODE_BASIC = ("113100", "Basic Application Confidentiality Profile")
CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CODE_CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
CODE_PATIENT_CHARACTERISTICS = ("113108", "Retain Patient Characteristics Option")
CODE_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

BURNED_IN_ALLOW_ENV = "MEDCURATE_DEID_BURNED_IN_ALLOW"


@dataclass(frozen=True)
class Options:
    """The PS3.15 options; defaults are the project's policy (see module docstring)."""

    retain_patient_characteristics: bool = True
    retain_longitudinal_modified_dates: bool = True
    clean_descriptors: bool = True
    retain_safe_private: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False

    def codes(self) -> list[tuple[str, str]]:
        """DeidentificationMethodCodeSequence: 113100 plus one code per option applied."""
        out = [CODE_BASIC]
        if self.retain_longitudinal_modified_dates:
            out.append(CODE_MODIFIED_DATES)
        if self.clean_descriptors:
            out.append(CODE_CLEAN_DESCRIPTORS)
        if self.retain_patient_characteristics:
            out.append(CODE_PATIENT_CHARACTERISTICS)
        if self.retain_safe_private:
            out.append(CODE_SAFE_PRIVATE)
        return out

    def method_values(self) -> list[str]:
        """DeidentificationMethod (LO, 64 chars per value): one value per code, in code order."""
        return [meaning for _, meaning in self.codes()]

    def profile_text(self) -> str:
        """One line naming the profile and options, for summaries, manifests and the README."""
        return "PS3.15 " + "; ".join(self.method_values())


DEFAULT_OPTIONS = Options()

# SOP classes whose pixels commonly carry burned-in text or recognisable features.
# Prefixes: a registered class UID names a family only where it is one (pydicom.uid constants).
RISKY_SOP_PREFIXES = (
    str(SecondaryCaptureImageStorage),  # the family (7.1 ... 7.4: screenshots, scanned documents)
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound (6.1, 6.2)
    str(UltrasoundMultiFrameImageStorage),  # ultrasound multi-frame
    "1.2.840.10008.5.1.4.1.1.77.",  # visible light (endoscopy, photographs, slides)
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents (PDF, CDA)
)
RISKY_MODALITIES = frozenset({"US", "IVUS", "XC", "ES", "OT", "DOC", "GM"})


@dataclass(frozen=True)
class Policy:
    """Options plus the operational choices: what to quarantine for burned-in text."""

    options: Options = DEFAULT_OPTIONS
    burned_in_allow: frozenset[str] = field(default_factory=frozenset)
    """Modalities or SOP class UIDs let through despite burned-in risk (someone reviewed them)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Policy:
        """The default policy, with ``MEDCURATE_DEID_BURNED_IN_ALLOW`` (comma-separated)."""
        env = dict(os.environ) if env is None else env
        raw = env.get(BURNED_IN_ALLOW_ENV, "")
        allow = frozenset(x.strip() for x in raw.split(",") if x.strip())
        return cls(burned_in_allow=allow)


@cache
def safe_private_allow_list() -> tuple[frozenset[tuple[str, int]], frozenset[str]]:
    """(creator lower-cased, element byte) pairs and the VRs a retained private value may have."""
    text = (resources.files("medcurate") / "data" / "deid-safe-private.json").read_text("utf-8")
    data = json.loads(text)
    pairs = frozenset(
        (e["creator"].strip().lower(), int(e["element"], 16)) for e in data["elements"]
    )
    return pairs, frozenset(data["vrs"])
