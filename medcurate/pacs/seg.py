"""Labels back to the research PACS: consensus masks as DICOM Segmentations (highdicom).

Why it looks like this:

- A SEG is drawn on its source images' pixel grids, not on the normalized volume's: the volume was
  reoriented to RAS and resampled (:mod:`medcurate.normalize.transforms`). Every pixel centre of
  every source frame (ImagePositionPatient, ImageOrientationPatient, PixelSpacing: LPS mm) is
  carried into the mask's voxel grid through the inverse of its RAS affine and takes the nearest
  voxel's value, so the SEG lines up with the images a viewer shows.
- The sources are exactly the de-identified instances the volume was assembled from: the
  volume's batch manifest gives its series' files, assembly is run again to pick the volume's part
  of the series, and the result must hash to the volume's ``source_digest`` (else the sources
  changed since, and the SEG would lie).
- The SEG copies its patient and study from those sources, so it carries the pseudonym only.
  Before it leaves, :func:`verify_seg` checks it: the identity attributes hold the pseudonym and
  nothing else, and the project's de-identification verifier (:mod:`medcurate.deid.verify`)
  searches it for every value of the identified originals (read from ``restricted/`` by hash,
  never named). A SEG with a finding is not written and not sent.
- Same mask, same sources, same bytes: UIDs derive from the pseudonymous series, the part, the
  sources' digest and the mask's sha256; dates and times come from the sources, never the clock.
  So an unchanged SEG is skipped, and storing it twice is harmless.
- Only single-frame sources are handled (CT/MR slices, a one-frame CR/DX projection): the
  volumes of the chain are made of those (multi-frame series are quarantined by normalization).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset

from medcurate.config import Zones
from medcurate.io import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file
from medcurate.normalize.assembly import (
    KIND_PROJECTION,
    InstanceInfo,
    VolumePlan,
    assemble,
    read_instance,
    source_digest,
)
from medcurate.normalize.config import load_config

SEG_VERSION = "1"  # part of every UID: a change of how SEGs are built gives new instances
SEGMENT_LABEL = "lesion"  # annotation.label_config.BRUSH_LABELS: the one brush label
SERIES_NUMBER_OFFSET = 1000  # SEG series number: the source's plus this (a viewer sorts it after)
INDEX_FILE = "index.json"  # labels/seg/index.json: what was written and stored, per sample
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_PSEUDONYM = "P-"  # medcurate.deid.pseudonyms.patient_pseudonym: "P-" and 12 hex digits
_HEX = frozenset("0123456789abcdef")
# Identity attributes a SEG may hold only as its sources hold them (the de-identified values)
_SAME_AS_SOURCE = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)  # fmt: skip
# What the sources say of their de-identification, copied (the SEG is made from them only)
_DEID_MARKS = (
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)  # fmt: skip
# ... and identifying attributes it must not hold at all (with a value)
_MUST_BE_ABSENT = (
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID", "MedicalRecordLocator",
    "PatientComments", "InstitutionName", "InstitutionAddress", "StationName",
    "InstitutionalDepartmentName", "OperatorsName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "ContentCreatorName",
)  # fmt: skip


class SegError(ValueError):
    """A SEG cannot be built for a sample; the message names no patient, path or original UID."""


class StowClient(Protocol):
    """What storing needs: dicomweb-client's ``DICOMwebClient.store_instances`` (STOW-RS)."""

    def store_instances(self, datasets: Sequence[Dataset]) -> Any: ...


# --------------------------------------------------------------------------- sources


def volume_sources(zones: Zones, row: Mapping[str, Any]) -> list[Path]:
    """The de-identified files of the volume's series: its batch's manifest rows of the series,
    else every file in ``deid/<patient>/<study>/<series>/`` (the path de-identification builds)."""
    series = str(row["series_uid"])
    batch = str(row.get("batch") or "")
    if batch and zones.deid_manifest(batch).exists():
        m = pd.read_parquet(zones.deid_manifest(batch), columns=["path", "series_uid"])
        rels = sorted(m.loc[m["series_uid"] == series, "path"].astype(str))
        return [zones.deid / r for r in rels]
    folder = zones.deid / str(row["patient"]) / str(row["study_uid"]) / series
    return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


