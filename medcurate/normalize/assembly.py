"""Series assembly: instances -> ordered, regular stacks of slices, or a quarantine reason.

A series on disk is a bag of files. Turning it into a volume means sorting the slices along the
slice normal (cross product of the two ImageOrientationPatient vectors) by ImagePositionPatient,
never by file name or InstanceNumber, and refusing what does not make one regular stack: missing
slices, uneven gaps, duplicate positions, mixed geometry. Where a series is several stacks in one
(several acquisitions or time points, a three-plane localizer), it is split into parts, each part
checked on its own. Everything here reads headers only; pixels are read by the transforms, and
where a header says how (an uncompressed little-endian grey frame), it also records where they
lie in the file (:class:`PixelLayout`), so loading reads them without parsing the file again.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.values import convert_value

from medcurate.io import age_years, sha256_text
from medcurate.normalize.config import AssemblyConfig

# Quarantine reason codes (stable: tests, metadata and quality checks use them; upper case in
# every room).
UNREADABLE = "UNREADABLE"
NO_IMAGE = "NO_IMAGE"
DUPLICATE_INSTANCE = "DUPLICATE_INSTANCE"
MULTIFRAME = "MULTIFRAME"
MULTIFRAME_ENHANCED = "MULTIFRAME_ENHANCED"
COLOR = "COLOR"
LOCALIZER = "LOCALIZER"
NO_GEOMETRY = "NO_GEOMETRY"
SINGLE_SLICE = "SINGLE_SLICE"
DUPLICATE_POSITIONS = "DUPLICATE_POSITIONS"
MISSING_SLICES = "MISSING_SLICES"
UNEVEN_SPACING = "UNEVEN_SPACING"
NON_COLLINEAR = "NON_COLLINEAR_POSITIONS"
LOAD_ERROR = "LOAD_ERROR"

REASONS = (
    UNREADABLE,
    NO_IMAGE,
    DUPLICATE_INSTANCE,
    MULTIFRAME,
    MULTIFRAME_ENHANCED,
    COLOR,
    LOCALIZER,
    NO_GEOMETRY,
    SINGLE_SLICE,
    DUPLICATE_POSITIONS,
    MISSING_SLICES,
    UNEVEN_SPACING,
    NON_COLLINEAR,
    LOAD_ERROR,
)

KIND_VOLUME = "volume3d"
KIND_PROJECTION = "projection2d"

# Native (uncompressed) little-endian transfer syntaxes: Implicit and Explicit VR Little Endian.
NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


@dataclass(frozen=True)
class PixelLayout:
    """Where one uncompressed little-endian grey frame lies in its file and how pydicom's decoder
    turns it into an array (its dtype; ``shift`` unused high bits masked, or sign-extended when
    signed), with the rescale and photometric facts loading applies. Read with the header; the
    transforms check it against ``pixel_array`` on the first slice of every series."""

    offset: int  # file offset of the PixelData value
    dtype: str  # "<u2", "<i2", "<u1", ...
    shift: int  # BitsAllocated - BitsStored
    rows: int
    cols: int
    rescale: tuple[float, float] | None  # (slope, intercept) when either is in the header
    monochrome1: bool

    @property
    def decoding(self) -> tuple[str, int, int, int]:
        return (self.dtype, self.shift, self.rows, self.cols)


@dataclass(frozen=True)
class InstanceInfo:
    """The header fields assembly needs, read once per file (no pixels)."""

    path: str
    sop_uid: str
    series_uid: str
    study_uid: str = ""
    patient: str = ""
    modality: str = ""
    manufacturer: str = ""
    sex: str = ""
    age_years: float | None = None
    rows: int | None = None
    cols: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    iop: tuple[float, ...] | None = None
    ipp: tuple[float, float, float] | None = None
    n_frames: int = 1
    samples_per_pixel: int = 1
    enhanced: bool = False
    localizer: bool = False
    acquisition_number: int | None = None
    temporal_position: int | None = None
    trigger_time: float | None = None
    echo_number: int | None = None
    instance_number: int | None = None
    sha256: str = ""
    pixels: PixelLayout | None = None  # None: loading decodes with pydicom


@dataclass
class VolumePlan:
    """One volume to write: its instances in slice order and the geometry that orders them."""

    series_uid: str
    part: str
    kind: str
    instances: list[InstanceInfo]
    slice_spacing: float | None = None
    tilt_deg: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def sample_id(self) -> str:
        return sample_id(self.series_uid, self.part)

    @property
    def first(self) -> InstanceInfo:
        return self.instances[0]


@dataclass
class Rejection:
    """A series (or part of one) that cannot become a correct volume, and why."""

    series_uid: str
    part: str
    reason: str
    message: str
    instances: list[InstanceInfo]

    @property
    def sample_id(self) -> str:
        return sample_id(self.series_uid, self.part)


Outcome = VolumePlan | Rejection


def sample_id(series_uid: str, part: str = "") -> str:
    """Deterministic, PHI-free id of one volume: a short hash of the (pseudonymous) series UID."""
    return sha256_text(f"{series_uid}|{part}")[:16]


def _part(reason: str) -> str:
    """The part name of a rejected (part of a) series: its reason in lower case, as sample ids
    of quarantined series have always been built (so they stay the same)."""
    return reason.lower()


# ---------------------------------------------------------------------------------------------
# Reading headers


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(out) != n or not np.all(np.isfinite(out)):
        return None
    return out


def _spacing(value: Any) -> tuple[float, float] | None:
    sp = _floats(value, 2)
    return (sp[0], sp[1]) if sp is not None and min(sp) > 0 else None


def _orientation(value: Any) -> tuple[float, ...] | None:
    """Two unit, orthogonal direction cosines, or None (then the geometry is unusable)."""
    iop = _floats(value, 6)
    if iop is None:
        return None
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3:
        return None
    if abs(float(np.dot(r, c))) > 1e-3:
        return None
    return iop


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# VRs whose values pydicom decodes without the character set: :func:`_get` converts them itself.
_PLAIN_VRS = frozenset({"AS", "CS", "DS", "IS", "UI", "US", "SS", "UL", "SL", "FL", "FD"})
_TAGS: dict[str, int] = {}


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, the same value and type, at a third of the cost: an element
    of a plain VR (no character set) is converted by pydicom's own ``convert_value`` straight from
    its raw form (and not cached), skipping the Dataset's per-access machinery, which was most
    of the time of reading a header; anything else (text with a character set, sequences, odd
    or already converted elements) goes the usual way."""
    tag = _TAGS.get(keyword)
    if tag is None:
        found = tag_for_keyword(keyword)
        if found is None:  # not a dictionary keyword (repeating groups): pydicom decides
            return ds.get(keyword, default)
        tag = _TAGS[keyword] = int(found)
    raw = ds.get_item(tag)
    if raw is None:
        return default
    if isinstance(raw, RawDataElement) and raw.value is not None:
        try:
            vr = raw.VR or dictionary_VR(tag)  # implicit VR: the dictionary's, as pydicom does
            if vr in _PLAIN_VRS:
                return convert_value(vr, raw)
        except Exception:  # pydicom's path decides (a warning, UN, or an error)
            pass
    return ds.get(keyword, default)


