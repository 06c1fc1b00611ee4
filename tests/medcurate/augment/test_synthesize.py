"""Pasting generated lesions into normal train slices and writing them as synthetic samples."""

import numpy as np
import pandas as pd
import pytest

from medcurate.augment.patches import training_rows
from medcurate.augment.synthesize import (
    EXTRA_COLUMNS,
    Background,
    background_slices,
    choose_centre,
    paste,
    slice_affine,
    write_synthetic,
)
from medcurate.io import read_nifti, sha256_file
from medcurate.store.manifest import SAMPLE_COLUMNS, build_manifest
from tests.medcurate.augment.test_patches import AFFINE, make_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("zones"))


@pytest.fixture(scope="module")
def backgrounds(tree):
    splits, vols, _ = tree
    rows = training_rows(splits)
    return background_slices(rows[rows["label"].eq("normal")], vols, per_sample=3)


def lesion_patch(size=32, radius=6.0, value=0.9, blob=False):
    """A generated-looking patch: noisy image, a disk mask as a soft map (and a small blob)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    soft = np.clip(1.2 - np.hypot(yy - size / 2, xx - size / 2) / radius, 0, 1)
    if blob:
        soft[1:3, 1:3] = 0.9
    img = np.clip(0.3 + 0.05 * rng.standard_normal((size, size)) + value * (soft > 0.5), 0, 1)
    return np.stack([img, soft]).astype(np.float32)


def test_paste_changes_only_the_lesion(tree):
    rng = np.random.default_rng(1)
    bg = rng.random((48, 40)).astype(np.float32)
    patch = lesion_patch(blob=True)
    image, mask = paste(bg, patch, (20, 18), feather=2.0)
    assert image.dtype == np.float32 and mask.dtype == np.uint8 and image.shape == bg.shape
    largest = patch[1] > 0.5
    largest[1:3, 1:3] = False
    region = np.zeros(bg.shape, dtype=bool)
    region[4:36, 2:34] = largest  # window starts at (20 - 16, 18 - 16)
    assert np.array_equal(mask.astype(bool), region)  # the blob (a second component) is dropped
    assert np.array_equal(image[~region], bg[~region])
    assert np.allclose(image[20, 18], patch[0, 16, 16])  # deep inside: the patch itself
    edge = region & ~np.pad(region, 1)[2:, 1:-1]  # a pixel whose lower neighbour is outside
    i, j = np.argwhere(edge)[0]
    p = patch[0, i - 4, j - 2]
    assert image[i, j] == pytest.approx(0.5 * bg[i, j] + 0.5 * p, abs=1e-5)


def test_paste_clamps_at_the_border_and_handles_small_slices():
    bg = np.zeros((40, 40), dtype=np.float32)
    patch = lesion_patch()
    _, mask = paste(bg, patch, (0, 39))
    m = patch[1] > 0.5
    assert mask.sum() == m.sum()
    assert np.array_equal(mask[0:32, 8:40].astype(bool), m)
    small = np.zeros((20, 20), dtype=np.float32)
    _, mask = paste(small, patch, (10, 10))
    assert np.array_equal(mask.astype(bool), m[6:26, 6:26])
    empty = patch.copy()
    empty[1] = 0.2
    image, mask = paste(bg, empty, (20, 20))
    assert mask.sum() == 0 and np.array_equal(image, bg)


def test_choose_centre_lands_in_soft_tissue_and_is_deterministic():
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.where(((yy - 32) / 28) ** 2 + ((xx - 32) / 26) ** 2 < 1, 0.4, 0.0)
    img = img + np.where(img > 0, np.random.default_rng(0).normal(0, 0.02, img.shape), 0)
    img[28:36, 40:50] = 0.95  # bone
    img = img.astype(np.float32)
    picks = [choose_centre(img, 16, np.random.default_rng(s)) for s in range(30)]
    assert picks == [choose_centre(img, 16, np.random.default_rng(s)) for s in range(30)]
    assert len(set(picks)) > 5
    for i, j in picks:
        assert 8 <= i <= 56 and 8 <= j <= 56  # the window fits
        assert 0.05 < img[i, j] < 0.9  # not air, not bone
        assert (img[i - 8 : i + 8, j - 8 : j + 8] > 0.05).mean() >= 0.9


def test_background_slices_take_normal_train_rows_only(tree, backgrounds):
    splits, vols, _ = tree
    assert {b.sample_id for b in backgrounds} == {"N1", "N2", "N3"}
    assert all(b.pixels().shape == (48, 48) for b in backgrounds) and len(backgrounds) == 9
    assert backgrounds[0].meta["site"] == "site-0" and backgrounds[0].meta["modality"] == "CT"
    for sid, why in (("V2", "train split"), ("A1", "abnormal")):
        with pytest.raises(ValueError, match=why):
            background_slices(splits[splits["sample_id"].eq(sid)], vols)


def test_write_synthetic_rows_files_and_manifest(tree, backgrounds, tmp_path):
    patches = np.stack([lesion_patch(), lesion_patch(radius=4), lesion_patch()])
    patches[1, 1] = 0.3  # an empty mask after thresholding
    rows, skipped = write_synthetic(patches, backgrounds, tmp_path, "g1", seed=0)
    assert skipped == 1
    assert list(rows.columns) == [*SAMPLE_COLUMNS, *EXTRA_COLUMNS]
    assert list(rows["sample_id"]) == ["syn-g1-0000", "syn-g1-0002"]
    assert rows["synthetic"].dtype == bool and rows["synthetic"].all()
    assert set(rows["patient"]) == {"SYN-g1"} and set(rows["label"]) == {"abnormal"}
    assert set(rows["generator_id"]) == {"g1"} and set(rows["out_shape"]) == {"48x48x1"}
    assert set(rows["out_spacing"]) == {"0.8x0.8x2.5"}
    assert rows["source_round"].isna().all() and rows["agreement"].isna().all()
    by_id = {(b.sample_id, b.slice_index): b for b in backgrounds}
    for rec in rows.to_dict("records"):
        img_file, mask_file = tmp_path / rec["nifti_path"], tmp_path / rec["mask_path"]
        assert rec["nifti_sha256"] == sha256_file(img_file)
        image, affine = read_nifti(img_file)
        mask, mask_affine = read_nifti(mask_file, dtype=np.float32)
        assert image.shape == mask.shape == (48, 48, 1)
        bg = by_id[(rec["background_sample_id"], rec["background_slice"])]
        assert np.allclose(affine, slice_affine(AFFINE, bg.slice_index))
        assert np.allclose(affine[:3, 3], (AFFINE @ [0, 0, bg.slice_index, 1])[:3])
        assert np.allclose(mask_affine, affine)
        outside = mask[:, :, 0] == 0
        assert np.array_equal(image[:, :, 0][outside], bg.pixels()[outside])
        assert mask.sum() > 0 and set(np.unique(mask)) == {0.0, 1.0}
        src = tree[0].set_index("sample_id").loc[bg.sample_id]
        for c in ("site", "sex", "age_years", "modality", "transform_config_hash"):
            assert rec[c] == src[c]
    manifest, sources = build_manifest(
        rows.assign(split="train", fold=-1), tmp_path, labels_root=tmp_path, synthetic_root=tmp_path
    )
    assert manifest["synthetic"].all() and len(sources) == 4
    assert list(manifest["image_sha256"]) == list(rows["nifti_sha256"])


def test_write_synthetic_is_byte_identical_for_a_seed(backgrounds, tmp_path):
    patches = np.stack([lesion_patch(radius=r) for r in (4, 5, 6, 7)])
    a, _ = write_synthetic(patches, backgrounds, tmp_path / "a", "g2", seed=7)
    b, _ = write_synthetic(patches, backgrounds, tmp_path / "b", "g2", seed=7)
    c, _ = write_synthetic(patches, backgrounds, tmp_path / "c", "g2", seed=8)
    pd.testing.assert_frame_equal(a, b)
    for rel in [*a["nifti_path"], *a["mask_path"]]:
        assert sha256_file(tmp_path / "a" / rel) == sha256_file(tmp_path / "b" / rel)
    assert list(a["nifti_sha256"]) != list(c["nifti_sha256"])
    assert len(set(a["background_sample_id"] + a["background_slice"].astype(str))) == 4


def test_write_synthetic_maps_patches_into_mr_units(tmp_path):
    bg_img = np.full((40, 40), -1.0, dtype=np.float32)
    bg_img[4:36, 4:36] = 1.0
    bg = Background("M", 0, bg_img, np.eye(4), lo=-1.0, hi=3.0, meta={"modality": "MR"})
    patch = lesion_patch(value=0.6)
    rows, _ = write_synthetic(patch[None], [bg], tmp_path, "mr", seed=0)
    image, _ = read_nifti(tmp_path / rows.loc[0, "nifti_path"])
    mask, _ = read_nifti(tmp_path / rows.loc[0, "mask_path"])
    inside = image[mask > 0]
    assert inside.max() > 2.0  # [0, 1] patch values back in the background's units
    assert rows.loc[0, "modality"] == "MR"


def test_write_synthetic_refuses_unsafe_ids_and_no_backgrounds(backgrounds, tmp_path):
    with pytest.raises(ValueError, match="generator_id"):
        write_synthetic(lesion_patch()[None], backgrounds, tmp_path, "../x", seed=0)
    with pytest.raises(ValueError, match="background"):
        write_synthetic(lesion_patch()[None], [], tmp_path, "g", seed=0)


def test_backgrounds_hold_no_pixels_until_pasted(backgrounds):
    """Candidate slices are read again when used: none is held, so memory stays flat in the
    number of normal train volumes; the pixels read are the volume's own slice."""
    assert all(b.image is None and b.source is not None for b in backgrounds)
    b = backgrounds[0]
    raw, _ = read_nifti(b.source)
    assert np.array_equal(b.pixels(), np.asarray(raw[:, :, b.slice_index], dtype=np.float32))
