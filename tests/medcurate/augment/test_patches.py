"""GAN training patches: train rows only, lesions centred, normal tissue from inside the body."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcurate.augment.patches import (
    PatchSet,
    crop,
    extract_patches,
    training_rows,
)
from medcurate.io import write_nifti
from medcurate.store.manifest import SAMPLE_COLUMNS

SHAPE = (48, 48, 10)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
AFFINE[:3, 3] = (-19.2, -19.2, -12.5)
PLANTED = 0.4321  # only the validation volume holds it (train values are on a 0.01 grid)


def phantom(seed: int, lesion: tuple[int, int, int] | None, planted: bool = False):
    """A CT-like volume in [0, 1]: air 0, an elliptic body ~0.4 with noise on a 0.01 grid, a
    bright bone block, and optionally a bright ellipsoid lesion (returned as a mask)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]]
    body = ((x - 24) / 21) ** 2 + ((y - 24) / 19) ** 2 < 1
    vol = np.where(body, 0.4 + rng.normal(0, 0.03, SHAPE), 0.0)
    vol[20:26, 36:40, :] = 0.95  # bone
    mask = np.zeros(SHAPE, dtype=np.uint8)
    if lesion is not None:
        ci, cj, ck = lesion
        mask[((x - ci) / 5) ** 2 + ((y - cj) / 4) ** 2 + ((z - ck) / 3) ** 2 <= 1] = 1
        vol[mask > 0] = 0.8
    vol = np.round(np.clip(vol, 0, 1), 2)
    if planted:
        vol[body] = PLANTED
    return vol.astype(np.float32), mask


def make_tree(root: Path) -> tuple[pd.DataFrame, Path, Path]:
    """volumes/ and labels/ under ``root`` and a splits table: train normal N1-N3, abnormal A1
    (central lesion), A2 (lesion at the border), A3 (no mask), unlabelled U1, an MR row, a
    synthetic row; validation V1 (planted value, abnormal with mask) and V2; test T1."""
    vols, labs = root / "volumes", root / "labels"
    spec = [
        # sample, split, label, lesion, with mask, modality, synthetic, planted
        ("N1", "train", "normal", None, False, "CT", False, False),
        ("N2", "train", "normal", None, False, "CT", False, False),
        ("N3", "train", "normal", None, False, "CT", False, False),
        ("A1", "train", "abnormal", (30, 20, 5), True, "CT", False, False),
        ("A2", "train", "abnormal", (40, 8, 4), True, "CT", False, False),
        ("A3", "train", "abnormal", (24, 24, 5), False, "CT", False, False),
        ("U1", "train", "unlabelled", None, False, "CT", False, False),
        ("M1", "train", "normal", None, False, "MR", False, False),
        ("S1", "train", "abnormal", (24, 24, 5), True, "CT", True, False),
        ("V1", "validation", "abnormal", (24, 24, 5), True, "CT", False, True),
        ("V2", "validation", "normal", None, False, "CT", False, True),
        ("T1", "test", "abnormal", (24, 24, 5), True, "CT", False, True),
    ]
    rows = []
    for i, (sid, split, label, lesion, has_mask, modality, synthetic, planted) in enumerate(spec):
        vol, mask = phantom(i, lesion, planted)
        if modality == "MR":
            vol = (vol - 0.3) * 4.0  # z-scored-like values outside [0, 1]
        sha = write_nifti(vols / f"{sid}.nii.gz", vol, AFFINE)
        mask_path = None
        if has_mask:
            mask_path = f"masks/{sid}.nii.gz"
            write_nifti(labs / mask_path, mask, AFFINE, dtype="uint8")
        row: dict[str, object] = {c: None for c in SAMPLE_COLUMNS}
        row.update(
            sample_id=sid,
            patient=f"P{i:02d}",
            label=label,
            modality=modality,
            manufacturer="ACME",
            site=f"site-{i % 2}",
            sex="F" if i % 2 else "M",
            age_years=40.0 + i,
            out_shape="48x48x10",
            out_spacing="0.8x0.8x2.5",
            transform_config_hash=f"tc{i}",
            nifti_path=f"{sid}.nii.gz",
            nifti_sha256=sha,
            mask_path=mask_path,
            synthetic=synthetic,
            split=split,
            fold=0 if split == "train" else -1,
        )
        rows.append(row)
    return pd.DataFrame(rows), vols, labs


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("zones"))


def test_training_rows_are_real_train_ct_normal_or_masked_abnormal(tree):
    splits, _, _ = tree
    assert list(training_rows(splits)["sample_id"]) == ["A1", "A2", "N1", "N2", "N3"]
    assert list(training_rows(splits, modality="MR")["sample_id"]) == ["M1"]
    with pytest.raises(ValueError, match="split"):
        training_rows(splits.drop(columns=["split"]))


def test_extract_refuses_validation_test_and_synthetic_rows(tree):
    splits, vols, labs = tree
    for sid in ("V1", "T1"):
        with pytest.raises(ValueError, match="train split"):
            extract_patches(splits[splits["sample_id"].isin(["N1", sid])], vols, labs)
    with pytest.raises(ValueError, match="synthetic"):
        extract_patches(splits[splits["sample_id"].eq("S1")], vols, labs)
    with pytest.raises(ValueError, match="unlabelled"):
        extract_patches(splits[splits["sample_id"].eq("U1")], vols, labs)


