"""Validation of one received file: is it a decodable DICOM image we can curate?

Small checks named after the part of the DICOM standard they enforce; each returns a
:class:`Reason` (code + message) or ``None``. :func:`validate_file` runs them in order on one
file and never raises: an unexpected exception becomes the reason ``UNREADABLE``.

Decisions (why a file is quarantined rather than catalogued):

- ``EMPTY_FILE``: zero bytes.
- ``NOT_DICOM``: no PS3.10 ``DICM`` prefix and not parseable as a DICOM data set at all. Decided
  from the first bytes where possible (:mod:`medcurate.dicomwalk`), so a large zero-filled file is
  refused in milliseconds, never handed to the full parser.
- ``SEQUENCE_TOO_DEEP``: sequences nest deeper than the limit (``max_depth``, 32 by default):
  readers recurse per level, and a file nested 1,000 deep would crash whoever reads it next.
- ``NO_FILE_META``: a bare data set without the PS3.10 preamble and File Meta Information. pydicom
  can guess its encoding, but downstream stages read catalogued files without ``force``, and a
  transfer syntax that is guessed is not one we can trust for decoding; so these wait for a human.
- ``TRUNCATED``: a data element runs past the end of the file (or the file ends inside one);
  element lengths (Pixel Data's too) are checked against the file size before any full parse.
- ``DICOMDIR``: a Media Storage Directory (PS3.10 section 8): an index of other files, not an
  instance.
- ``NOT_AN_IMAGE``: a known SOP class that is not an Image Storage class (PS3.4 Annex B): SR, RT
  Structure Set/Plan/Dose, Segmentation, waveforms, presentation states, encapsulated documents.
  They may be valid DICOM, but this pipeline curates images into volumes; SEG/RTSTRUCT carry labels
  in a form a later stage may import, and they stay, with their reason, in quarantine.
- ``NO_PIXEL_DATA``: an image (or an unknown SOP class) without Pixel Data (7FE0,0010/0008/0009).
- ``MISSING_ATTRIBUTE``: a Type 1 attribute we need is absent or empty (the message names it).
- ``INVALID_VALUE``: an attribute is present but its value is malformed (UID syntax, geometry,
  Image Pixel module values, a value pydicom cannot convert).
- ``UNSUPPORTED_TRANSFER_SYNTAX``: no installed pixel decoder for the file's transfer syntax.
- ``PIXEL_DECODE_FAILED``: the decoder ran and failed on this file's pixel data.
- ``UNREADABLE``: the file cannot be read (no permission, I/O error, not a regular file) or
  anything else raised. The message names the exception type and errno, never the file's path.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator, read_preamble
from pydicom.pixels import get_decoder, iter_pixels
from pydicom.uid import UID, MediaStorageDirectoryStorage

from medcurate.dicomwalk import DEFAULT_MAX_DEPTH, inspect

# Reason codes (values of the catalog's ``reason`` column).
EMPTY_FILE = "EMPTY_FILE"
NOT_DICOM = "NOT_DICOM"
NO_FILE_META = "NO_FILE_META"
TRUNCATED = "TRUNCATED"
DICOMDIR = "DICOMDIR"
NOT_AN_IMAGE = "NOT_AN_IMAGE"
NO_PIXEL_DATA = "NO_PIXEL_DATA"
MISSING_ATTRIBUTE = "MISSING_ATTRIBUTE"
INVALID_VALUE = "INVALID_VALUE"
UNSUPPORTED_TRANSFER_SYNTAX = "UNSUPPORTED_TRANSFER_SYNTAX"
PIXEL_DECODE_FAILED = "PIXEL_DECODE_FAILED"
UNREADABLE = "UNREADABLE"
SEQUENCE_TOO_DEEP = "SEQUENCE_TOO_DEEP"

REASON_CODES = (
    EMPTY_FILE,
    NOT_DICOM,
    NO_FILE_META,
    TRUNCATED,
    DICOMDIR,
    NOT_AN_IMAGE,
    NO_PIXEL_DATA,
    MISSING_ATTRIBUTE,
    INVALID_VALUE,
    UNSUPPORTED_TRANSFER_SYNTAX,
    PIXEL_DECODE_FAILED,
    UNREADABLE,
    SEQUENCE_TOO_DEEP,
)

MEDIA_STORAGE_DIRECTORY = MediaStorageDirectoryStorage
PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel, Float Pixel, Double Float Pixel

# Type 1 attributes every catalogued instance must carry (identity: PS3.3 SOP Common, General
# Study/Series), and those the Image Pixel module (PS3.3 C.7.6.3) needs to decode pixels.
IDENTITY_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
)
IMAGE_PIXEL_ATTRIBUTES = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)
UID_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class Reason:
    """Why a file cannot be catalogued: a stable code and a human message (may name the file's
    attributes; it is written only under restricted/)."""

    code: str
    message: str


@dataclass
class Validation:
    """The outcome for one file: ``reason`` is None when it is a decodable image.

    ``header`` holds what could be read for the catalog (UIDs, modality, geometry...), also for
    quarantined files where the header was readable.
    """

    reason: Reason | None
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Invalid(Exception):
    """Raised inside the checks to turn a bad value into INVALID_VALUE."""


# --- PS3.10: the file format -------------------------------------------------------------------


def check_file_size(size: int) -> Reason | None:
    """A zero-byte file carries nothing (often a failed transfer)."""
    if size == 0:
        return Reason(EMPTY_FILE, "EMPTY_FILE: the file has zero bytes")
    return None


def has_part10_prefix(head: bytes) -> bool:
    """PS3.10 7.1: 128-byte preamble followed by the 4 bytes ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def check_file_meta(file_meta: Dataset | None) -> Reason | None:
    """PS3.10 7.1: the File Meta Information must name the Transfer Syntax (0002,0010)."""
    if file_meta is None or not file_meta.get("TransferSyntaxUID"):
        return Reason(
            MISSING_ATTRIBUTE,
            "MISSING_ATTRIBUTE: TransferSyntaxUID (0002,0010) absent from File Meta Information",
        )
    return None


