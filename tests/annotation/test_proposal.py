"""The round-1 intensity proposal finds a planted blob and stays quiet on a flat body."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.model import dice
from annotation.proposal import (
    ProposalConfig,
    body_mask,
    otsu_threshold,
    proposal_probability,
    propose,
    spacing_from_affine,
)


def _phantom(lesion_value: float | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like body (60 HU on the 0..1 scale of -1000..1000 HU) in air, 11 HU noise, and an
    optional sphere of radius 6 voxels (9 mm at 1.5 mm voxels)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:80, :80, :32]
    v = np.where((x - 40) ** 2 + (y - 40) ** 2 < 34**2, 0.53, 0.0).astype(np.float32)
    sphere = ((x - 30) ** 2 + (y - 46) ** 2 + (z - 16) ** 2) < 6**2
    if lesion_value is not None:
        v[sphere] = lesion_value
    v += rng.normal(0.0, 11 / 2000, v.shape).astype(np.float32)
    return v, sphere


@pytest.mark.parametrize("value", [0.95, 0.50])  # a bright nodule; a dark (-60 HU) metastasis
def test_proposal_finds_a_planted_sphere(value: float) -> None:
    v, sphere = _phantom(value)
    p = propose(v, (1.5, 1.5, 1.5))
    assert p.mask.dtype == np.uint8 and p.mask.shape == v.shape
    assert dice(p.mask, sphere) > 0.5
    assert p.score > 0.5
    assert p.components


def test_proposal_is_quiet_on_a_flat_body() -> None:
    v, _ = _phantom(None)
    p = propose(v, (1.5, 1.5, 1.5))
    assert int(p.mask.sum()) == 0
    assert p.score == 0.0


def test_proposal_is_quiet_on_empty_and_handles_2d() -> None:
    assert propose(np.zeros((16, 16, 4), np.float32)).mask.sum() == 0
    v, sphere = _phantom(0.95)
    img = v[:, :, 16]
    p = propose(img, (1.5, 1.5))
    assert p.mask.shape == img.shape
    assert dice(p.mask, sphere[:, :, 16]) > 0.5


def test_proposal_is_deterministic() -> None:
    v, _ = _phantom(0.5, seed=3)
    a, b = propose(v, (1.5, 1.5, 1.5)), propose(v, (1.5, 1.5, 1.5))
    assert np.array_equal(a.mask, b.mask) and a.score == b.score


def test_size_filter_drops_a_blob_too_small() -> None:
    v, _ = _phantom(0.95)
    big = ProposalConfig(min_volume_mm3=50_000.0)
    assert propose(v, (1.5, 1.5, 1.5), big).mask.sum() == 0


def test_body_and_helpers() -> None:
    v, _ = _phantom(None)
    body, thr = body_mask(v)
    assert 0.1 < thr < 0.5
    assert body[40, 40, 16] and not body[0, 0, 0]
    assert otsu_threshold(np.r_[np.zeros(100), np.ones(100)]) == pytest.approx(0.5, abs=0.01)
    aff = np.diag([-1.5, 1.5, 2.0, 1.0])
    assert spacing_from_affine(aff) == (1.5, 1.5, 2.0)


def test_ct_rule_drops_fat_like_blobs_but_keeps_tissue() -> None:
    fat, _ = _phantom((1000 - 95) / 2000)  # a -95 HU blob: fat, not a lesion
    assert propose(fat, (1.5, 1.5, 1.5), modality="CT").mask.sum() == 0
    assert propose(fat, (1.5, 1.5, 1.5)).mask.sum() > 0  # without the CT rule it is a candidate
    cyst, sphere = _phantom(0.504)  # 8 HU cyst in 60 HU tissue
    assert dice(propose(cyst, (1.5, 1.5, 1.5), modality="CT").mask, sphere) > 0.5


def test_the_proposal_probability_never_claims_certainty() -> None:
    """A raw score of 0 (nothing found) showed every slice as "normal, 100%"."""
    assert proposal_probability(0.0) == 0.25 and proposal_probability(1.0) == 0.75
    assert proposal_probability(0.5) == 0.5
    assert proposal_probability(0.2) < proposal_probability(0.9)  # still an ordering
