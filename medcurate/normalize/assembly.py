"""Series assembly: instances -> ordered, regular stacks of slices, or a quarantine reason.

A series on disk is a bag of files. Turning it into a volume means sorting the slices along the
slice normal (cross product of the two ImageOrientationPatient vectors) by ImagePositionPatient,
never by file name or InstanceNumber, and refusing what does not make one regular stack: missing
slices, uneven gaps, duplicate positions, mixed geometry. Where a series is several stacks in one
(several acquisitions or time points, a three-plane localizer), it is split into parts, each part
checked on its own. Everything here reads headers only; pixels are read by the transforms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

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
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    series_uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not series_uid:
        return None
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    ps = _spacing(ds.get("PixelSpacing")) or _spacing(ds.get("ImagerPixelSpacing"))
    iop = _orientation(ds.get("ImageOrientationPatient"))
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    raw_type = ds.get("ImageType") or []
    image_type = [str(v).upper() for v in ([raw_type] if isinstance(raw_type, str) else raw_type)]
    temporal = _int(ds.get("TemporalPositionIdentifier"))
    if temporal is None:
        temporal = _int(ds.get("TemporalPositionIndex"))
    echo = ds.get("EchoNumbers")
    if echo is not None and not isinstance(echo, str | int | float):
        echo = next(iter(echo), None)
    return InstanceInfo(
        path=str(path),
        sop_uid=sop_uid,
        series_uid=series_uid,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient=str(ds.get("PatientID", "") or ""),
        modality=str(ds.get("Modality", "") or "").upper(),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        sex=str(ds.get("PatientSex", "") or ""),
        age_years=age_years(ds.get("PatientAge")),
        rows=_int(ds.get("Rows")),
        cols=_int(ds.get("Columns")),
        pixel_spacing=ps,
        iop=iop,
        ipp=ipp,  # type: ignore[arg-type]
        n_frames=_int(ds.get("NumberOfFrames")) or 1,
        samples_per_pixel=_int(ds.get("SamplesPerPixel")) or 1,
        enhanced="PerFrameFunctionalGroupsSequence" in ds,
        localizer="LOCALIZER" in image_type,
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        temporal_position=temporal,
        trigger_time=_float(ds.get("TriggerTime")),
        echo_number=_int(echo),
        instance_number=_int(ds.get("InstanceNumber")),
        sha256=sha256,
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