def check_media_storage_directory(ds: Dataset) -> Reason | None:
    """PS3.10 8: a DICOMDIR indexes other files; it is not an instance to curate."""
    meta = getattr(ds, "file_meta", None)
    classes = {
        str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else "",
        str(ds.get("SOPClassUID", "")),
    }
    if MEDIA_STORAGE_DIRECTORY in classes or "DirectoryRecordSequence" in ds:
        return Reason(DICOMDIR, "DICOMDIR: a media storage directory, not an instance")
    return None


def scan_top_level(path: Path, file_meta: Dataset) -> tuple[Reason | None, set[int]]:
    """Walk the top-level data elements: a truncation reason (or None) and the tags present.

    pydicom stops quietly at end-of-file and keeps a short value, so a file cut in half can read
    "fine" with a shorter Pixel Data or without its last elements; this walk sees the cut.
    Values are skipped, not read. Deflated files are read whole (zlib notices a cut).
    """
    ts = UID(str(file_meta.get("TransferSyntaxUID", "")))
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian or not ts.is_transfer_syntax:
        ds = pydicom.dcmread(path)
        return None, {int(elem.tag) for elem in ds}
    size = os.path.getsize(path)
    tags: set[int] = set()
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        pydicom.filereader._read_file_meta_info(fp)
        last_end = fp.tell()
        try:
            for elem in data_element_generator(
                fp, ts.is_implicit_VR, ts.is_little_endian, defer_size=256
            ):
                if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF:
                    end = elem.value_tell + elem.length
                else:
                    end = fp.tell()
                if end > size:
                    return Reason(
                        TRUNCATED,
                        f"TRUNCATED: element {elem.tag} needs {end - size} bytes past "
                        f"the end of the file ({size} bytes)",
                    ), tags
                tags.add(int(elem.tag))
                last_end = fp.tell()
        except EOFError as exc:
            return Reason(TRUNCATED, f"TRUNCATED: {exc}"), tags
    if last_end < size:
        return Reason(
            TRUNCATED,
            f"TRUNCATED: the file ends inside a data element header at byte {last_end}",
        ), tags
    return None, tags


