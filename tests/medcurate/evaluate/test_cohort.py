"""Slices from volumes: labels, scaling, resizing, 2D images and pooling to sample scores."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcurate.evaluate.cohort import (
    UNKNOWN,
    SliceSet,
    _fields,
    concat_slices,
    depth,
    load_slices,
    sample_scores,
    save_slices,
    slices_from_volumes,
    thin,
    thin_rows,
)
from tests.evaluate_helpers import AFFINE, blob_volumes


def _save(path: Path, arr: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))
    return str(path)


def test_labels_follow_mask_and_class(tmp_path: Path) -> None:
    v = np.random.default_rng(0).random((20, 16, 4)).astype(np.float32)
    m = np.zeros((20, 16, 4), np.uint8)
    m[5:8, 5:8, 1] = 1
    img = _save(tmp_path / "v.nii.gz", v)
    items = [
        {"image": img, "label": _save(tmp_path / "m.nii.gz", m), "class": "abnormal"},
        {"image": img, "class": "normal"},
        {"image": img, "class": "abnormal"},
        {"image": img, "class": "unlabelled"},
    ]
    s = slices_from_volumes(items, size=8)
    assert s.images.shape == (16, 1, 8, 8) and s.masks.shape == (16, 1, 8, 8)
    assert s.images.dtype == np.float32 and s.masks.dtype == np.uint8
    assert s.labels.tolist() == [0, 1, 0, 0] + [0] * 4 + [UNKNOWN] * 8
    assert s.sample.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert s.position.tolist() == list(range(4)) * 4
    assert s.masks[1].any() and not s.masks[0].any()
    assert set(np.unique(s.masks)) <= {0, 1}
    assert len(s.known()) == 8


def test_scaling_is_per_volume_percentiles(tmp_path: Path) -> None:
    v = np.linspace(0, 1000, 10 * 10 * 3, dtype=np.float32).reshape(10, 10, 3)
    v[0, 0, 0] = 1e6  # an outlier does not squash the rest
    s = slices_from_volumes([{"image": _save(tmp_path / "v.nii.gz", v), "class": "normal"}], 10)
    assert s.images.min() == 0.0 and s.images.max() == 1.0
    assert 0.2 < float(np.median(s.images)) < 0.8


def test_2d_image_and_single_slice(tmp_path: Path) -> None:
    a = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    items = [
        {"image": _save(tmp_path / "a.nii.gz", a), "class": "normal"},
        {"image": _save(tmp_path / "b.nii.gz", a[:, :, None]), "class": "normal"},
    ]
    s = slices_from_volumes(items, size=6)
    assert len(s) == 2 and np.array_equal(s.images[0], s.images[1])


def test_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    items = [
        {
            "image": _save(tmp_path / "v.nii.gz", np.zeros((8, 8, 2), np.float32)),
            "label": _save(tmp_path / "m.nii.gz", np.zeros((8, 8, 3), np.uint8)),
            "class": "abnormal",
        }
    ]
    with pytest.raises(ValueError, match="mask shape"):
        slices_from_volumes(items, 8)


def test_unreadable_image_names_no_path(tmp_path: Path) -> None:
    bad = tmp_path / "secret-name.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ValueError) as e:
        slices_from_volumes([{"image": str(bad), "class": "normal"}])
    assert "secret-name" not in str(e.value) and "sample 0" in str(e.value)


def test_empty_items() -> None:
    s = slices_from_volumes([], size=16)
    assert len(s) == 0 and s.images.shape == (0, 1, 16, 16)


def test_blob_volumes_round_trip(tmp_path: Path) -> None:
    items = blob_volumes(tmp_path, 6, size=(24, 24, 6), seed=3, prevalence=0.5)
    assert [d["class"] for d in items].count("abnormal") == 3
    assert all(("label" in d) == (d["class"] == "abnormal") for d in items)
    assert {"sample_id", "patient", "site", "sex", "age_years", "fold"} <= set(items[0])
    img: object = nib.load(items[0]["image"])
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")  # type: ignore[attr-defined]
    s = slices_from_volumes(items, size=16)
    assert len(s) == 36
    abnormal = [i for i, d in enumerate(items) if d["class"] == "abnormal"]
    for i in range(6):
        has = bool((s.labels[s.sample == i] == 1).any())
        assert has == (i in abnormal)
    # lesions are brighter than the tissue around them
    les = s.images[s.masks > 0].mean()
    body = s.images[(s.masks == 0) & (s.images > 0.3)].mean()
    assert les > body + 0.1
    again = blob_volumes(tmp_path / "again", 6, size=(24, 24, 6), seed=3)
    assert np.array_equal(slices_from_volumes(again, 16).images, s.images)


def test_bright_site_changes_only_that_site(tmp_path: Path) -> None:
    items = blob_volumes(
        tmp_path,
        4,
        size=(24, 24, 4),
        seed=0,
        prevalence=0.0,
        site_of=["a", "b", "a", "b"],
        bright_site="b",
    )
    raw = [np.asarray(nib.load(d["image"]).dataobj) for d in items]  # type: ignore[attr-defined]
    stripe = [float(r[0].mean()) for r in raw]
    assert stripe[1] > stripe[0] + 0.3 and stripe[3] > stripe[2] + 0.3


def test_sample_scores_pools() -> None:
    scores = np.array([0.1, 0.9, 0.2, 0.5, 0.4, 0.3, 0.8])
    sample = np.array([0, 0, 1, 1, 1, 1, 3])
    assert np.allclose(sample_scores(scores, sample, 4)[[0, 1, 3]], [0.9, 0.5, 0.8])
    top3 = sample_scores(scores, sample, 4, pool="top3mean")
    assert np.isclose(top3[0], 0.5) and np.isclose(top3[1], 0.4) and np.isclose(top3[3], 0.8)
    assert np.isnan(sample_scores(scores, sample, 4)[2])
    with pytest.raises(ValueError, match="pool"):
        sample_scores(scores, sample, 4, pool="mean")


def test_threads_read_the_same_slices_and_the_cache_round_trips(tmp_path: Path) -> None:
    items = blob_volumes(tmp_path, 5, size=(24, 24, 6), seed=4, prevalence=0.6)
    one = slices_from_volumes(items, size=16, workers=1)
    two = slices_from_volumes(items, size=16, workers=2)
    for a, b in zip(_fields(one), _fields(two), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    save_slices({"train": one, "test": one.subset(one.sample == 0)}, tmp_path / "s.npz")
    back = load_slices(tmp_path / "s.npz")
    assert sorted(back) == ["test", "train"] and len(back["test"]) == 6
    for a, b in zip(_fields(back["train"]), _fields(one), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def _peak(f) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _nbytes(s: SliceSet) -> int:
    return sum(a.nbytes for a in _fields(s))


def test_slices_are_filled_in_place_so_memory_is_the_result_not_twice_it(tmp_path: Path) -> None:
    """Issue 16: the slices were per-volume parts joined by np.concatenate, which held every
    part and the result at once (twice the result at its peak). Now the result is sized from
    the headers and filled as volumes are read: the peak is the result plus a volume or two,
    for N volumes as for 2N."""
    items = blob_volumes(tmp_path, 16, size=(24, 24, 10), seed=2)
    for n in (8, 16):
        result = _nbytes(slices_from_volumes(items[:n], size=48))
        peak = _peak(lambda n=n: slices_from_volumes(items[:n], size=48))
        # one volume's slices are 1/n of the result; two threads hold two at most, plus temps
        assert peak < result * (1 + 4 / n) + 2**20, (n, peak, result)
        assert peak < 1.75 * result, (n, peak, result)


def test_depth_reads_the_slice_count_from_the_header(tmp_path: Path) -> None:
    v = np.zeros((6, 5, 4), np.float32)
    ras = _save(tmp_path / "ras.nii.gz", v)
    # a volume stored with z first: as_closest_canonical makes its 6 rows the slices
    lps = tmp_path / "zfirst.nii.gz"
    nib.save(
        nib.Nifti1Image(v, np.array([[0, 0, 2, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])),
        lps,
    )
    flat = _save(tmp_path / "flat.nii.gz", np.zeros((7, 7), np.float32))
    for path in (ras, str(lps), flat):
        item = {"image": path, "class": "normal"}
        assert depth(item) == len(slices_from_volumes([item], size=4))
    assert [depth({"image": p}) for p in (ras, str(lps), flat)] == [4, 6, 1]


def test_concat_keeps_parts_in_order() -> None:
    a = SliceSet(
        np.ones((2, 1, 3, 3), np.float32),
        np.zeros((2, 1, 3, 3), np.uint8),
        np.array([0, 1], np.int8),
        np.zeros(2, np.int64),
        np.arange(2, dtype=np.int64),
    )
    b = a.subset(np.array([1]))
    both = concat_slices([a, b])
    for got, x, y in zip(_fields(both), _fields(a), _fields(b), strict=True):
        assert np.array_equal(got, np.concatenate([x, y])) and got.dtype == x.dtype


def test_thin_rows_is_thin_one_sample_at_a_time() -> None:
    rng = np.random.default_rng(4)
    labels = rng.choice(np.array([0, 1, UNKNOWN], np.int8), size=60, p=[0.6, 0.2, 0.2])
    sample = np.repeat(np.arange(4), 15)
    s = SliceSet(
        rng.random((60, 1, 2, 2)).astype(np.float32),
        np.zeros((60, 1, 2, 2), np.uint8),
        labels,
        sample,
        np.tile(np.arange(15), 4),
    )
    for per in (0, 3, 20):
        keep = np.concatenate([thin_rows(labels[sample == k], per) for k in range(4)])
        assert np.array_equal(thin(s, per).position, s.position[keep])
    assert thin(s, 20) is s  # nothing to drop: no copy
