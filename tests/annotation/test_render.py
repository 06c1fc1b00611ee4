from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from annotation.render import (
    CT_SOFT_TISSUE,
    Window,
    auto_window,
    candidate_slices,
    masks_to_volume,
    pixel_to_voxel,
    render_volume,
    select_slices,
    slice_pixels,
    volume_mask_slice,
    voxel_to_pixel,
    window_to_uint8,
    write_label_nifti,
)


def test_window_mapping() -> None:
    w = Window(40, 400)  # -160 .. 240 HU
    out = window_to_uint8(np.array([-1000, -160, 40, 240, 3000]), w)
    assert out.tolist() == [0, 0, 128, 255, 255]
    assert out.dtype == np.uint8
    assert CT_SOFT_TISSUE.low == -160 and CT_SOFT_TISSUE.high == 240


def test_auto_window_covers_percentiles() -> None:
    vol = np.arange(1000, dtype=float).reshape(10, 10, 10)
    w = auto_window(vol, 1, 99)
    assert w.low == pytest.approx(9.99) and w.high == pytest.approx(989.01)
    assert auto_window(np.zeros((2, 2, 2))).width == 1.0


def test_pixel_voxel_mapping_is_consistent_with_slices() -> None:
    vol = np.arange(3 * 4 * 5).reshape(3, 4, 5)  # (i, j, k)
    img = slice_pixels(vol, 2)
    assert img.shape == (4, 3)  # rows = j, cols = i
    for row in range(4):
        for col in range(3):
            i, j, k = pixel_to_voxel(row, col, 2)
            assert img[row, col] == vol[i, j, k]
            assert voxel_to_pixel(i, j, k) == (row, col, 2)


def test_select_slices() -> None:
    assert select_slices(10, 3) == [0, 3, 6, 9]
    assert select_slices(12, 3) == [1, 4, 7, 10]  # centred: both ends covered alike
    assert select_slices(10, 3, candidates=[4, 5, 99, -1]) == [0, 3, 4, 5, 6, 9]
    assert select_slices(0, 3) == []
    with pytest.raises(ValueError):
        select_slices(5, 0)


def test_candidate_slices() -> None:
    cand = np.zeros((4, 4, 6), dtype=bool)
    cand[1, 2, 3] = cand[0, 0, 5] = True
    assert candidate_slices(cand) == [3, 5]


def test_render_is_deterministic_and_named_by_pseudonym(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).normal(0, 200, (16, 12, 5))
    a = render_volume(vol, "S-0001", tmp_path / "a", "round-1/images", [0, 2], CT_SOFT_TISSUE)
    render_volume(vol, "S-0001", tmp_path / "b", "round-1/images", [0, 2], CT_SOFT_TISSUE)
    assert [r.relpath for r in a] == [
        "round-1/images/S-0001_k0000.png",
        "round-1/images/S-0001_k0002.png",
    ]
    assert (a[0].height, a[0].width) == (12, 16)
    for r in a:
        assert (tmp_path / "a" / r.relpath).read_bytes() == (
            tmp_path / "b" / r.relpath
        ).read_bytes()
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "a" / a[1].relpath))
    assert np.array_equal(png, window_to_uint8(slice_pixels(vol, 2), CT_SOFT_TISSUE))
    with pytest.raises(ValueError):
        render_volume(vol, "DOE^JOHN", tmp_path, "x", [0], CT_SOFT_TISSUE)


def test_masks_back_into_volume_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((7, 9, 4)) > 0.7
    truth[:, :, 1] = False
    per_slice = {k: volume_mask_slice(truth, k) for k in (0, 2, 3)}
    back = masks_to_volume(per_slice, truth.shape)
    assert np.array_equal(back.astype(bool), truth)
    with pytest.raises(ValueError):
        masks_to_volume({0: np.zeros((7, 9))}, truth.shape)  # not transposed: wrong

    affine = np.array([[0.7, 0, 0, -10], [0, 0.7, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    ref = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=truth.shape).astype(np.float32), affine), str(ref))
    out = write_label_nifti(back, ref, tmp_path / "lab.nii.gz")
    img = nib.load(str(out))
    assert np.allclose(img.affine, affine)
    assert np.array_equal(np.asarray(img.dataobj), back)
    assert img.get_data_dtype() == np.uint8
    with pytest.raises(ValueError):
        write_label_nifti(back[:, :, :2], ref, tmp_path / "bad.nii.gz")