# --- PS3.4 / PS3.3: what the instance is --------------------------------------------------------


def is_image_storage_class(sop_class_uid: str) -> bool | None:
    """True for a known Image Storage SOP class, False for another known class, None if unknown."""
    uid = UID(sop_class_uid)
    name = uid.name
    if name == sop_class_uid:  # not in pydicom's registry (private or newer than the registry)
        return None
    return "Image Storage" in name


def check_sop_class(sop_class_uid: str) -> Reason | None:
    """PS3.4 Annex B: only Image Storage SOP classes become volumes."""
    if is_image_storage_class(sop_class_uid) is False:
        return Reason(
            NOT_AN_IMAGE,
            f"NOT_AN_IMAGE: SOP class {UID(sop_class_uid).name} is not an Image Storage class",
        )
    return None


def check_pixel_data_present(top_level_tags: set[int]) -> Reason | None:
    """PS3.3 C.7.6.3: an image carries Pixel Data (or Float/Double Float Pixel Data)."""
    if not any(t in top_level_tags for t in PIXEL_DATA_TAGS):
        return Reason(NO_PIXEL_DATA, "NO_PIXEL_DATA: no (7FE0,0010/0008/0009) element")
    return None


def check_required_attributes(ds: Dataset, keywords: Sequence[str]) -> Reason | None:
    """Type 1 attributes must be present and not empty (PS3.5 7.4)."""
    for kw in keywords:
        try:
            value = ds.get(kw)
        except Exception as exc:
            return Reason(
                INVALID_VALUE, f"INVALID_VALUE: {kw} cannot be read ({type(exc).__name__})"
            )
        if value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0):
            return Reason(MISSING_ATTRIBUTE, f"MISSING_ATTRIBUTE: {kw} absent or empty")
    return None


def check_uid_syntax(keyword: str, value: str) -> Reason | None:
    """PS3.5 9.1: digits and dots, no leading zeros in a component, at most 64 characters."""
    if len(value) > 64 or not _UID_RE.match(value):
        return Reason(INVALID_VALUE, f"INVALID_VALUE: {keyword} is not a valid UID (PS3.5 9.1)")
    return None