def source_plan(paths: Sequence[Path], row: Mapping[str, Any]) -> VolumePlan:
    """The volume's plan, assembled again from ``paths`` as normalization did: its instances are
    the SEG's sources, in slice order. Refuses when they no longer hash to the volume's digest."""
    infos = [i for i in (read_instance(p, sha256=sha256_file(p)) for p in paths) if i is not None]
    sid = str(row["sample_id"])
    plans = [
        o
        for o in assemble(infos, load_config().assembly)
        if isinstance(o, VolumePlan) and o.sample_id == sid
    ]
    if not plans:
        raise SegError("the volume's source instances were not found in deid/")
    plan = plans[0]
    want = row.get("source_digest")
    if want and str(want) != source_digest(plan):
        raise SegError("the de-identified sources changed since the volume was made")
    if any(i.n_frames != 1 for i in plan.instances):
        raise SegError("multi-frame sources are not supported")
    return plan


# --------------------------------------------------------------------------- geometry


def _frame_grid(inst: InstanceInfo, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, step along a row (next column), step down a column (next row)) of a frame's
    pixel centres, in the volume's RAS world. A projection has no patient geometry: its world is
    the detector grid normalization gave it (columns along i, rows along j)."""
    if kind == KIND_PROJECTION:
        dr, dc = inst.pixel_spacing or (1.0, 1.0)
        return np.zeros(3), np.array([float(dc), 0.0, 0.0]), np.array([0.0, float(dr), 0.0])
    if inst.iop is None or inst.ipp is None or inst.pixel_spacing is None:
        raise SegError("a source frame has no position, orientation or pixel spacing")
    dr, dc = inst.pixel_spacing
    row_dir, col_dir = np.asarray(inst.iop[:3], float), np.asarray(inst.iop[3:], float)
    return (
        _LPS_TO_RAS @ np.asarray(inst.ipp, float),
        _LPS_TO_RAS @ (row_dir * float(dc)),
        _LPS_TO_RAS @ (col_dir * float(dr)),
    )


def _slab(instances: Sequence[InstanceInfo], kind: str) -> tuple[np.ndarray, float]:
    """(unit normal of the frames in RAS, spacing between neighbouring frames along it in mm);
    spacing 0 for one frame or a projection."""
    if kind == KIND_PROJECTION or len(instances) < 2:
        return np.array([0.0, 0.0, 1.0]), 0.0
    _, along_row, down_col = _frame_grid(instances[0], kind)
    normal = np.cross(along_row, down_col)
    normal /= np.linalg.norm(normal)
    depths = np.sort([float(_frame_grid(i, kind)[0] @ normal) for i in instances])
    steps = np.diff(depths)
    steps = steps[steps > 1e-3]
    return normal, float(np.median(steps)) if steps.size else 0.0


def mask_on_frames(
    mask: np.ndarray, affine: np.ndarray, instances: Sequence[InstanceInfo], kind: str = ""
) -> np.ndarray:
    """The mask (indexed like its NIfTI, RAS ``affine``) on every pixel of every frame, background
    outside: bool ``(frames, rows, columns)``.

    In plane, the nearest voxel to the pixel centre. Across the plane, a frame stands for the slab
    between it and its neighbours: when the mask's grid is finer than the frame spacing (a
    volume resampled to 1 mm from 2.5 mm slices, labelled on a few of its own slices), a pixel is
    foreground when the mask is anywhere in its slab, sampled at the mask's own step; nearest
    voxel at the centre alone would miss a label drawn between two source frames."""
    inv = np.linalg.inv(np.asarray(affine, float))
    lin, off = inv[:3, :3], inv[:3, 3]
    shape = np.asarray(mask.shape[:3])
    fg = np.asarray(mask) != 0
    if fg.ndim == 2:
        fg = fg[:, :, None]
    normal, spacing = _slab(instances, kind)
    across = lin @ (normal * spacing)  # one frame spacing, in mask voxels
    n_samples = max(1, int(np.ceil(np.abs(across).max() - 1e-6)))
    offsets = [((k + 0.5) / n_samples - 0.5) * across for k in range(n_samples)]
    out = []
    for inst in instances:
        if not inst.rows or not inst.cols:
            raise SegError("a source frame has no Rows or Columns")
        o, along_row, down_col = _frame_grid(inst, kind)
        r = np.arange(inst.rows, dtype=float)[:, None, None]
        c = np.arange(inst.cols, dtype=float)[None, :, None]
        centre = (o @ lin.T + off) + c * (along_row @ lin.T) + r * (down_col @ lin.T)
        plane = np.zeros((inst.rows, inst.cols), dtype=bool)
        for shift in offsets:
            ijk = np.floor(centre + shift + 0.5).astype(np.int64)
            inside = np.all((ijk >= 0) & (ijk < shape), axis=-1)
            hit = ijk[inside]
            plane[inside] |= fg[hit[:, 0], hit[:, 1], hit[:, 2]]
        out.append(plane)
    return np.stack(out)


# --------------------------------------------------------------------------- the SEG


def seg_uids(row: Mapping[str, Any], digest: str, mask_sha: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID): the series per volume (a revised mask is a new
    instance in it), the instance per mask and sources. ``2.25.`` UIDs from a hash of pseudonymous
    values only."""
    base = (SEG_VERSION, str(row["series_uid"]), str(row.get("part") or ""))
    return _uid("seg-series", *base), _uid("seg-instance", *base, digest, mask_sha)


