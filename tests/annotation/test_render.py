from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from annotation.render import (
    AXIAL_RAS,
    CT_SOFT_TISSUE,
    LEGACY_AXIAL,
    PLANES,
    SliceMapping,
    Window,
    auto_window,
    candidate_slices,
    context_strip,
    downsample,
    mapping_for,
    masks_to_volume,
    orientation_data,
    pixel_to_voxel,
    projection_mapping,
    render_volume,
    select_slices,
    slice_pixels,
    volume_mask_slice,
    voxel_to_pixel,
    window_to_uint8,
    write_label_nifti,
)

# axis codes of volumes as they come: normalized (RAS), DICOM-like (LPS), flipped, permuted
AXCODES = ["RAS", "LPS", "LAS", "RPI", "ASR", "SLP", "PIR"]


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


@pytest.mark.parametrize("codes", AXCODES)
@pytest.mark.parametrize("plane", PLANES)
def test_pixel_voxel_round_trip_every_plane(plane: str, codes: str) -> None:
    shape = (3, 4, 5)
    vol = np.arange(60).reshape(shape)  # every voxel value is unique
    m = mapping_for(codes, plane)
    for s in range(m.n_slices(shape)):
        img = slice_pixels(vol, s, m)
        assert img.shape == m.image_shape(shape)
        for row in range(img.shape[0]):
            for col in range(img.shape[1]):
                ijk = pixel_to_voxel(row, col, s, shape, m)
                assert img[row, col] == vol[ijk]
                assert voxel_to_pixel(*ijk, shape, m) == (row, col, s)
    assert SliceMapping.parse(m.describe()) == m


@pytest.mark.parametrize("codes", AXCODES)
@pytest.mark.parametrize("plane", PLANES)
def test_mask_volume_mask_round_trip_every_plane(plane: str, codes: str) -> None:
    shape = (7, 9, 6)
    m = mapping_for(codes, plane)
    rng = np.random.default_rng(3)
    drawn = {s: rng.random(m.image_shape(shape)) > 0.6 for s in (0, 2, m.n_slices(shape) - 1)}
    label = masks_to_volume(drawn, shape, m)
    for s, mask in drawn.items():
        assert np.array_equal(volume_mask_slice(label, s, m), mask)
        for row, col in np.argwhere(mask):
            assert label[pixel_to_voxel(row, col, s, shape, m)] == 1
    assert int(label.sum()) == sum(int(v.sum()) for v in drawn.values())
    wrong = m.image_shape(shape)[::-1]
    with pytest.raises(ValueError):
        masks_to_volume({0: np.zeros(wrong)}, shape, m)


def _world_markers(
    affine: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """A volume with three markers placed by WORLD (RAS mm) position: one on the patient's left
    (low x), one anterior (high y), one superior (high z); returns it and their voxels."""
    inv = np.linalg.inv(affine)
    centre = affine @ np.array([(n - 1) / 2 for n in shape] + [1.0])

    def voxel(dx: float, dy: float, dz: float) -> tuple[int, ...]:
        world = centre + np.array([dx, dy, dz, 0.0])
        return tuple(int(np.rint(v)) for v in (inv @ world)[:3])

    vol = np.zeros(shape)
    left, anterior, superior = voxel(-6, 0, 0), voxel(0, 6, 0), voxel(0, 0, 6)
    for v in (left, anterior, superior):
        vol[v] = 1
    return vol, left, anterior, superior


@pytest.mark.parametrize("codes", AXCODES)
def test_radiological_convention_from_world_positions(codes: str) -> None:
    """Patient's left shows on the image's right, anterior and superior at the top, anterior on
    the left of a sagittal image, whatever order and direction the array axes have."""
    import nibabel.orientations as nio

    # array axis a steps 1.5 mm along the world direction its code names (world is RAS+)
    world = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0),
             "S": (2, 1.0), "I": (2, -1.0)}  # fmt: skip
    affine = np.eye(4)
    for a, code in enumerate(codes):
        affine[:3, a] = 0.0
        affine[world[code][0], a] = 1.5 * world[code][1]
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    shape = (15, 15, 15)
    assert "".join(nio.aff2axcodes(affine)) == codes
    vol, left, anterior, superior = _world_markers(affine, shape)  # type: ignore[arg-type]
    centre_col = (shape[0] - 1) / 2  # cubic volume: every image is 15 x 15

    axial = mapping_for(affine, "axial")
    r, c, _ = voxel_to_pixel(*left, shape, axial)
    assert c > centre_col and r == 7  # patient's left: the image's right half
    r, c, _ = voxel_to_pixel(*anterior, shape, axial)
    assert r < 7 and c == 7  # anterior: up
    coronal = mapping_for(affine, "coronal")
    r, c, _ = voxel_to_pixel(*left, shape, coronal)
    assert c > centre_col
    r, c, _ = voxel_to_pixel(*superior, shape, coronal)
    assert r < 7  # superior: up
    sagittal = mapping_for(affine, "sagittal")
    r, c, _ = voxel_to_pixel(*anterior, shape, sagittal)
    assert c < 7  # anterior: the image's left
    r, c, _ = voxel_to_pixel(*superior, shape, sagittal)
    assert r < 7
    # and the pixels say so too: the marker is drawn where the mapping puts it
    s_left = left[axial.slice_axis]
    img = slice_pixels(vol, s_left, axial)
    rows, cols = np.nonzero(img)
    assert all(c > centre_col for r, c in zip(rows, cols, strict=True) if r == 7)
    assert orientation_data(axial)["orientation"] == "R | L  (A up)"
    assert (orientation_data(sagittal)["left_side"], orientation_data(sagittal)["top"]) == (
        "A",
        "S",
    )
    assert orientation_data(coronal)["right_side"] == "L"


