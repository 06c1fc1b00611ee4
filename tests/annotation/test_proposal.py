"""The round-1 intensity proposal finds a planted blob and stays quiet on a flat body."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from annotation.model import dice
from annotation.proposal import (
    ProposalConfig,
    _fill_holes_per_slice,
    block_mean,
    body_mask,
    grid_factors,
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


def test_a_bright_blob_leaves_no_dark_echo() -> None:
    """The top-hat overshoots beside a blurred blob (dark caps on a bright sphere, a bright ring
    round a dark one), more on the coarse search grid; those echoes touch a stronger blob of the
    other polarity and are dropped, so each sphere gives one component."""
    for value in (0.95, 0.50):
        v, sphere = _phantom(value)
        p = propose(v, (1.5, 1.5, 1.5))
        assert len(p.components) == 1
        assert ndi.label(p.mask)[1] == 1 and dice(p.mask, sphere) > 0.7


def test_the_volumes_own_grid_still_works() -> None:
    """grid_mm 0 searches at full resolution (the v1 behaviour, with v2's faster statistics)."""
    v, sphere = _phantom(0.50)
    p = propose(v, (1.5, 1.5, 1.5), ProposalConfig(grid_mm=0))
    assert dice(p.mask, sphere) > 0.5 and p.score > 0.5


def test_search_grid_helpers() -> None:
    assert grid_factors((1.5, 1.5, 2.0), (256, 256, 98), 3.0) == (2, 2, 1)
    assert grid_factors((0.7, 0.7, 5.0), (512, 512, 40), 3.0) == (4, 4, 1)
    assert grid_factors((1.5, 1.5, 1.0), (64, 64, 1), 3.0) == (2, 2, 1)  # a 2D image
    assert grid_factors((1.5, 1.5, 2.0), (64, 64, 9), 0.0) == (1, 1, 1)
    a = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    b = block_mean(a, (2, 2, 1))
    assert b.shape == (3, 2, 3) and b.dtype == np.float32
    assert b[0, 0, 0] == a[:2, :2, 0].mean()
    assert b[2, 1, 2] == a[4, 2:4, 2].mean()  # the odd edge is padded by replication
    assert block_mean(a, (1, 1, 1)) is a


def test_slice_hole_filling_matches_scipy_slice_by_slice() -> None:
    rng = np.random.default_rng(5)
    m = ndi.binary_opening(rng.random((40, 30, 6)) > 0.45)
    expected = m.copy()
    for k in range(m.shape[2]):
        expected[:, :, k] = ndi.binary_fill_holes(m[:, :, k])
    got = _fill_holes_per_slice(m)
    assert np.array_equal(got, expected)
    assert np.array_equal(ndi.binary_fill_holes(got), got)  # nothing left for a 3D fill
