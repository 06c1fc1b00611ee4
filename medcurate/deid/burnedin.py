"""Burned-in text: found by OCR in the pixels, blacked out, checked again; else quarantined.

Header flags are unreliable both ways (a DX with a name in its pixels rarely says
BurnedInAnnotation=YES), so every projection, ultrasound, secondary-capture and photo-like image is
looked at, whatever it declares (``ocr_reason``). Per frame: the policy's vendor masks (fixed
regions such as an ultrasound header band, as in CTP's pixel scripts) are blanked first; the frame
is windowed to 8 bits and scaled to a size Tesseract reads well, Tesseract (``--psm 11``: sparse
text) returns word boxes, and every box with a letter or digit at or above the confidence
threshold is blanked, padded, in the original pixel data at full bit depth. A second pass on the
changed frames must find nothing; only then is the image called clean (BurnedInAnnotation NO, the
Clean Pixel Data code 113101, and a new SOP Instance UID when pixels changed). What cannot be
cleaned (a long or colour video, undecodable or unwritable pixel data, text left after the
second pass, no OCR) is refused with a reason code. Boxes, never words, are recorded.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from medcurate.deid.engine import (
    Deidentifier,
    _encoded_sequence,
    _encoding,
    _new_raw,
    _transfer_syntax,
    burned_in_reason,
    raw_text,
)
from medcurate.deid.policy import CODE_CLEAN_PIXEL, PixelMask, Policy

# reason codes of what cannot be cleaned (in the quarantine message of a BURNED_IN refusal)
OCR_UNAVAILABLE = "OCR_UNAVAILABLE"
NO_PIXELS = "NO_PIXELS"
VISUAL_FEATURES = "VISUAL_FEATURES"
COLOUR_VIDEO = "COLOUR_VIDEO"
CINE_TOO_LARGE = "CINE_TOO_LARGE"
UNDECODABLE = "UNDECODABLE"
UNWRITABLE = "UNWRITABLE"
TEXT_REMAINS = "TEXT_REMAINS"

_VIDEO_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # video endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # video microscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # video photographic
)
_VIDEO_SYNTAX_PREFIX = "1.2.840.10008.1.2.4.10"  # MPEG-2, MPEG-4, H.264 / HEVC (.100 ... .108)
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_WRITABLE = (np.uint8, np.uint16, np.int8, np.int16)


@dataclass
class PixelResult:
    """What the pixel step did to one image; boxes are (frame, x, y, width, height)."""

    checked: bool = False
    reason: str | None = None  # a code above: the image cannot be cleaned
    message: str = ""
    boxes: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    masked: int = 0  # boxes from the policy's vendor masks (among ``boxes``)
    frames: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.boxes)


@cache
def ocr_available() -> bool:
    """Tesseract and pytesseract are both there (checked once per process)."""
    if shutil.which("tesseract") is None:
        return False
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except Exception:
        return False
    return True


def ocr_reason(ds: Dataset, policy: Policy) -> str | None:
    """Why this image's pixels are searched for text, or None (cross-sectional, or allowed)."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop_class in policy.burned_in_allow or modality in policy.burned_in_allow:
        return None
    header = burned_in_reason(ds, policy)
    if header is not None:
        return header
    if modality in policy.ocr_modalities:
        return f"modality {modality} is checked for burned-in text"
    return None


def clean_pixels(ds: Dataset, policy: Policy) -> PixelResult:
    """Search and clean ``ds``'s pixel data in place (before de-identification of its header)."""
    why = ocr_reason(ds, policy)
    if why is None:
        return PixelResult()
    out = PixelResult(checked=True)
    if str(ds.get("RecognizableVisualFeatures", "") or "").upper() == "YES":
        return _refuse(out, VISUAL_FEATURES, "recognisable visual features (OCR cannot clean)")
    if "PixelData" not in ds:
        if burned_in_reason(ds, policy) is None:
            return PixelResult()  # nothing to look at and no warning: e.g. a presentation state
        return _refuse(out, NO_PIXELS, "no pixel data to check (e.g. an encapsulated document)")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    frames = _int(ds.get("NumberOfFrames"), 1)
    rows, cols = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    if syntax.startswith(_VIDEO_SYNTAX_PREFIX) or sop_class.startswith(_VIDEO_SOP_PREFIXES):
        return _refuse(out, COLOUR_VIDEO, "video pixel data")
    if frames > policy.max_cine_frames or frames * rows * cols * samples > policy.max_cine_pixels:
        return _refuse(out, CINE_TOO_LARGE, f"{frames} frames of {rows}x{cols}x{samples}")
    if syntax == _BIG_ENDIAN:
        return _refuse(out, UNWRITABLE, "big-endian pixel data")
    if not ocr_available():
        return _refuse(out, OCR_UNAVAILABLE, "tesseract is not installed")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        return _refuse(out, UNDECODABLE, f"pixel data cannot be decoded ({type(exc).__name__})")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if arr.dtype.type not in _WRITABLE or photometric not in _PHOTOMETRIC:
        return _refuse(out, UNWRITABLE, f"pixel data of {arr.dtype} {photometric or '?'}")
    stack = arr.reshape((frames, rows, cols, samples)).copy()
    out.frames = frames
    colour = samples > 1
    # colour decoded from a compressed YBR stream comes back as RGB (pydicom's default)
    written_photometric = "RGB" if colour else photometric
    blank = _blank_value(stack, photometric)
    seen: dict[bytes, list[tuple[int, int, int, int]]] = {}
    for f in range(frames):
        frame = stack[f]
        boxes = [(x, y, w, h) for (x, y, w, h) in _mask_boxes(ds, policy.pixel_masks, rows, cols)]
        out.masked += len(boxes)
        for x, y, w, h in boxes:
            frame[y : y + h, x : x + w] = blank
        digest = hashlib.sha256(frame.tobytes()).digest()
        found = seen.get(digest)
        if found is None:
            found = _clean_frame(frame, written_photometric, blank, policy)
            if found is None:
                return _refuse(out, TEXT_REMAINS, "text still found after cleaning")
            seen[digest] = found
        else:
            for x, y, w, h in found:
                frame[y : y + h, x : x + w] = blank
        out.boxes.extend((f, *b) for b in [*boxes, *found])
    if out.changed:
        try:
            bits = _int(ds.get("BitsStored"), stack.dtype.itemsize * 8)
            data = stack if colour else stack[..., 0]
            data = data[0] if frames == 1 else data
            ds.set_pixel_data(data, written_photometric, bits, generate_instance_uid=False)
        except Exception as exc:
            return _refuse(out, UNWRITABLE, f"pixel data cannot be written ({type(exc).__name__})")
    return out


