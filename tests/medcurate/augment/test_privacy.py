"""Memorization check: copies and flipped copies are caught and named; new images mostly pass."""

import numpy as np
import pytest

from medcurate.augment.privacy import (
    ncc_matrix,
    nearest_records,
    privacy_filter,
    real_reference,
)


def patients(n_patients: int, slices: int, seed: int, size: int = 32):
    """Slices of 3D-ish phantoms: per patient a body ellipse and two off-centre lesions whose
    radii change slice to slice, so neighbouring slices of one patient are near-copies."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, ids = [], []
    for p in range(n_patients):
        cx, cy = 0.5 + rng.uniform(-0.1, 0.1, 2)
        rx, ry = rng.uniform(0.25, 0.42, 2)
        lesions = rng.uniform(0.25, 0.75, (2, 2))
        lr = rng.uniform(0.04, 0.1, 2)
        li = rng.uniform(0.3, 0.7, 2)
        for z in range(slices):
            grow = 1 + 0.3 * np.sin(np.pi * (z + 1) / (slices + 1))
            img = 0.35 * (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < grow)
            for (lx, ly), r, i in zip(lesions, lr, li, strict=True):
                img = img + i * (((xx - lx) ** 2 + (yy - ly) ** 2) < (r * grow) ** 2)
            img = img + rng.normal(0, 0.03, img.shape)
            images.append(np.clip(img, 0, 1))
            ids.append(f"P{seed:02d}{p:03d}")
    return np.asarray(images, dtype=np.float32)[:, None], np.asarray(ids)


def test_ncc_of_image_with_itself_negative_and_constant():
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 32, 32)).astype(np.float32)
    const = np.full((1, 1, 32, 32), 0.4, dtype=np.float32)
    m = ncc_matrix(x, np.concatenate([x, -x, const]))
    assert m.shape == (3, 7)
    np.testing.assert_allclose(np.diag(m[:, :3]), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.diag(m[:, 3:6]), -1.0, atol=1e-9)
    np.testing.assert_array_equal(m[:, 6], 0.0)
    assert abs(m[0, 1]) < 0.2  # independent noise images are uncorrelated


def test_ncc_matrix_large_is_chunked_and_matches_direct():
    rng = np.random.default_rng(1)
    a = rng.random((2000, 1, 32, 32)).astype(np.float32)
    m = ncc_matrix(a, a)
    assert m.shape == (2000, 2000)
    flat = a.reshape(2000, -1).astype(np.float64)
    flat = flat - flat.mean(1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(m[1500:1510, :50], flat[1500:1510] @ flat[:50].T, atol=1e-12)


@pytest.fixture(scope="module")
def train():
    return patients(40, 5, seed=1)


def test_reference_leaves_out_the_patients_own_slices(train):
    x, ids = train
    twin = np.concatenate([x, x[:1]])  # patient 0 now holds two identical slices
    twin_ids = np.concatenate([ids, ids[:1]])
    ref = real_reference(twin, twin_ids)
    assert (ref["ncc_patient"] != ref["patient"]).all()
    ncc = ref["ncc_max"].to_numpy()
    assert ncc[0] < 0.99 and ncc[-1] < 0.99 and ncc.max() < 0.99
    # without the patient rule the twin would match itself perfectly
    assert ncc_matrix(twin[:1], twin[-1:])[0, 0] == pytest.approx(1.0)


def test_reference_needs_two_patients(train):
    x, _ = train
    with pytest.raises(ValueError, match="at least 2 patients"):
        real_reference(x[:5], np.array(["P"] * 5))


def test_copies_and_flipped_copies_are_dropped_and_named(train):
    x, ids = train
    rng = np.random.default_rng(7)
    fresh, _ = patients(20, 5, seed=2)
    near_copy = x[17] + rng.normal(0, 0.01, x[17].shape).astype(np.float32)
    mirrored = x[63][..., ::-1]
    synth = np.concatenate([fresh, near_copy[None], mirrored[None]])
    nearest = nearest_records(synth, x, ids)
    result = privacy_filter(nearest, real_reference(x, ids), quantile=0.05)

    copy_i, mirror_i = len(fresh), len(fresh) + 1
    assert not result.keep[copy_i] and not result.keep[mirror_i]
    reasons = dict(zip(result.dropped.tolist(), result.reasons, strict=True))
    assert f"patient {ids[17]}" in reasons[copy_i]
    assert f"patient {ids[63]}, flipped horizontally" in reasons[mirror_i]
    row = nearest.iloc[mirror_i]
    assert row["flipped"] and row["ncc_train_index"] == 63 and row["ncc_max"] > 0.999
    assert nearest.iloc[copy_i]["ncc_train_index"] == 17 and not nearest.iloc[copy_i]["flipped"]
    # genuinely new patients from the same generator mostly pass
    assert result.keep[: len(fresh)].mean() >= 1 - 2 * 0.05
    ncc_t = result.thresholds["ncc"]
    assert ncc_t is not None and ncc_t < 0.99


def test_without_flips_the_mirrored_copy_is_missed(train):
    x, ids = train
    mirrored = x[63:64][..., ::-1]
    nearest = nearest_records(mirrored, x, ids, flips=False)
    assert nearest["ncc_max"].to_numpy()[0] < 0.99
    assert not nearest["flipped"].to_numpy()[0]


def test_embedding_criterion_and_determinism(train):
    x, ids = train
    fresh, _ = patients(20, 5, seed=3)
    synth = np.concatenate([fresh, x[5:6]])
    feats = lambda a: a.reshape(len(a), -1)[:, ::8]  # noqa: E731 - any fixed feature map
    nearest = nearest_records(synth, x, ids, feats(synth), feats(x))
    ref = real_reference(x, ids, feats(x))
    first = privacy_filter(nearest, ref, quantile=0.05)
    again = privacy_filter(nearest_records(synth, x, ids, feats(synth), feats(x)), ref, 0.05)
    assert first.thresholds == again.thresholds and first.reasons == again.reasons
    np.testing.assert_array_equal(first.keep, again.keep)
    assert nearest.iloc[-1]["emb_dist"] == pytest.approx(0.0, abs=1e-6)
    assert nearest.iloc[-1]["emb_patient"] == ids[5]
    assert "embedding distance" in first.reasons[-1] and "ncc" in first.reasons[-1]
    emb_t = first.thresholds["emb_dist"]
    assert emb_t is not None and emb_t > 0
    assert first.dropped_share <= 2 * 0.05 + 1 / len(synth)


def test_features_must_be_given_for_both(train):
    x, ids = train
    with pytest.raises(ValueError, match="both"):
        nearest_records(x[:2], x, ids, synth_features=x[:2].reshape(2, -1))


def test_quantile_is_validated(train):
    x, ids = train
    nearest = nearest_records(x[:3], x, ids)
    with pytest.raises(ValueError, match="quantile"):
        privacy_filter(nearest, real_reference(x, ids), quantile=0.7)