def check_image_pixel_module(ds: Dataset) -> Reason | None:
    """PS3.3 C.7.6.3.1: the Image Pixel module's values must describe a decodable frame."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows <= 0 or cols <= 0:
        return Reason(INVALID_VALUE, f"INVALID_VALUE: Rows/Columns {rows}x{cols} not positive")
    spp = int(ds.SamplesPerPixel)
    if spp not in (1, 3, 4):
        return Reason(INVALID_VALUE, f"INVALID_VALUE: SamplesPerPixel {spp}")
    alloc, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if alloc not in (1, 8, 16, 32, 64) or not 1 <= stored <= alloc:
        return Reason(INVALID_VALUE, f"INVALID_VALUE: BitsAllocated {alloc} / BitsStored {stored}")
    if int(ds.PixelRepresentation) not in (0, 1):
        return Reason(INVALID_VALUE, "INVALID_VALUE: PixelRepresentation not 0 or 1")
    return None


def check_image_plane_module(ds: Dataset) -> Reason | None:
    """PS3.3 C.7.6.2: where geometry is given it must be well formed (3 + 6 finite numbers,
    unit direction cosines, positive spacing). Projection images have none, which is fine."""
    ipp = _floats(ds, "ImagePositionPatient")
    if ipp is not None and len(ipp) != 3:
        return Reason(INVALID_VALUE, "INVALID_VALUE: ImagePositionPatient needs 3 numbers")
    iop = _floats(ds, "ImageOrientationPatient")
    if iop is not None:
        if len(iop) != 6:
            return Reason(INVALID_VALUE, "INVALID_VALUE: ImageOrientationPatient needs 6 numbers")
        for vec in (iop[:3], iop[3:]):
            if abs(math.sqrt(sum(v * v for v in vec)) - 1.0) > 0.01:
                return Reason(
                    INVALID_VALUE, "INVALID_VALUE: ImageOrientationPatient is not unit vectors"
                )
    ps = _floats(ds, "PixelSpacing")
    if ps is not None and (len(ps) != 2 or min(ps) <= 0):
        return Reason(INVALID_VALUE, "INVALID_VALUE: PixelSpacing needs 2 positive numbers")
    for values in (ipp, iop, ps):
        if values is not None and not all(math.isfinite(v) for v in values):
            return Reason(INVALID_VALUE, "INVALID_VALUE: geometry has non-finite numbers")
    return None


def check_transfer_syntax(transfer_syntax_uid: str) -> Reason | None:
    """PS3.5 10: we can only prove pixels decode for transfer syntaxes with an installed decoder."""
    try:
        decoder = get_decoder(transfer_syntax_uid)
    except NotImplementedError:
        return Reason(
            UNSUPPORTED_TRANSFER_SYNTAX,
            f"UNSUPPORTED_TRANSFER_SYNTAX: no decoder for {transfer_syntax_uid}",
        )
    if not decoder.is_available:
        return Reason(
            UNSUPPORTED_TRANSFER_SYNTAX,
            f"UNSUPPORTED_TRANSFER_SYNTAX: no installed plugin decodes {transfer_syntax_uid}",
        )
    return None


# --- reading ------------------------------------------------------------------------------------


def _floats(ds: Dataset, keyword: str) -> list[float] | None:
    if keyword not in ds:
        return None
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        seq = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        return [float(v) for v in seq]
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"INVALID_VALUE: {keyword} is not numeric") from exc


def _safe(ds: Dataset, keyword: str, kind: type | None = None) -> Any:
    """A header value for the catalog; None where absent or unconvertible (never raises)."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if kind is float:
            return float(value)
        if kind is int:
            return int(value)
        return str(value)
    except Exception:
        return None


def _safe_floats(ds: Dataset, keyword: str) -> list[float] | None:
    try:
        return _floats(ds, keyword)
    except Exception:
        return None


def header_fields(ds: Dataset) -> dict[str, Any]:
    """The catalog's header columns, best effort (quarantined files fill what they can)."""
    meta = getattr(ds, "file_meta", None)
    ts = None
    if meta is not None:
        ts = _safe(meta, "TransferSyntaxUID")
    return {
        "sop_class_uid": _safe(ds, "SOPClassUID"),
        "sop_uid": _safe(ds, "SOPInstanceUID"),
        "study_uid": _safe(ds, "StudyInstanceUID"),
        "series_uid": _safe(ds, "SeriesInstanceUID"),
        "frame_of_reference_uid": _safe(ds, "FrameOfReferenceUID"),
        "modality": _safe(ds, "Modality"),
        "manufacturer": _safe(ds, "Manufacturer"),
        "transfer_syntax_uid": ts,
        "rows": _safe(ds, "Rows", int),
        "columns": _safe(ds, "Columns", int),
        "number_of_frames": _safe(ds, "NumberOfFrames", int) or (1 if "Rows" in ds else None),
        "image_position_patient": _safe_floats(ds, "ImagePositionPatient"),
        "image_orientation_patient": _safe_floats(ds, "ImageOrientationPatient"),
        "pixel_spacing": _safe_floats(ds, "PixelSpacing"),
        "slice_thickness": _safe(ds, "SliceThickness", float),
    }