def mark_clean(ds: Dataset, result: PixelResult, engine: Deidentifier) -> str | None:
    """After de-identification of an image the OCR found clean (or cleaned): BurnedInAnnotation
    NO, the Clean Pixel Data code beside the profile's, and, when pixels changed, a new SOP
    Instance UID (keyed from the de-identified one, so deterministic per salt). Returns it."""
    if not result.checked or result.reason is not None:
        return None
    ds.BurnedInAnnotation = "NO"
    opts = engine.policy.options
    codes = [*opts.codes(), CODE_CLEAN_PIXEL]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    encoding = _encoding(_transfer_syntax(ds))
    seq = DataElement(0x00120064, "SQ", Sequence(items))
    ds._dict[BaseTag(0x00120063)] = _new_raw(0x00120063, "LO", [m for _, m in codes])
    ds._dict[BaseTag(0x00120064)] = (
        _encoded_sequence(seq, encoding) if encoding is not None else seq
    )
    if not result.changed:
        return None
    new_uid = engine.uids(raw_text(ds, 0x00080018) + "/pixels-cleaned")
    ds.SOPInstanceUID = new_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(new_uid)
    return new_uid


# -- internals -------------------------------------------------------------------------------
_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
)


def _refuse(out: PixelResult, code: str, what: str) -> PixelResult:
    out.reason, out.message = code, f"{code}: {what}"
    out.boxes = []
    return out


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _blank_value(stack: np.ndarray, photometric: str) -> np.ndarray:
    """Black as displayed: the lowest value (MONOCHROME2, RGB), the highest for MONOCHROME1."""
    if stack.shape[-1] > 1:
        return np.zeros(stack.shape[-1], stack.dtype)
    lo, hi = stack.min(), stack.max()
    return np.array([hi if photometric == "MONOCHROME1" else lo], stack.dtype)


def _mask_boxes(
    ds: Dataset, masks: tuple[PixelMask, ...], rows: int, cols: int
) -> list[tuple[int, int, int, int]]:
    out = []
    modality = str(ds.get("Modality", "") or "").upper()
    maker = str(ds.get("Manufacturer", "") or "").upper()
    for m in masks:
        if m.applies(modality, maker, rows, cols):
            x0, y0, x1, y1 = m.box
            x, y = math.floor(x0 * cols), math.floor(y0 * rows)
            w, h = math.ceil(x1 * cols) - x, math.ceil(y1 * rows) - y
            if w > 0 and h > 0:
                out.append((x, y, w, h))
    return out


