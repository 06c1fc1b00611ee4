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
CODE_CLEAN_PIXEL = ("113101", "Clean Pixel Data Option")
"""Added per image, only to those whose pixels the OCR step checked and found (or made) clean."""

BURNED_IN_ALLOW_ENV = "MEDCURATE_DEID_BURNED_IN_ALLOW"
PIXEL_MASKS_ENV = "MEDCURATE_DEID_PIXEL_MASKS"


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
# Images whose pixels are searched for burned-in text whatever their header says: projection
# radiography, ultrasound, secondary captures and photographs (not cross-sectional CT/MR/PT).
OCR_MODALITIES = frozenset(
    {
        "CR",
        "DX",
        "MG",
        "IO",
        "PX",
        "XA",
        "RF",
        "US",
        "IVUS",
        "SC",
        "OT",
        "XC",
        "ES",
        "GM",
        "OP",
        "SM",
    }
)


@dataclass(frozen=True)
class PixelMask:
    """A known vendor text region (CTP pixel-script style), blanked before OCR: ``box`` is
    (x0, y0, x1, y1) as fractions of columns and rows; empty ``manufacturer`` and zero ``rows``
    or ``columns`` match any."""

    modality: str
    box: tuple[float, float, float, float]
    manufacturer: str = ""
    rows: int = 0
    columns: int = 0

    def applies(self, modality: str, manufacturer: str, rows: int, columns: int) -> bool:
        return (
            self.modality.upper() == modality
            and self.manufacturer.upper() in manufacturer
            and self.rows in (0, rows)
            and self.columns in (0, columns)
        )

    @classmethod
    def parse(cls, text: str) -> PixelMask:
        """``MODALITY[@MANUFACTURER]:x0,y0,x1,y1``, e.g. ``US:0,0,1,0.08`` (a header band)."""
        head, _, box = text.partition(":")
        modality, _, maker = head.partition("@")
        values = tuple(float(v) for v in box.split(","))
        if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError("a pixel mask needs four fractions x0,y0,x1,y1 in [0, 1]")
        x0, y0, x1, y1 = values
        return cls(modality.strip().upper(), (x0, y0, x1, y1), maker.strip())


@dataclass(frozen=True)
class Policy:
    """Options plus the operational choices: what to quarantine for burned-in text."""

    options: Options = DEFAULT_OPTIONS
    burned_in_allow: frozenset[str] = field(default_factory=frozenset)
    """Modalities or SOP class UIDs let through despite burned-in risk (someone reviewed them)."""
    ocr_modalities: frozenset[str] = OCR_MODALITIES
    """Modalities whose pixels are searched for text whatever the header declares."""
    pixel_masks: tuple[PixelMask, ...] = ()
    """Known vendor text regions, blanked before OCR (none by default: they change every image)."""
    ocr_min_confidence: float = 50.0
    """Tesseract word confidence (0-100) from which a word of four letters or digits is text
    (10 more for three, 30 more for two: noise read as 'ae' scores up to the sixties; a single
    character counts only beside other text)"""
    ocr_weak_confidence: float = 20.0
    """From here a word is text too when it stands on one line with text (see ``burnedin``)."""
    ocr_min_text_height: int = 8
    """Shorter boxes (in the scaled OCR image) are noise read as letters, not readable text."""
    ocr_rounds: int = 3
    """Cleaning rounds per frame; the OCR pass after the last must find nothing."""
    ocr_max_side: int = 1600
    ocr_min_side: int = 640
    """OCR works on a copy scaled so its long side lies within these bounds (pixels)."""
    max_cine_frames: int = 64
    max_cine_pixels: int = 64 * 1024 * 1024
    """Longer or larger multi-frame images are quarantined (OCR of every frame costs too much)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Policy:
        """The default policy, with ``MEDCURATE_DEID_BURNED_IN_ALLOW`` (comma-separated) and
        ``MEDCURATE_DEID_PIXEL_MASKS`` (``;``-separated, see :meth:`PixelMask.parse`)."""
        env = dict(os.environ) if env is None else env
        raw = env.get(BURNED_IN_ALLOW_ENV, "")
        allow = frozenset(x.strip() for x in raw.split(",") if x.strip())
        masks = tuple(
            PixelMask.parse(m) for m in env.get(PIXEL_MASKS_ENV, "").split(";") if m.strip()
        )
        return cls(burned_in_allow=allow, pixel_masks=masks)


@cache
def safe_private_allow_list() -> tuple[frozenset[tuple[str, int]], frozenset[str]]:
    """(creator lower-cased, element byte) pairs and the VRs a retained private value may have."""
    text = (resources.files("medcurate") / "data" / "deid-safe-private.json").read_text("utf-8")
    data = json.loads(text)
    pairs = frozenset(
        (e["creator"].strip().lower(), int(e["element"], 16)) for e in data["elements"]
    )
    return pairs, frozenset(data["vrs"])
