"""Ground truth of a generated cohort: lesion masks, the labels tables and the planted PHI.

Truth never goes into the studies folder. Layout under TRUTH::

    masks/<patient key>/S<study>_SE<series>.nii.gz   one per series (empty for normal series)
    labels.parquet                                   one row per series
    lesions.parquet                                  one row per lesion visible in a series
    phi.json                                         every planted identifying string, per patient

Masks are uint8 instance labels (``i + 1`` for the patient's lesion ``i``) indexed ``[c, r, k]``
(column, row, InstanceNumber - 1) with a RAS affine: see :mod:`medcurate.synth.geometry`. For
CR/DX images the mask is the footprint of lung lesions on the projection plane (the images have no
ImagePositionPatient; the affine places the plane coronally through the scan centre).

``phi.json``: ``{"patients": {key: {category: [strings]}}, "phi": [all strings to scan for],
"uids": {key: [original UIDs]}}``. The ``phi`` list holds names (DICOM ``LAST^FIRST``, plain
``First Last``, folder ``LAST_FIRST`` forms), IDs, birth dates, addresses, phone numbers, accession
and request IDs, staff names, institution names and addresses, station names and serial numbers,
and the PHI-bearing folder names. Study dates are listed per patient (``study_dates``) but are not
in ``phi`` (a shifted date may collide with another original date); UIDs are listed apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from medcurate.io import atomic_write_parquet, atomic_write_text, write_nifti
from medcurate.synth.geometry import SeriesGeometry
from medcurate.synth.phantom import LESION_SIGNAL
from medcurate.synth.plan import PatientPlan, SeriesPlan, StudyPlan
from medcurate.synth.render import study_lesions

UID_KEY = "uids"
PHI_KEY = "phi"
NOT_SCANNED = ("study_dates",)


def mask_name(patient: PatientPlan, study: StudyPlan, series: SeriesPlan) -> str:
    return f"masks/{patient.key}/S{study.index + 1}_SE{series.number:03d}.nii.gz"


def write_mask(path: Path, labels: np.ndarray, geometry: SeriesGeometry) -> None:
    """``labels``: (slices, rows, cols) -> uint8 NIfTI array [c, r, k] with the RAS affine
    (sform and qform, code 1), written deterministically (gzip mtime 0)."""
    arr = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)).astype(np.uint8))
    write_nifti(path, arr, geometry.affine_ras(), dtype="uint8")


def series_rows(
    patient: PatientPlan,
    study: StudyPlan,
    series: SeriesPlan,
    labels: np.ndarray,
    series_dir: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One labels row and the lesion rows for a rendered series."""
    g = series.geometry
    voxel = g.row_spacing * g.col_spacing * (g.slice_spacing if g.slices > 1 else 1.0)
    lesions = study_lesions(patient, study)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    present = {int(i): int(n) for i, n in zip(ids, counts, strict=True)}
    lesion_rows = []
    centers = []
    for lid, n in present.items():
        les = lesions[lid - 1]
        c = np.asarray(les.center) + study.offset
        centers.append([round(float(x), 3) for x in c])
        idx = g.lps_to_index(c) if series.modality in ("CT", "MR") else np.full(3, np.nan)
        lesion_rows.append(
            {
                "study_uid": study.uid,
                "series_uid": series.uid,
                "patient_key": patient.key,
                "site": patient.site.key,
                "modality": series.modality,
                "lesion_id": lid,
                "organ": les.organ,
                "kind": les.kind,
                "center_x": float(c[0]),
                "center_y": float(c[1]),
                "center_z": float(c[2]),
                "index_c": float(idx[0]),
                "index_r": float(idx[1]),
                "index_k": float(idx[2]),
                "semi_a": les.semi[0],
                "semi_b": les.semi[1],
                "semi_c": les.semi[2],
                "volume_mm3": round(les.volume_mm3, 3),
                "n_voxels": n,
                "mask_volume_mm3": round(n * voxel, 3),
                "hu": LESION_SIGNAL[les.kind][0],
            }
        )
    n_les = len(present)
    row = {
        "study_uid": study.uid,
        "series_uid": series.uid,
        "patient_key": patient.key,
        "site": patient.site.key,
        "modality": series.modality,
        "series_kind": series.kind,
        "study_index": study.index,
        "series_number": series.number,
        "n_instances": g.slices,
        "has_lesion": n_les > 0,
        "n_lesions": n_les,
        "lesion_ids": list(present),
        "lesion_volumes_mm3": [round(n * voxel, 3) for n in present.values()],
        "lesion_centers_lps": centers,
        "label": "abnormal" if n_les else "normal",
        "patient_has_lesion": bool(patient.lesions),
        "mask_file": mask_name(patient, study, series),
        "series_dir": series_dir,
    }
    return row, lesion_rows