def _bare_dataset_reason(path: Path) -> Reason:
    """No DICM prefix: a bare DICOM data set (NO_FILE_META) or not DICOM at all."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        plausible = any(kw in ds for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"))
    except Exception:
        plausible = False
    if plausible:
        return Reason(
            NO_FILE_META,
            "NO_FILE_META: a DICOM data set without the PS3.10 preamble and File Meta Information",
        )
    return Reason(NOT_DICOM, "NOT_DICOM: no DICM prefix and not a DICOM data set")


def validate_file(path: Path, max_depth: int = DEFAULT_MAX_DEPTH) -> Validation:
    """Run every check on one file, in order; never raises.

    ``max_depth`` bounds sequence nesting (checked by a cheap header walk before any parse).
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header: dict[str, Any] = {}
        try:
            return _validate(path, header, max_depth)
        except _Invalid as exc:
            return Validation(Reason(INVALID_VALUE, str(exc)), header)
        except OSError as exc:
            return Validation(Reason(UNREADABLE, unreadable_message(exc)), header)
        except Exception as exc:
            text = _scrub(str(exc), path)[:200]
            return Validation(
                Reason(UNREADABLE, f"UNREADABLE: {type(exc).__name__}: {text}"), header
            )


def unreadable_message(exc: OSError) -> str:
    """``UNREADABLE: PermissionError (EACCES)``: str() of an OSError holds the path; this not."""
    code = errno.errorcode.get(exc.errno or 0, "no errno")
    return f"UNREADABLE: {type(exc).__name__} ({code})"


def _scrub(text: str, path: Path) -> str:
    """Exception texts from parsers may quote the file's path (its folders carry patient names)."""
    for p in (str(path), str(path.parent)):
        text = text.replace(p, "<file>")
    return text


def _validate(path: Path, header: dict[str, Any], max_depth: int) -> Validation:
    def fail(reason: Reason | None) -> Validation:
        return Validation(reason, header)

    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device: it could block forever
        return fail(Reason(UNREADABLE, "UNREADABLE: not a regular file"))
    if r := check_file_size(st.st_size):
        return fail(r)
    verdict = inspect(path, max_depth)  # cheap: element headers only, before any full parse
    if verdict.code is not None:
        return fail(Reason(verdict.code, verdict.message))
    with open(path, "rb") as f:
        head = f.read(132)
    if not has_part10_prefix(head):
        return fail(_bare_dataset_reason(path))
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        return fail(Reason(NOT_DICOM, f"NOT_DICOM: {_scrub(str(exc), path)[:200]}"))
    except EOFError as exc:
        return fail(Reason(TRUNCATED, f"TRUNCATED: {_scrub(str(exc), path)[:200]}"))
    header.update(header_fields(ds))
    if r := check_file_meta(ds.file_meta):
        return fail(r)
    truncation, top_level_tags = scan_top_level(path, ds.file_meta)
    if truncation:
        return fail(truncation)
    if r := check_media_storage_directory(ds):
        return fail(r)
    if r := check_required_attributes(ds, IDENTITY_ATTRIBUTES):
        return fail(r)
    for kw in UID_ATTRIBUTES:
        if kw in ds and ds.get(kw) and (r := check_uid_syntax(kw, str(ds.get(kw)))):
            return fail(r)
    if r := check_sop_class(str(ds.SOPClassUID)):
        return fail(r)
    if r := check_pixel_data_present(top_level_tags):
        return fail(r)
    if r := check_required_attributes(ds, IMAGE_PIXEL_ATTRIBUTES):
        return fail(r)
    try:
        r = check_image_pixel_module(ds)
    except (TypeError, ValueError) as exc:
        r = Reason(INVALID_VALUE, f"INVALID_VALUE: Image Pixel module ({type(exc).__name__})")
    if r:
        return fail(r)
    if r := check_image_plane_module(ds):
        return fail(r)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if r := check_transfer_syntax(ts):
        return fail(r)
    return fail(decode_pixels(path))


def decode_pixels(path: Path) -> Reason | None:
    """Decode every frame (raw: no colour conversion) to prove the pixel data is usable."""
    try:
        ds = pydicom.dcmread(path)
        frames = 0
        for _ in iter_pixels(ds, raw=True):
            frames += 1
    except Exception as exc:
        return Reason(
            PIXEL_DECODE_FAILED,
            f"PIXEL_DECODE_FAILED: {type(exc).__name__}: {_scrub(str(exc), path)[:200]}",
        )
    if frames == 0:
        return Reason(PIXEL_DECODE_FAILED, "PIXEL_DECODE_FAILED: no frames decoded")
    return None
