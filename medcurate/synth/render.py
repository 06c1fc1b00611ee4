"""Pixels and lesion labels of one planned series, in the series' own voxel grid."""

from __future__ import annotations

import numpy as np

from medcurate.synth.phantom import (
    Lesion,
    ct_hu,
    lesion_labels,
    mr_signal,
    projection,
    tissue_map,
)
from medcurate.synth.plan import PatientPlan, SeriesPlan, StudyPlan

XR_DEPTH_STEP = 4.0  # mm between samples along the X-ray beam
XR_DEPTH = 300.0  # mm of patient traversed


def study_lesions(patient: PatientPlan, study: StudyPlan) -> list[Lesion]:
    """The patient's lesions as they are at this study (follow-ups grow or shrink them)."""
    return [les.scaled(study.lesion_scale) for les in patient.lesions]


def _series_rng(
    seed: int, patient: PatientPlan, study: StudyPlan, series: SeriesPlan
) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([abs(seed), 104729, patient.index, study.index, series.number])
    )


def render_series(
    seed: int, patient: PatientPlan, study: StudyPlan, series: SeriesPlan
) -> tuple[np.ndarray, np.ndarray]:
    """Stored pixel values ``(slices, rows, cols)`` and lesion labels of the same shape.

    Labels are instance ids (``i + 1`` for ``patient.lesions[i]``, 0 background). For projection
    images the labels are the footprint of lung lesions (the only ones a chest film shows).
    """
    rng = _series_rng(seed, patient, study, series)
    lesions = study_lesions(patient, study)
    g = series.geometry
    v = patient.site.vendor
    if series.modality in ("CT", "MR"):
        pts = g.voxel_centers() - study.offset.astype(np.float32)  # anatomical mm
        t = tissue_map(patient.anatomy, pts)
        lab = lesion_labels(lesions, pts)
        if series.modality == "CT":
            hu = np.maximum(ct_hu(t, lab, lesions, rng, noise=11.0), -1024.0)
            raw = np.rint((hu - v.ct_intercept) / v.ct_slope)
            if v.ct_pixel_representation:
                lo, hi = -(2 ** (v.ct_bits_stored - 1)), 2 ** (v.ct_bits_stored - 1) - 1
                return np.clip(raw, lo, hi).astype(np.int16), lab
            return np.clip(raw, 0, 2**v.ct_bits_stored - 1).astype(np.uint16), lab
        sig = mr_signal(t, lab, lesions, series.weighting, pts, rng)
        return np.clip(np.rint(sig), 0, 4095).astype(np.uint16), lab
    # projection radiograph: sample the body on (rows, depth, cols) and integrate along depth
    plane = g.voxel_centers()[0]  # (rows, cols, 3)
    depth = np.arange(-XR_DEPTH / 2, XR_DEPTH / 2, XR_DEPTH_STEP, dtype=np.float32)
    pts = np.repeat(plane[:, None, :, :], depth.size, axis=1)
    pts[..., 1] = depth[None, :, None] + np.float32(study.offset[1])
    pts = pts - study.offset.astype(np.float32)
    t = tissue_map(patient.anatomy, pts)
    lab3 = lesion_labels(lesions, pts)
    line = projection(t, lab3, lesions, XR_DEPTH_STEP)
    value = 350.0 + 520.0 * line + rng.normal(0.0, 12.0, line.shape)
    value = np.clip(np.rint(value), 0, 4095)
    if v.xr_photometric == "MONOCHROME1":
        value = 4095 - value
    lung = np.array([0] + [1 if les.organ == "lung" else 0 for les in lesions], dtype=np.uint8)
    lab = (lab3 * lung[lab3]).max(axis=1)
    return value.astype(np.uint16)[None], lab[None]