def _uid(*parts: str) -> str:
    """``2.25.<128 bits of sha256>`` of the parts, the form de-identification's UIDs take
    (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources: it draws a UUID4)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _when(ds: Dataset) -> tuple[str, str]:
    """The source's (shifted) content date and time, else its series' or study's: never now."""
    for d, t in (("ContentDate", "ContentTime"), ("SeriesDate", "SeriesTime"),
                 ("StudyDate", "StudyTime")):  # fmt: skip
        date = str(ds.get(d) or "").strip()
        if len(date) == 8 and date.isdigit():
            tm = str(ds.get(t) or "").strip().split(".")[0]
            return date, tm if tm.isdigit() and len(tm) in (2, 4, 6) else "000000"
    raise SegError("the sources carry no content, series or study date")


def build_seg(
    mask_path: Path | str,
    sources: Path | Sequence[Path],
    sample_row: Mapping[str, Any],
    *,
    plan: VolumePlan | None = None,
) -> Dataset:
    """A binary DICOM Segmentation of a consensus mask, on the de-identified source frames.

    ``sources``: the volume's de-identified files (or their folder); ``sample_row``: its row of
    volumes.parquet (sample_id, series_uid, part, source_digest). ``plan``: the sources already
    assembled (:func:`source_plan`). Frames without foreground are left out; the SEG references
    every source instance of the volume."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask_path = Path(mask_path)
    if plan is None:
        files = sorted(Path(sources).glob("*.dcm")) if isinstance(sources, Path | str) else sources
        plan = source_plan(list(files), sample_row)
    mask_bytes = mask_path.read_bytes()
    img: Any = nib.Nifti1Image.from_bytes(_gunzip(mask_bytes))
    mask = np.asarray(img.dataobj)
    frames = mask_on_frames(mask, img.affine, plan.instances, plan.kind)
    if not frames.any():
        raise SegError("the mask has no foreground on any source frame")
    with _quiet():
        images = [pydicom.dcmread(i.path, stop_before_pixels=True) for i in plan.instances]
    for ds in images:  # Type 2 in the SEG: de-identification may have removed them (Type 3 there)
        for kw in _SAME_AS_SOURCE:
            if kw not in ds:
                setattr(ds, kw, "")
    first = images[0]
    series_uid, sop_uid = seg_uids(sample_row, source_digest(plan), sha256_bytes(mask_bytes))
    date, tm = _when(first)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    number = int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    with _quiet():
        seg = hd.seg.Segmentation(
            source_images=images,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=series_uid,
            series_number=number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="medcurate",
            manufacturer_model_name="medcurate consensus",
            software_versions=f"medcurate seg {SEG_VERSION}",
            device_serial_number="1",
            series_description="lesion consensus (medcurate)",
            content_label="LESION",
            content_description="consensus of human annotators",
            content_date=date,
            content_time=tm,
            series_date=date,
            series_time=tm,
            omit_empty_frames=True,
        )
    seg["InstanceCreationDate"].value = date  # highdicom wrote today's date and time
    seg["InstanceCreationTime"].value = tm
    for item in seg.get("ContributingEquipmentSequence", []):  # highdicom's own says "now"
        item.ContributionDateTime = date + tm
    _fixed_dimension_uid(seg, sop_uid)
    if plan.kind == KIND_PROJECTION:  # no patient geometry: General Image needs it (Type 2C)
        seg.PatientOrientation = first.get("PatientOrientation", "")
    for kw in _DEID_MARKS:
        if kw in first:
            setattr(seg, kw, first.data_element(kw).value)  # type: ignore[union-attr]
    return seg


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pydicom warnings and highdicom log lines may quote header values: keep them out of logs."""
    hd_log = logging.getLogger("highdicom")
    level = hd_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd_log.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            hd_log.setLevel(level)


