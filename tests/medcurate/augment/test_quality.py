"""Quality metrics: known answers (identical sets, shifts, collapse) and a deterministic encoder."""

import numpy as np
import pytest
import torch

from medcurate.augment.quality import (
    QualityReport,
    _ms_ssim_pairs,
    diversity,
    mmd,
    ms_ssim,
    pixel_features,
    prdc_scores,
    quality_report,
    train_encoder,
)


def phantoms(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Body ellipse and a lesion; class 1 adds a bright square, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = np.arange(n) % 2
    images = []
    for c in labels:
        cx, cy = 0.5 + rng.uniform(-0.1, 0.1, 2)
        rx, ry = rng.uniform(0.25, 0.42, 2)
        lx, ly = rng.uniform(0.3, 0.7, 2)
        img = 0.35 * (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1)
        img = img + 0.4 * ((xx - lx) ** 2 + (yy - ly) ** 2 < rng.uniform(0.04, 0.1) ** 2)
        if c:
            sx, sy = rng.uniform(0.3, 0.6, 2)
            img = img + 0.5 * ((abs(xx - sx) < 0.08) & (abs(yy - sy) < 0.08))
        images.append(np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1))
    return np.asarray(images, dtype=np.float32)[:, None], labels


def gaussians(seed: int, n: int = 2000, d: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.slow
def test_prdc_matches_the_oracle_and_drops_for_a_shift():
    # Naeem et al.'s oracle (N=10k, d=1000) is precision ~0.48; at N=2000, d=64 two independent
    # draws give precision/recall ~0.71, density ~1, coverage ~1 - 2**-5 = 0.97 (seeds 0-2).
    real = gaussians(0)
    same = prdc_scores(real, gaussians(1), nearest_k=5)
    assert set(same) == {"precision", "recall", "density", "coverage"}
    assert 0.9 < same["density"] < 1.1
    assert 0.93 < same["coverage"] < 1.0
    assert 0.62 < same["precision"] < 0.8 and 0.62 < same["recall"] < 0.8

    shifted = prdc_scores(real, gaussians(1) + 0.5)
    assert shifted["precision"] < same["precision"] - 0.25
    assert shifted["coverage"] < 0.6
    assert shifted["density"] < 0.5


def test_prdc_needs_more_samples_than_k():
    with pytest.raises(ValueError, match="nearest_k"):
        prdc_scores(gaussians(0, n=5), gaussians(1, n=5), nearest_k=5)


def test_mmd_is_zero_for_equal_sets_and_grows_with_a_shift():
    x, _ = phantoms(100, seed=1)
    y, _ = phantoms(100, seed=2)
    assert abs(mmd(x, x)) < 1e-3
    assert abs(mmd(x, y)) < 1e-3
    shifts = [mmd(x, np.clip(y + s, 0, 1)) for s in (0.05, 0.1, 0.2)]
    assert 1e-3 < shifts[0] < shifts[1] < shifts[2]
    assert mmd(x, y[:60]) == mmd(x, y[:60])  # subsampling to equal counts is seeded


def test_ms_ssim_of_identical_images_is_one_at_32_and_64_px():
    for size in (32, 64):
        x, _ = phantoms(10, seed=3, size=size)
        assert ms_ssim(x[:1], x[:1].copy(), pairs=20, seed=0) == pytest.approx(1.0)
        assert ms_ssim(x, x[::-1], pairs=50, seed=0) < 0.9
    with pytest.raises(ValueError, match="at least 28 px"):
        ms_ssim(np.zeros((2, 1, 16, 16)), np.zeros((2, 1, 16, 16)))


def test_diversity_flags_mode_collapse():
    x, _ = phantoms(50, seed=4)
    collapsed = np.repeat(x[:1], 50, axis=0)
    assert diversity(collapsed, pairs=100, seed=0) > 0.999
    varied = diversity(x, pairs=100, seed=0)
    assert varied < 0.7
    assert varied == diversity(x, pairs=100, seed=0)


def test_pixel_features_are_a_fixed_projection():
    x, _ = phantoms(20, seed=5, size=64)
    f = pixel_features(x, dim=16, seed=3)
    assert f.shape == (20, 16) and f.dtype == np.float32
    np.testing.assert_array_equal(f, pixel_features(x, dim=16, seed=3))
    assert not np.array_equal(f, pixel_features(x, dim=16, seed=4))


@pytest.mark.slow
def test_encoder_is_deterministic_learns_labels_and_restores_torch():
    x, y = phantoms(300, seed=6)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    enc = train_encoder(x, y, seed=0, epochs=4)
    assert torch.rand(1) == before  # the caller's random stream is untouched
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    test_x, test_y = phantoms(100, seed=7)
    assert enc.features(test_x).shape == (100, 32)
    assert (enc.predict(test_x) == test_y).mean() > 0.9

    small = [train_encoder(x[:64], y[:64], seed=s, epochs=1) for s in (0, 0, 1)]
    f = [e.features(test_x) for e in small]
    np.testing.assert_array_equal(f[0], f[1])
    assert not np.array_equal(f[0], f[2])

    # conditional fidelity: synthetic images under the wrong label are caught
    report = quality_report(x, test_x, y, 1 - test_y, encoder=enc, seed=0, pairs=50)
    assert report.features == "encoder"
    assert report.label_agreement is not None and report.label_agreement < 0.1
    assert report.reference_label_agreement is not None and report.reference_label_agreement > 0.9


@pytest.mark.slow
def test_quality_report_puts_a_real_yardstick_beside_each_number():
    real, real_y = phantoms(300, seed=8)
    groups = np.arange(300) // 3  # three images per "patient"
    good, good_y = phantoms(150, seed=9)
    report = quality_report(real, good, real_y, good_y, seed=0, real_groups=groups, pairs=100)
    assert isinstance(report, QualityReport) and report.features == "pixel"
    assert report.n_compared == 150
    table = report.table()
    assert list(table["metric"]) == [
        "mmd",
        "ms_ssim",
        "diversity",
        "precision",
        "recall",
        "density",
        "coverage",
    ]
    syn, ref = report.synthetic, report.reference
    assert abs(syn["coverage"] - ref["coverage"]) < 0.15
    assert abs(syn["diversity"] - ref["diversity"]) < 0.1
    assert set(report.per_class) == {"0", "1"}

    noise = np.random.default_rng(0).normal(0, 0.005, (150, 1, 32, 32)).astype(np.float32)
    collapsed = np.clip(good[:1] + noise, 0, 1)
    bad = quality_report(real, collapsed, real_y, good_y, seed=0, real_groups=groups, pairs=100)
    assert bad.synthetic["diversity"] > 0.95 > bad.reference["diversity"]
    assert bad.synthetic["coverage"] < 0.2 < bad.reference["coverage"]
    again = quality_report(real, collapsed, real_y, good_y, seed=0, real_groups=groups, pairs=100)
    assert again.synthetic == bad.synthetic and again.reference == bad.reference


def test_small_sets_are_compared_over_every_pair() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((5, 1, 32, 32)).astype(np.float32)
    y = rng.random((4, 1, 32, 32)).astype(np.float32)
    i, j = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
    every = float(_ms_ssim_pairs(x[i.ravel()], y[j.ravel()]).mean())
    # 20 pairs <= 500: the exact mean over all of them, whatever the seed
    assert ms_ssim(x, y, pairs=500, seed=0) == pytest.approx(every)
    assert ms_ssim(x, y, pairs=500, seed=1) == ms_ssim(x, y, pairs=500, seed=0)
    a, b = np.triu_indices(5, k=1)
    assert diversity(x, pairs=10, seed=3) == pytest.approx(float(_ms_ssim_pairs(x[a], x[b]).mean()))
    assert diversity(x, pairs=9, seed=0) != diversity(x, pairs=9, seed=1)  # 10 pairs > 9: drawn


def test_a_half_with_few_samples_gets_a_smaller_k_not_a_crash() -> None:
    """The demo's lesion patches: few patients, so a half can hold no more than k=5 patches."""
    real, real_y = phantoms(10, seed=8)
    groups = np.arange(10)  # ten patients of one patch each: half B holds 5
    synth, synth_y = phantoms(10, seed=9)
    report = quality_report(real, synth, real_y, synth_y, seed=0, real_groups=groups, pairs=50)
    assert report.n_compared == 5  # k=5 would have refused these sets
    for side in (report.synthetic, report.reference):
        assert 0.0 <= side["coverage"] <= 1.0 and 0.0 <= side["precision"] <= 1.0

    one, one_y = phantoms(1, seed=9)  # two synthetic samples: too few for k=1, so n/a
    tiny = quality_report(real, np.repeat(one, 2, 0), real_y, np.repeat(one_y, 2), seed=0,
                          real_groups=groups, pairs=50)  # fmt: skip
    assert np.isnan(tiny.synthetic["coverage"]) and np.isnan(tiny.reference["coverage"])