def test_ras_axial_formula_and_the_legacy_mapping() -> None:
    """The exact formula recorded in slices.parquet, and the one older rounds recorded."""
    vol = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert AXIAL_RAS.describe() == (
        "axial RAS: png(row, col) of slice s = voxel (i=ni-1-col, j=nj-1-row, k=s); "
        "row 0 = A, col 0 = R"
    )
    assert np.array_equal(slice_pixels(vol, 2), vol[::-1, ::-1, 2].T)
    assert np.array_equal(slice_pixels(vol, 2, LEGACY_AXIAL), vol[:, :, 2].T)
    legacy = "png(row, col) of slice k = voxel (i=col, j=row, k)"
    assert SliceMapping.parse(legacy) == LEGACY_AXIAL
    assert SliceMapping.parse(projection_mapping().describe()) == projection_mapping()
    with pytest.raises(ValueError):
        SliceMapping.parse("axial RAS: png(row, col) of slice s = voxel (i=col, j=row, k=s)")
    with pytest.raises(ValueError):
        mapping_for("RRS")  # two axes along R/L: no orientation to trust
    with pytest.raises(ValueError):
        mapping_for(np.diag([1.0, 1.0, 1.0, 1.0]), "oblique")
    with pytest.raises(IndexError):
        slice_pixels(vol, 5)


def test_context_strip_shows_neighbours_in_the_same_window_and_orientation() -> None:
    vol = np.zeros((6, 4, 5))
    for k in range(5):
        vol[:, :, k] = k * 50.0
    vol[0, 0, 2] = 1000.0  # patient's left, posterior corner of slice 2: bottom right
    w = Window(100.0, 200.0)
    strip = context_strip(vol, 1, w, AXIAL_RAS, radius=2)
    th, tw = 4, 6  # small images are not reduced
    cell = tw + 4
    assert strip.shape == (th + 4, 5 * cell)
    assert not strip[:, :cell].any()  # slice -1: beyond the volume, black
    assert (strip[0, cell * 2 : cell * 3] == 255).all()  # this slice (1) is framed in white
    assert not strip[0, cell * 3 :].any()  # its neighbours are not
    tile = strip[2 : 2 + th, cell * 3 + 2 : cell * 3 + 2 + tw]  # slice 2
    assert np.array_equal(tile, window_to_uint8(slice_pixels(vol, 2), w))
    assert tile[-1, -1] == 255 and tile[0, 0] == 128
    assert np.array_equal(context_strip(vol, 1, w, AXIAL_RAS), strip)
    # big slices are reduced by whole blocks, with exact integer means
    assert downsample(np.array([[0, 1], [2, 3]], dtype=np.uint8), 2).tolist() == [[2]]
    big = context_strip(np.zeros((300, 200, 3)), 1, w, AXIAL_RAS)
    assert big.shape == (67 + 4, 5 * (100 + 4))  # 200 x 300 images, 3 x 3 blocks


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
    assert candidate_slices(cand, mapping_for("RAS", "sagittal")) == [0, 1]


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


@pytest.mark.slow
def test_generated_ct_shows_the_left_marker_on_the_image_right(
    synth_studies: tuple[Path, Path], tmp_path: Path
) -> None:
    """End to end from pixels: a generated CT series, normalized (RAS) and rendered as the
    round renders it, shows the generator's patient-left marker (medcurate.synth.phantom) right
    of the body, its thin anterior rod above its thick one."""
    import pandas as pd
    from scipy import ndimage

    from medcurate.normalize.run import normalize_tree

    studies, truth = synth_studies
    labels = pd.read_parquet(truth / "labels.parquet")
    row = labels[labels["series_kind"] == "ct_axial"].iloc[0]
    normalize_tree(studies / str(row["series_dir"]), tmp_path / "out")
    (nifti,) = sorted((tmp_path / "out").glob("*.nii.gz"))
    img = nib.load(str(nifti))
    vol = np.asarray(img.get_fdata())

    def objects(pix: np.ndarray) -> tuple[np.ndarray, list[int], list[float], int]:
        parts, n = ndimage.label(pix > 0.2)  # stored units: air 0, fat about 0.45
        sizes = list(ndimage.sum(np.ones_like(pix), parts, range(1, n + 1)))
        body = int(np.argmax(sizes)) + 1
        body_right = np.nonzero(parts == body)[1].max()
        small = [c for c in range(1, n + 1) if c != body]
        assert small
        for c in small:  # every other object is the marker: beyond the body's right edge
            assert np.nonzero(parts == c)[1].min() > body_right
        return parts, small, sizes, body

    axial = mapping_for(img.affine, "axial")
    s_ax = axial.n_slices(vol.shape) // 2
    parts, small, sizes, _ = objects(slice_pixels(vol, s_ax, axial))
    assert len(small) == 2
    thick, thin = sorted(small, key=lambda c: -sizes[c - 1])
    r_thick, c_thick = ndimage.center_of_mass(parts == thick)
    assert ndimage.center_of_mass(parts == thin)[0] < r_thick  # anterior is up
    # the coronal slice through the thick rod shows it right of the body too
    coronal = mapping_for(img.affine, "coronal")
    voxel = pixel_to_voxel(round(r_thick), round(c_thick), s_ax, vol.shape, axial)
    objects(slice_pixels(vol, voxel[coronal.slice_axis], coronal))