def _fixed_dimension_uid(seg: Dataset, sop_uid: str) -> None:
    """highdicom draws a random DimensionOrganizationUID: replace it by one from the instance."""
    fixed = _uid("seg-dimension", sop_uid)
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = fixed
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = fixed


def seg_bytes(seg: Dataset) -> bytes:
    """The SEG as a DICOM file (Part 10, preamble and file meta)."""
    buf = BytesIO()
    pydicom.dcmwrite(buf, seg, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- verification


def _is_pseudonym(value: str) -> bool:
    return len(value) == 14 and value.startswith(_PSEUDONYM) and set(value[2:]) <= _HEX


def _names(ds: Dataset) -> list[str]:
    """Every non-empty PN value anywhere in the dataset but the top-level PatientName."""
    found: list[str] = []

    def walk(d: Dataset, top: bool) -> None:
        for el in d:
            if el.VR == "SQ":
                for item in el.value or []:
                    walk(item, False)
            elif el.VR == "PN" and not (top and el.keyword == "PatientName") and str(el.value):
                found.append(el.keyword or str(el.tag))

    walk(ds, True)
    return found


def verify_seg(
    ds: Dataset,
    sources: Sequence[Dataset] = (),
    originals: Sequence[tuple[bytes, str]] = (),
    output_path: str = "",
) -> list[str]:
    """What identifies a patient in the SEG (empty: it may leave). Messages name attributes and
    counts, never values.

    Always: PatientName and PatientID are one pseudonym, PatientIdentityRemoved is YES, no other
    person name, no private attribute, none of the identifying attributes de-identification
    removes. With ``sources`` (the de-identified images): the identity attributes equal theirs.
    With ``originals`` (the identified files as received, with their received relative paths):
    the de-identification verifier searches the SEG's bytes and ``output_path`` for every value
    the profile removes from each of them."""
    from medcurate.deid.verify import verify

    problems: list[str] = []
    name, pid = str(ds.get("PatientName") or ""), str(ds.get("PatientID") or "")
    if not _is_pseudonym(pid):
        problems.append("PatientID is not a pseudonym")
    if name != pid:
        problems.append("PatientName is not the pseudonym")
    if str(ds.get("PatientIdentityRemoved") or "") != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    problems += [f"{kw} holds a person name" for kw in _names(ds)]
    problems += [f"{kw} is present" for kw in _MUST_BE_ABSENT if ds.get(kw)]
    if any(el.tag.is_private for el in ds.iterall()):
        problems.append("private attributes are present")
    for src in sources[:1]:
        problems += [
            f"{kw} differs from the de-identified source"
            for kw in _SAME_AS_SOURCE
            if str(ds.get(kw) or "") != str(src.get(kw) or "")
        ]
    if originals:
        blob = seg_bytes(ds)
        hits, kinds = 0, set()
        for data, name_received in originals:
            result = verify(data, blob, output_path, source_name=name_received)
            hits += result.hits
            kinds |= set(result.kinds)
        if hits:
            problems.append(
                f"de-identification verifier: {hits} value(s) of the originals found "
                f"({', '.join(sorted(kinds))})"
            )
    return problems


def originals_of(zones: Zones, batch: str, paths: Sequence[Path]) -> list[tuple[bytes, str]]:
    """The identified originals (bytes, received relative path) of de-identified files, found by
    hash: the batch's manifest gives each file's source sha256, its catalog the original's path
    under ``restricted/``. Raises SegError when one cannot be found (nothing is verified then)."""
    from medcurate.ingest import read_catalog

    if not batch or not zones.deid_manifest(batch).exists():
        raise SegError("no de-identification manifest for the volume's batch")
    m = pd.read_parquet(zones.deid_manifest(batch), columns=["path", "source_sha256"])
    source_of = dict(zip(m["path"].astype(str), m["source_sha256"].astype(str), strict=True))
    cat = read_catalog(zones, batch)
    by_sha = {str(s): (Path(str(p)), str(r)) for s, p, r in
              zip(cat["sha256"], cat["path"], cat["relpath"], strict=True)}  # fmt: skip
    out = []
    for p in paths:
        hit = by_sha.get(source_of.get(p.relative_to(zones.deid).as_posix(), ""))
        if hit is None or not hit[0].is_file():
            raise SegError("an original of the volume is missing: the SEG cannot be verified")
        out.append((hit[0].read_bytes(), hit[1]))
    return out


# --------------------------------------------------------------------------- the stage


@dataclass
class SegResult:
    """What ``label_segs`` did, PHI-free (sample ids are hashes of pseudonymous UIDs)."""

    labelled: int = 0
    without_mask: int = 0
    without_volume: int = 0
    written: int = 0
    unchanged: int = 0
    stored: int = 0
    removed: int = 0
    failed: int = 0
    seg_bytes: int = 0  # total size of the SEGs on disk
    build_s: float = 0.0  # seconds spent building and verifying the written ones
    problem_list: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.problem_list

    def metadata(self) -> dict[str, Any]:
        keys = ("labelled", "without_mask", "without_volume", "written", "unchanged", "stored",
                "removed", "failed", "seg_bytes")  # fmt: skip
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["seconds_per_seg"] = round(self.build_s / self.written, 3) if self.written else 0.0
        return out

    def summary_line(self) -> str:
        tail = f"; {self.failed} failed" if self.failed else ""
        return (
            f"label_segs: {self.labelled} labelled samples, {self.written} SEG written, "
            f"{self.unchanged} unchanged, {self.stored} stored, {self.without_mask} without a "
            f"mask, {self.without_volume} without a volume{tail}"
        )


def seg_dir(zones: Zones) -> Path:
    """``labels/seg/``: one ``<sample_id>.dcm`` per labelled sample with a mask."""
    return zones.labels / "seg"


def _read_index(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_label_segs(
    zones: Zones, research_client: StowClient | None = None, *, verify_originals: bool = True
) -> SegResult:
    """Every labelled sample with a mask and a volume -> ``labels/seg/<sample_id>.dcm``, built,
    verified, written atomically; with ``research_client`` (anything with ``store_instances``,
    e.g. dicomweb-client's DICOMwebClient, or an object whose ``web`` is one), stored with
    STOW-RS. A SEG already written for the same mask and sources is not rebuilt, and not stored
    again once stored. One sample's failure is a problem naming its sample id; the rest go on.
    ``verify_originals=False`` skips the search against the identified originals (for a home
    without ``restricted/``: the identity checks still run)."""
    result = SegResult()
    if not zones.labels_table.exists():
        return result
    labels = pd.read_parquet(zones.labels_table)
    vols = pd.read_parquet(zones.volumes_table) if zones.volumes_table.exists() else pd.DataFrame()
    by_id: dict[str, dict[str, Any]] = {
        str(r["sample_id"]): {str(k): v for k, v in r.items()} for r in vols.to_dict("records")
    }
    out_dir = seg_dir(zones)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / INDEX_FILE
    index = _read_index(index_path)
    client = getattr(research_client, "web", research_client)
    keep: set[str] = set()
    for lab in labels.sort_values("sample_id").to_dict("records"):
        sid = str(lab["sample_id"])
        result.labelled += 1
        mask_rel = lab.get("mask_path")
        if mask_rel is None or (isinstance(mask_rel, float) and np.isnan(mask_rel)):
            result.without_mask += 1
            continue
        row = by_id.get(sid)
        if row is None:
            result.without_volume += 1
            continue
        keep.add(sid)
        target = out_dir / f"{sid}.dcm"
        try:
            entry = _one(zones, sid, row, zones.label_file(str(mask_rel)), target, index.get(sid),
                         result, verify_originals)  # fmt: skip
        except SegError as exc:
            result.failed += 1
            result.problem_list.append(f"sample {sid}: {exc}")
            continue
        except Exception as exc:  # highdicom, I/O: its type only (messages may quote values)
            result.failed += 1
            result.problem_list.append(f"sample {sid}: SEG failed ({type(exc).__name__})")
            continue
        index[sid] = entry
        if client is None or entry.get("stored") == entry["sop_uid"]:
            continue
        try:
            with _quiet():
                client.store_instances([pydicom.dcmread(target)])
        except Exception as exc:  # the PACS: its type only; tried again next run
            result.failed += 1
            result.problem_list.append(f"sample {sid}: storing failed ({type(exc).__name__})")
            continue
        entry["stored"] = entry["sop_uid"]
        result.stored += 1
    for stale in sorted(out_dir.glob("*.dcm")):
        if stale.stem not in keep:
            stale.unlink()
            index.pop(stale.stem, None)
            result.removed += 1
    index = {k: v for k, v in index.items() if k in keep}
    atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    result.seg_bytes = sum(p.stat().st_size for p in out_dir.glob("*.dcm"))
    return result


def _one(
    zones: Zones,
    sid: str,
    row: Mapping[str, Any],
    mask_file: Path,
    target: Path,
    entry: dict[str, str] | None,
    result: SegResult,
    verify_originals: bool,
) -> dict[str, str]:
    """Build, verify and write one sample's SEG, unless the one on disk is for the same mask and
    sources (its SOP instance UID says so). Returns the sample's index entry."""
    if not mask_file.is_file():
        raise SegError("its consensus mask file is missing")
    mask_sha = sha256_file(mask_file)
    entry = dict(entry or {})
    digest = str(row.get("source_digest") or "")
    if (
        digest
        and entry.get("version") == SEG_VERSION
        and entry.get("mask_sha256") == mask_sha
        and entry.get("source_digest") == digest
        and target.is_file()
        and sha256_file(target) == entry.get("sha256")
    ):
        result.unchanged += 1
        return entry
    started = time.perf_counter()
    paths = volume_sources(zones, row)
    plan = source_plan(paths, row)
    seg = build_seg(mask_file, [], row, plan=plan)
    with _quiet():
        sources = [pydicom.dcmread(plan.first.path, stop_before_pixels=True)]
    originals: list[tuple[bytes, str]] = []
    if verify_originals:
        used = [Path(i.path) for i in plan.instances]
        originals = originals_of(zones, str(row.get("batch") or ""), used)
    rel = target.relative_to(zones.home).as_posix()
    problems = verify_seg(seg, sources, originals, output_path=rel)
    if problems:
        raise SegError("not released: " + "; ".join(problems))
    blob = seg_bytes(seg)
    atomic_write_bytes(target, blob)
    result.written += 1
    result.build_s += time.perf_counter() - started
    return {"version": SEG_VERSION, "sop_uid": str(seg.SOPInstanceUID), "mask_sha256": mask_sha,
            "source_digest": source_digest(plan), "sha256": sha256_bytes(blob),
            "stored": entry.get("stored", "")}  # fmt: skip