def to_8bit(frame: np.ndarray, photometric: str) -> np.ndarray:
    """A grey 8-bit view for OCR: luminance of colour, min-max window of grey, MONOCHROME1
    inverted (text polarity does not matter to Tesseract, but a consistent view helps)."""
    if frame.shape[-1] == 3:
        if photometric.startswith("YBR"):
            grey = frame[..., 0].astype(np.float32)
        else:
            grey = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(grey, 0, 255).astype(np.uint8)
    grey = frame[..., 0].astype(np.float32)
    lo, hi = float(grey.min()), float(grey.max())
    scaled = (grey - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(grey)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled.astype(np.uint8)


def ocr_boxes(grey: np.ndarray, policy: Policy) -> list[tuple[int, int, int, int]]:
    """Word boxes (x, y, w, h, in ``grey``'s pixels) holding a letter or digit at or above the
    policy's confidence. The image is scaled so its long side lies within the policy's bounds:
    large projections are read faster smaller, small images are read better larger."""
    import pytesseract

    h, w = grey.shape
    long_side = max(h, w)
    scale = 1.0
    if long_side > policy.ocr_max_side:
        scale = policy.ocr_max_side / long_side
    elif long_side < policy.ocr_min_side:
        scale = policy.ocr_min_side / long_side
    img = Image.fromarray(grey)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    # handed to tesseract as BMP: pytesseract's default PNG costs a zlib pass per frame, about a
    # sixth of the OCR time (measured over pydicom's and deid-data's files)
    img.format = "BMP"
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread: 3x faster than oversubscribed
    data = pytesseract.image_to_data(
        img, config="--psm 11 --oem 1", output_type=pytesseract.Output.DICT
    )
    words = []
    for text, conf, left, top, bw, bh in zip(
        data["text"],
        data["conf"],
        data["left"],
        data["top"],
        data["width"],
        data["height"],
        strict=True,
    ):
        if (
            any(c.isalnum() for c in str(text))
            and float(conf) >= policy.ocr_weak_confidence
            and int(bh) >= policy.ocr_min_text_height  # a few pixels of speckle read as 'a'
        ):
            box = (
                int(left / scale),
                int(top / scale),
                math.ceil(bw / scale),
                math.ceil(bh / scale),
            )
            alnum = sum(c.isalnum() for c in str(text))
            extra = 0.0 if alnum >= 4 else (10.0 if alnum == 3 else 30.0)
            strong = alnum > 1 and float(conf) >= policy.ocr_min_confidence + extra
            words.append((box, strong))
    return _text_lines(words)


def _aligned(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: float) -> bool:
    """On one text line (half the smaller height overlaps) and at most ``gap`` heights apart."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    overlap = min(ay + ah, by + bh) - max(ay, by)
    if overlap < 0.5 * min(ah, bh):
        return False
    distance = max(bx - (ax + aw), ax - (bx + bw), 0)
    return distance <= gap * max(ah, bh)


def _text_lines(
    words: list[tuple[tuple[int, int, int, int], bool]],
) -> list[tuple[int, int, int, int]]:
    """Confident words, plus weak ones on the same line as text already taken (a low-confidence
    name beside a confident date is still text; speckle read as 'ee' alone is not); then words of
    one line up to eight heights apart joined into one box, so what lies between them (spaces,
    commas, a word read only in part) goes too."""
    taken = [b for b, strong in words if strong]
    weak = [b for b, strong in words if not strong]
    grew = True
    while grew and weak:
        grew = False
        for b in list(weak):
            if any(_aligned(b, t, 5.0) for t in taken):
                taken.append(b)
                weak.remove(b)
                grew = True
    return _blocks(taken)


def _blocks(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Boxes joined into text blocks: words of one line up to eight word heights apart, and
    overlapping lines less than a word height above one another, become one rectangle (a name,
    MRN and birth date stacked in a corner are blanked as one block, so a word read only in part
    goes too)."""
    blocks = [(x, y, x + w, y + h, h) for x, y, w, h in boxes]
    joined = True
    while joined:
        joined = False
        for i in range(len(blocks)):
            for j in range(i + 1, len(blocks)):
                a, b = blocks[i], blocks[j]
                lh = max(a[4], b[4])
                dx = max(b[0] - a[2], a[0] - b[2], 0)
                dy = max(b[1] - a[3], a[1] - b[3], 0)
                if (dy == 0 and dx <= 8 * lh) or (dx == 0 and dy <= lh):
                    blocks[i] = (
                        min(a[0], b[0]),
                        min(a[1], b[1]),
                        max(a[2], b[2]),
                        max(a[3], b[3]),
                        lh,
                    )
                    del blocks[j]
                    joined = True
                    break
            if joined:
                break
    return sorted((x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1, _ in blocks)


def _pad(box: tuple[int, int, int, int], rows: int, cols: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    px, py = max(3, min(h, 48)), max(3, min(math.ceil(0.5 * h), 24))  # a letter beyond
    x0, y0 = max(0, x - px), max(0, y - py)
    x1, y1 = min(cols, x + w + px), min(rows, y + h + py)
    return x0, y0, x1 - x0, y1 - y0


def _clean_frame(
    frame: np.ndarray, photometric: str, blank: np.ndarray, policy: Policy
) -> list[tuple[int, int, int, int]] | None:
    """Blank the text of one frame (rows, cols, samples) in place; the padded boxes, or None
    when text is still found after the last round."""
    rows, cols = frame.shape[:2]
    done: list[tuple[int, int, int, int]] = []
    filled = np.zeros((rows, cols), bool)
    for _round in range(policy.ocr_rounds + 1):
        view = to_8bit(frame, photometric)
        if filled.any() and not filled.all():
            # OCR sees blanked boxes as flat background: a black block beside a letter left
            # over would merge with it and hide it from the next pass
            view[filled] = np.uint8(np.median(view[~filled]))
        found = [_pad(b, rows, cols) for b in ocr_boxes(view, policy)]
        if not found:
            return done
        if _round == policy.ocr_rounds:
            return None
        for x, y, w, h in found:
            frame[y : y + h, x : x + w] = blank
            filled[y : y + h, x : x + w] = True
        done.extend(found)
    return None