def test_patches_hold_only_train_voxels(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits), vols, labs, seed=3)
    assert set(ps.sample_ids) == {"A1", "A2", "N1", "N2", "N3"}
    assert not np.isclose(ps.images[:, 0], PLANTED, atol=1e-6).any()
    # the planted value is findable when a validation-like volume is read as train
    leaked = splits[splits["sample_id"].eq("V2")].assign(split="train")
    assert np.isclose(extract_patches(leaked, vols, labs).images[:, 0], PLANTED, atol=1e-6).any()


def test_patch_set_shapes_dtypes_and_subset(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits), vols, labs, size=32)
    n = len(ps)
    assert ps.images.shape == (n, 2, 32, 32) and ps.images.dtype == np.float32
    assert ps.labels.dtype == np.int64 and ps.positions.dtype == np.int64
    assert ps.patients.dtype == object and ps.sample_ids.dtype == object
    assert ps.images.min() >= 0.0 and ps.images.max() <= 1.0
    assert set(np.unique(ps.images[:, 1])) <= {0.0, 1.0}
    assert (ps.labels == 0).sum() == 3 * 8  # 8 normal patches from each of N1-N3
    sub = ps.subset(ps.labels == 1)
    assert len(sub) == int((ps.labels == 1).sum()) and set(sub.sample_ids) == {"A1", "A2"}
    assert np.array_equal(sub.images, ps.images[ps.labels == 1])


def test_lesion_patches_are_centred_and_evenly_spread(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits), vols, labs, lesion_slices_per_sample=4)
    a1 = ps.subset(ps.sample_ids == "A1")
    assert (a1.labels == 1).all() and len(a1) == 4
    assert (a1.images[:, 1, 16, 16] == 1).all()
    assert list(a1.positions) == [2, 4, 6, 8]  # lesion slices 2..8, spread end to end
    assert np.allclose(a1.images[:, 0, 16, 16], 0.8, atol=1e-6)


def test_lesion_at_the_border_is_clamped_and_whole(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits), vols, labs, lesion_slices_per_sample=20)
    a2 = ps.subset(ps.sample_ids == "A2")
    from medcurate.io import read_nifti

    mask, _ = read_nifti(labs / "masks/A2.nii.gz")
    assert list(a2.positions) == [int(z) for z in np.flatnonzero(mask.any(axis=(0, 1)))]
    for patch, z in zip(a2.images, a2.positions, strict=True):
        assert patch[1].sum() == mask[:, :, z].sum()  # the whole lesion is in the window


def test_normal_patches_are_inside_the_body_with_empty_masks(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits), vols, labs, seed=1)
    normal = ps.subset(ps.labels == 0)
    assert (normal.images[:, 1] == 0).all()
    body = (normal.images[:, 0] > 0.05).mean(axis=(1, 2))
    assert body.min() >= 0.8


def test_deterministic_in_seed(tree):
    splits, vols, labs = tree
    rows = training_rows(splits)
    a = extract_patches(rows, vols, labs, seed=5)
    b = extract_patches(rows, vols, labs, seed=5)
    c = extract_patches(rows, vols, labs, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.positions, b.positions)
    assert not np.array_equal(a.images[a.labels == 0], c.images[c.labels == 0])
    assert np.array_equal(a.images[a.labels == 1], c.images[c.labels == 1])
    # a sample's patches do not depend on the other rows
    alone = extract_patches(rows[rows["sample_id"].eq("N2")], vols, labs, seed=5)
    assert np.array_equal(alone.images, a.images[a.sample_ids == "N2"])


def test_mr_is_rescaled_to_unit_range(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits, modality="MR"), vols, labs, normal_per_sample=4)
    assert len(ps) == 4 and set(ps.patients) == {"P07"}
    assert ps.images.min() >= 0.0 and ps.images.max() <= 1.0 and ps.images[:, 0].max() > 0.3


def test_small_slices_are_padded_with_the_slice_minimum(tmp_path):
    vol = np.full((20, 24, 1), 0.3, dtype=np.float32)
    vol[0, 0, 0] = 0.1
    mask = np.zeros((20, 24, 1), dtype=np.uint8)
    mask[8:12, 10:14, 0] = 1
    write_nifti(tmp_path / "v.nii.gz", vol, np.eye(4))
    write_nifti(tmp_path / "m.nii.gz", mask, np.eye(4), dtype="uint8")
    rows = pd.DataFrame(
        [dict(sample_id="X", patient="P", label="abnormal", modality="CT", split="train",
              synthetic=False, nifti_path="v.nii.gz", mask_path="m.nii.gz")]
    )  # fmt: skip
    ps = extract_patches(rows, tmp_path, tmp_path, size=32)
    assert ps.images.shape == (1, 2, 32, 32) and list(ps.positions) == [0]
    img = ps.images[0, 0]
    assert img[0, 0] == pytest.approx(0.1) and img[31, 31] == pytest.approx(0.1)
    assert ps.images[0, 1].sum() == 16


def test_crop_clamps_inside_and_pads():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert np.array_equal(crop(a, (0, 0), 4, -1), a[:4, :4])
    assert np.array_equal(crop(a, (9, 9), 4, -1), a[6:, 6:])
    big = crop(a, (5, 5), 12, -1)
    assert np.array_equal(big[1:11, 1:11], a) and (big[0] == -1).all()


def test_empty_rows_give_an_empty_patch_set(tree):
    splits, vols, labs = tree
    ps = extract_patches(training_rows(splits).iloc[:0], vols, labs)
    assert isinstance(ps, PatchSet) and len(ps) == 0 and ps.images.shape == (0, 2, 32, 32)