LABELS_SCHEMA = pa.schema(
    [
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("patient_key", pa.string()),
        ("site", pa.string()),
        ("modality", pa.string()),
        ("series_kind", pa.string()),
        ("study_index", pa.int32()),
        ("series_number", pa.int32()),
        ("n_instances", pa.int32()),
        ("has_lesion", pa.bool_()),
        ("n_lesions", pa.int32()),
        ("lesion_ids", pa.list_(pa.int32())),
        ("lesion_volumes_mm3", pa.list_(pa.float64())),
        ("lesion_centers_lps", pa.list_(pa.list_(pa.float64()))),
        ("label", pa.string()),
        ("patient_has_lesion", pa.bool_()),
        ("mask_file", pa.string()),
        ("series_dir", pa.string()),
    ]
)
LESIONS_SCHEMA = pa.schema(
    [("study_uid", pa.string()), ("series_uid", pa.string()), ("patient_key", pa.string()),
     ("site", pa.string()), ("modality", pa.string()), ("lesion_id", pa.int32()),
     ("organ", pa.string()), ("kind", pa.string())]
    + [(k, pa.float64()) for k in ("center_x", "center_y", "center_z", "index_c", "index_r",
                                   "index_k", "semi_a", "semi_b", "semi_c", "volume_mm3")]
    + [("n_voxels", pa.int64()), ("mask_volume_mm3", pa.float64()), ("hu", pa.float64())]
)  # fmt: skip


def write_tables(
    truth: Path, rows: list[dict[str, Any]], lesion_rows: list[dict[str, Any]]
) -> None:
    atomic_write_parquet(pa.Table.from_pylist(rows, schema=LABELS_SCHEMA), truth / "labels.parquet")
    atomic_write_parquet(
        pa.Table.from_pylist(lesion_rows, schema=LESIONS_SCHEMA), truth / "lesions.parquet"
    )


def patient_phi(patient: PatientPlan) -> dict[str, list[str]]:
    """Every identifying string planted for this patient, by category (exactly as written)."""
    ident, site = patient.identity, patient.site
    names = [ident.person.pn, ident.person.plain, ident.person.folder, ident.mother_birth_name]
    if ident.birth_name:
        names.append(ident.birth_name)
    staff: list[str] = []
    for s in patient.studies:
        staff += [s.referring.pn_staff, s.referring.plain, s.performing.pn_staff]
        staff += [s.reading.pn_staff, s.operator.pn]
        if s.comment_with_name:
            staff.append(s.operator.plain)
    cats = {
        "names": names,
        "ids": [ident.mrn, ident.other_id]
        + [
            x
            for s in patient.studies
            for x in (s.study_id, s.requested_procedure_id, s.sps_id, s.pps_id)
        ],
        "birth_dates": [patient.birth_date.strftime("%Y%m%d")],
        "addresses": [ident.address],
        "phones": [ident.phone],
        "accession_numbers": [s.accession for s in patient.studies],
        "staff": staff,
        "institutions": [site.institution, site.address, ident.other_issuer],
        "devices": [site.station, site.device_serial],
        "paths": [patient.folder],
        "study_dates": [s.date.strftime("%Y%m%d") for s in patient.studies],
    }
    return {k: sorted(set(v)) for k, v in cats.items()}


def patient_uids(patient: PatientPlan) -> list[str]:
    out: list[str] = []
    for s in patient.studies:
        out += [s.uid, s.frame_uid]
        for se in s.series:
            out += [se.uid, *se.instance_uids]
    return out


def write_phi(truth: Path, patients: list[PatientPlan]) -> None:
    per = {p.key: patient_phi(p) for p in patients}
    scan = sorted(
        {x for cats in per.values() for k, v in cats.items() if k not in NOT_SCANNED for x in v}
    )
    doc = {"patients": per, PHI_KEY: scan, UID_KEY: {p.key: patient_uids(p) for p in patients}}
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_text(truth / "phi.json", text)


def planted_phi(truth: Path) -> set[str]:
    """The identifying strings planted in a generated cohort (not UIDs, not study dates)."""
    doc = json.loads((Path(truth) / "phi.json").read_text(encoding="utf-8"))
    return set(doc[PHI_KEY])


def planted_uids(truth: Path) -> set[str]:
    """The original UIDs (study, frame of reference, series, SOP instance) of a generated cohort."""
    doc = json.loads((Path(truth) / "phi.json").read_text(encoding="utf-8"))
    return {u for v in doc[UID_KEY].values() for u in v}