def read_instance(path: str | Path, sha256: str = "") -> InstanceInfo | None:
    """Header of one file, or None when it is not readable DICOM with a series UID.

    Any failure (a damaged header, sequences nested too deep for the parser's recursion) makes
    the file unreadable for this run: one bad file never stops the batch.
    """
    try:
        return _read_instance(path, sha256)
    except Exception:
        return None


def _read_instance(path: str | Path, sha256: str) -> InstanceInfo | None:
    try:
        with open(path, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            # The reader stopped at the PixelData element's tag: its header says where the value is.
            at, element = f.tell(), f.read(12)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    series_uid = str(_get(ds, "SeriesInstanceUID", "") or "")
    if not series_uid:
        return None
    sop_uid = str(_get(ds, "SOPInstanceUID", "") or "")
    ps = _spacing(_get(ds, "PixelSpacing")) or _spacing(_get(ds, "ImagerPixelSpacing"))
    iop = _orientation(_get(ds, "ImageOrientationPatient"))
    ipp = _floats(_get(ds, "ImagePositionPatient"), 3)
    raw_type = _get(ds, "ImageType") or []
    image_type = [str(v).upper() for v in ([raw_type] if isinstance(raw_type, str) else raw_type)]
    temporal = _int(_get(ds, "TemporalPositionIdentifier"))
    if temporal is None:
        temporal = _int(_get(ds, "TemporalPositionIndex"))
    echo = _get(ds, "EchoNumbers")
    if echo is not None and not isinstance(echo, str | int | float):
        echo = next(iter(echo), None)
    rows, cols = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    n_frames = _int(_get(ds, "NumberOfFrames")) or 1
    samples = _int(_get(ds, "SamplesPerPixel")) or 1
    pixels = None
    if rows and cols and n_frames == 1 and samples == 1:
        try:
            pixels = _pixel_layout(ds, rows, cols, at, element)
        except Exception:  # an odd header: loading decodes this file with pydicom
            pixels = None
    return InstanceInfo(
        path=str(path),
        sop_uid=sop_uid,
        series_uid=series_uid,
        study_uid=str(_get(ds, "StudyInstanceUID", "") or ""),
        patient=str(_get(ds, "PatientID", "") or ""),
        modality=str(_get(ds, "Modality", "") or "").upper(),
        manufacturer=str(_get(ds, "Manufacturer", "") or ""),
        sex=str(_get(ds, "PatientSex", "") or ""),
        age_years=age_years(_get(ds, "PatientAge")),
        rows=rows,
        cols=cols,
        pixel_spacing=ps,
        iop=iop,
        ipp=ipp,  # type: ignore[arg-type]
        n_frames=n_frames,
        samples_per_pixel=samples,
        enhanced="PerFrameFunctionalGroupsSequence" in ds,
        localizer="LOCALIZER" in image_type,
        acquisition_number=_int(_get(ds, "AcquisitionNumber")),
        temporal_position=temporal,
        trigger_time=_float(_get(ds, "TriggerTime")),
        echo_number=_int(echo),
        instance_number=_int(_get(ds, "InstanceNumber")),
        sha256=sha256,
        pixels=pixels,
    )


def _pixel_layout(ds: Any, rows: int, cols: int, at: int, element: bytes) -> PixelLayout | None:
    """The frame's layout when it is one native little-endian grey frame of 8, 16 or 32 bits
    whose value holds it whole; None otherwise."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) not in NATIVE_LITTLE_ENDIAN:
        return None
    implicit, little = ds.original_encoding
    if not little or len(element) < 12 or element[:4] != _PIXEL_DATA_TAG:
        return None
    if implicit:
        (length,), offset = struct.unpack("<I", element[4:8]), at + 8
    elif element[4:6] in (b"OB", b"OW"):
        (length,), offset = struct.unpack("<I", element[8:12]), at + 12
    else:
        return None
    bits, stored = _get(ds, "BitsAllocated"), _get(ds, "BitsStored")
    representation = _get(ds, "PixelRepresentation")
    if not all(type(v) is int for v in (bits, stored, representation)):
        return None
    if bits not in (8, 16, 32) or not 0 < stored <= bits or representation not in (0, 1):
        return None
    if length == 0xFFFFFFFF or length < rows * cols * (bits // 8):
        return None
    rescale = None
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = _get(ds, "RescaleSlope") if "RescaleSlope" in ds else 1.0
        intercept = _get(ds, "RescaleIntercept") if "RescaleIntercept" in ds else 0.0
        if not all(isinstance(v, float) and np.isfinite(v) for v in (slope, intercept)):
            return None
        rescale = (float(slope), float(intercept))
    return PixelLayout(
        offset=offset,
        dtype=f"<{'i' if representation else 'u'}{bits // 8}",
        shift=bits - stored,
        rows=rows,
        cols=cols,
        rescale=rescale,
        monochrome1=_get(ds, "PhotometricInterpretation", "") == "MONOCHROME1",
    )


# ---------------------------------------------------------------------------------------------
# Assembly


def assemble(instances: Iterable[InstanceInfo], cfg: AssemblyConfig | None = None) -> list[Outcome]:
    """Group instances by SeriesInstanceUID and assemble each series (sorted by series UID)."""
    cfg = cfg or AssemblyConfig()
    by_series: dict[str, list[InstanceInfo]] = defaultdict(list)
    for inst in instances:
        by_series[inst.series_uid].append(inst)
    out: list[Outcome] = []
    for uid in sorted(by_series):
        out.extend(assemble_series(by_series[uid], cfg))
    return out


def assemble_series(instances: Sequence[InstanceInfo], cfg: AssemblyConfig) -> list[Outcome]:
    """One series -> volume plans and rejections; together they cover every instance once."""
    insts = sorted(instances, key=lambda i: (i.sop_uid, i.path))
    uid = insts[0].series_uid
    out: list[Outcome] = []
    unique: dict[str, InstanceInfo] = {}
    repeats: list[InstanceInfo] = []
    for inst in insts:  # the same instance twice (e.g. another transfer syntax): keep the first
        if inst.sop_uid in unique:
            repeats.append(inst)
        else:
            unique[inst.sop_uid] = inst
    if repeats:
        message = f"{len(repeats)} repeated SOPInstanceUID(s); the first copy is used"
        out.append(Rejection(uid, _part(DUPLICATE_INSTANCE), DUPLICATE_INSTANCE, message, repeats))
        insts = list(unique.values())

    categories: list[tuple[str, Callable[[InstanceInfo], bool], str]] = [
        (NO_IMAGE, lambda i: not i.rows or not i.cols, "no pixel matrix (not an image object)"),
        (MULTIFRAME_ENHANCED, lambda i: i.n_frames > 1 and i.enhanced, "enhanced multi-frame"),
        (MULTIFRAME, lambda i: i.n_frames > 1, "multi-frame object"),
        (COLOR, lambda i: i.samples_per_pixel != 1, "more than one sample per pixel"),
        (LOCALIZER, lambda i: i.localizer, "ImageType says LOCALIZER"),
    ]
    rest = insts
    for reason, test, what in categories:
        hit = [i for i in rest if test(i)]
        if hit:
            out.append(
                Rejection(uid, _part(reason), reason, f"{len(hit)} instance(s): {what}", hit)
            )
            rest = [i for i in rest if not test(i)]
    if not rest:
        return out

    projection = [i for i in rest if i.modality in cfg.projection_modalities]
    rest = [i for i in rest if i.modality not in cfg.projection_modalities]
    for inst in projection:  # every projection image is its own 2D volume
        part = "" if len(projection) == 1 and not rest else _short(inst.sop_uid)
        out.append(VolumePlan(uid, part, KIND_PROJECTION, [inst]))

    no_geom = [i for i in rest if i.iop is None or i.ipp is None or i.pixel_spacing is None]
    if no_geom:
        out.append(
            Rejection(
                uid,
                _part(NO_GEOMETRY),
                NO_GEOMETRY,
                f"{len(no_geom)} instance(s) without ImageOrientationPatient, "
                "ImagePositionPatient or PixelSpacing",
                no_geom,
            )
        )
        rest = [i for i in rest if i not in no_geom]
    if not rest:
        return out

    groups = _split_by(rest, _geometry_key)
    if len(groups) == 1:
        out.extend(_assemble_stack(uid, "", rest, cfg))
    else:
        for k, key in enumerate(sorted(groups), start=1):
            sub = _assemble_stack(uid, f"g{k}", groups[key], cfg)
            for o in sub:
                if isinstance(o, VolumePlan):
                    o.notes.append(f"split: {len(groups)} geometries (orientation/size) in series")
            out.extend(sub)
    return out


def _short(sop_uid: str) -> str:
    return "p-" + sha256_text(sop_uid)[:12]


def _geometry_key(i: InstanceInfo) -> tuple[Any, ...]:
    assert i.iop is not None and i.pixel_spacing is not None
    return (
        tuple(round(v, 3) for v in i.iop),
        i.rows,
        i.cols,
        tuple(round(v, 4) for v in i.pixel_spacing),
    )


def _split_by(
    insts: Sequence[InstanceInfo], key: Callable[[InstanceInfo], Any]
) -> dict[Any, list[InstanceInfo]]:
    groups: dict[Any, list[InstanceInfo]] = defaultdict(list)
    for i in insts:
        groups[key(i)].append(i)
    return dict(groups)


def _normal(i: InstanceInfo) -> np.ndarray:
    assert i.iop is not None
    r, c = np.asarray(i.iop[:3]), np.asarray(i.iop[3:])
    n = np.cross(r, c)
    return n / np.linalg.norm(n)


def _distances(insts: Sequence[InstanceInfo]) -> np.ndarray:
    n = _normal(insts[0])
    return np.array([float(np.dot(np.asarray(i.ipp), n)) for i in insts])


_TIME_KEYS: tuple[tuple[str, str], ...] = (
    ("t", "temporal_position"),
    ("a", "acquisition_number"),
    ("tt", "trigger_time"),
    ("e", "echo_number"),
)


def _assemble_stack(
    uid: str, part: str, insts: Sequence[InstanceInfo], cfg: AssemblyConfig
) -> list[Outcome]:
    """One geometry group: split repeated positions by time key, then check the stack."""
    d = _distances(insts)
    pos_tol = cfg.spacing_abs_tol_mm
    if _has_duplicates(d, pos_tol):
        for prefix, attr in _TIME_KEYS:
            groups = _split_by(insts, lambda i, a=attr: getattr(i, a))  # type: ignore[misc]
            if len(groups) < 2 or None in groups:
                continue
            if all(not _has_duplicates(_distances(g), pos_tol) for g in groups.values()):
                out: list[Outcome] = []
                for key in sorted(groups):
                    sub = _check_stack(uid, _join(part, f"{prefix}{key}"), groups[key], cfg)
                    if isinstance(sub, VolumePlan):
                        sub.notes.append(f"split: {len(groups)} by {attr}")
                    out.append(sub)
                return out
        return [
            Rejection(
                uid,
                _join(part, _part(DUPLICATE_POSITIONS)),
                DUPLICATE_POSITIONS,
                f"{len(insts) - len(_unique(d, pos_tol))} duplicate slice position(s) that no "
                "time/acquisition/echo key separates",
                list(insts),
            )
        ]
    return [_check_stack(uid, part, insts, cfg)]


def _join(part: str, sub: str) -> str:
    return f"{part}-{sub}" if part else sub


def _has_duplicates(d: np.ndarray, tol: float) -> bool:
    return len(_unique(d, tol)) < len(d)


def _unique(d: np.ndarray, tol: float) -> np.ndarray:
    s = np.sort(d)
    keep = np.concatenate([[True], np.diff(s) > tol]) if len(s) else np.array([], bool)
    return s[keep]


def _check_stack(
    uid: str, part: str, insts: Sequence[InstanceInfo], cfg: AssemblyConfig
) -> Outcome:
    """Sort along the normal and accept only a regular, collinear stack."""
    if len(insts) < cfg.min_slices:
        return Rejection(
            uid, _join(part, _part(SINGLE_SLICE)), SINGLE_SLICE,
            f"{len(insts)} slice(s); a volume needs {cfg.min_slices}", list(insts),
        )  # fmt: skip
    d = _distances(insts)
    order = np.argsort(d, kind="stable")
    ordered = [insts[k] for k in order]
    d = d[order]
    gaps = np.diff(d)
    median = float(np.median(gaps))
    tol = max(cfg.spacing_abs_tol_mm, cfg.spacing_rel_tol * median)
    if np.any(np.abs(gaps - median) > tol):
        smallest = float(gaps.min())
        multiples = gaps / smallest
        if np.all(np.abs(multiples - np.round(multiples)) * smallest <= tol):
            missing = int(np.round(multiples).sum() - len(gaps))
            return Rejection(
                uid, _join(part, _part(MISSING_SLICES)), MISSING_SLICES,
                f"{missing} slice(s) missing from a {smallest:.3f} mm grid "
                f"({len(insts)} present)", ordered,
            )  # fmt: skip
        return Rejection(
            uid, _join(part, _part(UNEVEN_SPACING)), UNEVEN_SPACING,
            f"slice gaps from {float(gaps.min()):.3f} to {float(gaps.max()):.3f} mm "
            f"(median {median:.3f})", ordered,
        )  # fmt: skip
    ipps = np.array([i.ipp for i in ordered], dtype=float)
    step = (ipps[-1] - ipps[0]) / (len(ipps) - 1)
    fitted = ipps[0] + np.arange(len(ipps))[:, None] * step[None, :]
    deviation = float(np.max(np.linalg.norm(ipps - fitted, axis=1)))
    if deviation > cfg.collinear_tol_mm:
        return Rejection(
            uid, _join(part, _part(NON_COLLINEAR)), NON_COLLINEAR,
            f"slice positions leave the line by up to {deviation:.3f} mm", ordered,
        )  # fmt: skip
    n = _normal(ordered[0])
    cos = abs(float(np.dot(step, n))) / float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    plan = VolumePlan(uid, part, KIND_VOLUME, ordered, slice_spacing=median, tilt_deg=tilt)
    if tilt > 0.01:
        plan.notes.append(f"gantry tilt {tilt:.2f} deg (sheared affine)")
    return plan


def slice_step_lps(plan: VolumePlan) -> np.ndarray:
    """Vector from one slice origin to the next, in LPS mm (the affine's third column)."""
    ipps = np.array([i.ipp for i in plan.instances], dtype=float)
    return (ipps[-1] - ipps[0]) / (len(ipps) - 1)


def source_digest(plan_or_rejection: Outcome) -> str:
    """Hash over the inputs' content hashes (sorted) and the part: unchanged inputs, same digest."""
    inputs = sorted(i.sha256 or i.sop_uid for i in plan_or_rejection.instances)
    return sha256_text(plan_or_rejection.part + "".join(inputs))
