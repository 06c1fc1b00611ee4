"""Simulated annotators: truth carried into the volume grid exactly, and a noise model that does
what its parameters say (pure functions; the real-server run is in test_annotation_rounds)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.simulate import (
    NOISE_LEVELS,
    Noise,
    noise_level,
    noisy_mask,
    resample_nearest,
    rng_for,
    slice_choice,
    slice_result,
)


def _blobs() -> np.ndarray:
    m = np.zeros((30, 30, 8), dtype=np.uint8)
    ii, jj = np.indices((30, 30))
    for k in range(1, 7):
        m[:, :, k] = (ii - 10) ** 2 + (jj - 10) ** 2 < 36  # a big lesion
    m[24, 24, 3] = m[25, 24, 3] = 1  # a small one (2 voxels)
    return m


def test_resample_nearest_follows_both_affines() -> None:
    rng = np.random.default_rng(0)
    src = (rng.random((6, 5, 4)) > 0.5).astype(np.uint8)
    src_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    # the target grid is the source flipped along i and j (LPS vs RAS) at the same spacing
    flip = np.diag([-2.0, -2.0, 3.0, 1.0])
    flip[:3, 3] = [10.0, 8.0, 0.0]  # voxel (0,0,0) of the target = voxel (5,4,0) of the source
    out = resample_nearest(src, src_affine, src.shape, flip)
    assert np.array_equal(out, src[::-1, ::-1, :])
    # a finer target grid (half spacing): every source voxel becomes 2x2x1, outside is 0
    fine = np.diag([1.0, 1.0, 3.0, 1.0])
    up = resample_nearest(src, src_affine, (12, 10, 5), fine)
    assert up.shape == (12, 10, 5)
    assert np.array_equal(up[::2, ::2, :4], src)
    assert not up[:, :, 4].any()


def test_resample_nearest_accepts_a_2d_projection() -> None:
    src = np.eye(4, dtype=np.uint8)
    out = resample_nearest(src, np.eye(4), (4, 4, 1), np.eye(4))
    assert out.shape == (4, 4, 1) and np.array_equal(out[:, :, 0], src)


def test_no_noise_is_the_truth() -> None:
    truth = _blobs()
    assert np.array_equal(noisy_mask(truth, NOISE_LEVELS["none"], rng_for(0, "a")), truth != 0)


def test_small_lesions_are_missed_and_big_ones_kept() -> None:
    truth = _blobs()
    always_miss = Noise(jitter=0.0, miss_small=1.0, small_voxels=10, wrong_class=0.0)
    out = noisy_mask(truth, always_miss, rng_for(0, "a"))
    assert not out[24, 24, 3] and not out[25, 24, 3]
    big = truth.copy()
    big[24:26, 24, 3] = 0
    assert np.array_equal(out, big != 0)


def test_jitter_moves_the_outline_by_one_pixel_only() -> None:
    from scipy import ndimage

    truth = _blobs() != 0
    always = Noise(jitter=1.0, miss_small=0.0, small_voxels=0, wrong_class=0.0)
    out = noisy_mask(truth, always, rng_for(3, "b"))
    assert not np.array_equal(out, truth)
    for k in range(truth.shape[2]):
        lo = ndimage.binary_erosion(truth[:, :, k])
        hi = ndimage.binary_dilation(truth[:, :, k])
        assert np.all(out[:, :, k] <= hi) and np.all(lo <= out[:, :, k])
    # slice by slice: some slices grow, others shrink (independent draws per slice)
    sums = [(int(out[:, :, k].sum()), int(truth[:, :, k].sum())) for k in range(1, 7)]
    assert any(o > t for o, t in sums) and any(o < t for o, t in sums)


def test_noise_is_deterministic_per_annotator() -> None:
    truth = _blobs()
    level = NOISE_LEVELS["high"]
    a1 = noisy_mask(truth, level, rng_for(0, "1", "s"))
    a1_again = noisy_mask(truth, level, rng_for(0, "1", "s"))
    a2 = noisy_mask(truth, level, rng_for(0, "2", "s"))
    assert np.array_equal(a1, a1_again)
    assert not np.array_equal(a1, a2)


def test_wrong_class_flips_and_drops_the_mask() -> None:
    wrong = Noise(0.0, 0.0, 0, wrong_class=1.0)
    assert slice_choice(True, wrong, rng_for(0)) == "normal"
    assert slice_choice(False, wrong, rng_for(0)) == "abnormal"
    assert slice_choice(True, NOISE_LEVELS["none"], rng_for(0)) == "abnormal"
    truth = _blobs()
    flipped = slice_result(truth, 3, wrong, rng_for(0))
    assert [r["type"] for r in flipped] == ["choices"]  # a "normal" slice carries no brush
    right = slice_result(truth, 3, NOISE_LEVELS["none"], rng_for(0))
    assert [r["type"] for r in right] == ["choices", "brushlabels"]
    assert right[0]["value"]["choices"] == ["abnormal"]


def test_unknown_noise_level() -> None:
    assert noise_level("moderate") is NOISE_LEVELS["moderate"]
    with pytest.raises(ValueError, match="unknown noise level"):
        noise_level("extreme")


def test_annotate_round_needs_the_round_and_a_known_noise(zones_tmp, salt) -> None:  # type: ignore[no-untyped-def]
    from annotation.simulate import annotate_round
    from medcurate.config import ConfigError

    with pytest.raises(ConfigError, match=r"round\.json"):
        annotate_round(9)
    (zones_tmp.annotation / "round-9").mkdir(parents=True)
    (zones_tmp.annotation / "round-9" / "round.json").write_text('{"samples": [], "project_id": 1}')
    with pytest.raises(ConfigError, match="--truth"):
        annotate_round(9)
    (zones_tmp.restricted / "demo-truth" / "seed-1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="unknown noise level"):
        annotate_round(9, noise="extreme")
