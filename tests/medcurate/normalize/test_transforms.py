"""The MONAI chain: geometry exact (marker at its RAS coordinate), dcm2niix agrees, bytes stable;
loading without MONAI's reader gives the reader's bits."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest

from medcurate.io import write_nifti
from medcurate.normalize import transforms as T
from medcurate.normalize.assembly import (
    KIND_PROJECTION,
    VolumePlan,
    assemble,
    read_instance,
    slice_step_lps,
)
from medcurate.normalize.config import load_config
from medcurate.normalize.phantom import PhantomSeries, marker_ras, write_projection, write_series
from medcurate.normalize.transforms import intensity_stats, load_plan, run_chain

CFG = load_config()
_A = math.radians(30)
GEOMETRIES = {
    "axial": PhantomSeries(name="axial"),
    "flipped_reversed": PhantomSeries(
        name="flipped",
        row_dir=(-1, 0, 0),
        col_dir=(0, 1, 0),
        origin=(20, -24, 18),
        reverse_instance_numbers=True,
    ),
    "sagittal": PhantomSeries(
        name="sag", row_dir=(0, 1, 0), col_dir=(0, 0, -1), origin=(18, -24, 20)
    ),
    "oblique": PhantomSeries(
        name="oblique",
        row_dir=(math.cos(_A), math.sin(_A), 0),
        col_dir=(0, 0, -1),
        origin=(-15, -25, 20),
        pixel_spacing=(1.5, 2.5),
    ),
    "tilted": PhantomSeries(name="tilt", tilt_offset=(0, 0.6, 0)),
    "mr_coronal": PhantomSeries(
        name="mrcor", modality="MR", row_dir=(1, 0, 0), col_dir=(0, 0, -1), origin=(-20, -15, 22),
        marker_value=400.0, background=100.0,
    ),
}  # fmt: skip


def _plan(tmp_path: Path, s: PhantomSeries) -> VolumePlan:
    (plan,) = assemble([i for i in (read_instance(p) for p in write_series(tmp_path, s)) if i])
    assert isinstance(plan, VolumePlan)
    return plan


def _marker_world(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centroid of the blob above half its height over the background, in world coordinates."""
    w = array - np.median(array)
    w[w < 0.5 * w.max()] = 0
    idx = np.array(np.nonzero(w), dtype=float)
    ijk = (idx * w[np.nonzero(w)]).sum(axis=1) / w.sum()
    return affine[:3, :3] @ ijk + affine[:3, 3]


def _error_in_voxels(world: np.ndarray, expected: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.abs(np.linalg.solve(affine[:3, :3], world - expected))


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_marker_lands_at_its_ras_coordinate(tmp_path: Path, name: str) -> None:
    s = GEOMETRIES[name]
    loaded = load_plan(_plan(tmp_path, s))
    expected = marker_ras(s)
    before = _marker_world(loaded.array, loaded.affine)
    assert np.all(_error_in_voxels(before, expected, loaded.affine) < 0.5)

    array, affine = run_chain(loaded, CFG.settings(s.modality))
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    target = CFG.settings(s.modality)["spacing"]
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), target, atol=1e-4)
    after = _marker_world(array, affine)
    assert np.all(_error_in_voxels(after, expected, affine) < 0.5), (after, expected)


def _dcm2niix() -> str:
    exe = Path(sys.executable).parent / "dcm2niix"
    found = str(exe) if exe.exists() else shutil.which("dcm2niix")
    if not found:
        pytest.skip("dcm2niix not installed")
    return found


@pytest.mark.parametrize("name", ["flipped_reversed", "oblique", "sagittal"])
def test_dcm2niix_agrees_before_resampling(tmp_path: Path, name: str) -> None:
    s = GEOMETRIES[name]
    series_dir = tmp_path / "dicom"
    loaded = load_plan(_plan(series_dir, s))
    out = tmp_path / "ref"
    out.mkdir()
    cmd = [_dcm2niix(), "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(series_dir)]
    subprocess.run(cmd, check=True, capture_output=True)
    ref = nib.as_closest_canonical(nib.load(out / "vol.nii"))
    mine = nib.as_closest_canonical(nib.Nifti1Image(loaded.array, loaded.affine))
    assert ref.shape == mine.shape
    assert np.allclose(ref.affine, mine.affine, atol=1e-3)
    assert np.allclose(np.asarray(ref.dataobj, dtype=np.float32), mine.get_fdata(), atol=0.5)


def test_intensity_ct_window_and_mr_zscore(tmp_path: Path) -> None:
    ct, _ = run_chain(load_plan(_plan(tmp_path / "ct", GEOMETRIES["axial"])), CFG.settings("CT"))
    assert ct.min() >= 0.0 and ct.max() <= 1.0
    assert np.median(ct) == pytest.approx((40 + 1000) / 2000, abs=0.01)  # 40 HU in [-1000, 1000]
    mr, _ = run_chain(
        load_plan(_plan(tmp_path / "mr", GEOMETRIES["mr_coronal"])), CFG.settings("MR")
    )
    fg = mr[mr != 0]
    assert fg.mean() == pytest.approx(0.0, abs=1e-3) and fg.std() == pytest.approx(1.0, abs=1e-2)


def test_projection_keeps_its_grid_and_inverts_monochrome1(tmp_path: Path) -> None:
    (plan,) = assemble([read_instance(write_projection(tmp_path, rows=32, cols=28))])  # type: ignore[list-item]
    assert isinstance(plan, VolumePlan)
    loaded = load_plan(plan)
    assert loaded.array.shape == (28, 32, 1) and loaded.spacing == (0.5, 0.5, 1.0)
    # stored value grows with row*10+col; MONOCHROME1 means high = dark, so it is inverted
    assert loaded.array[0, 0, 0] > loaded.array[-1, -1, 0]
    array, _ = run_chain(loaded, CFG.settings("CR"))
    assert array.shape == (28, 32, 1) and array.min() == 0.0 and array.max() == 1.0


def test_nifti_bytes_are_deterministic_and_affine_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.array([[0, -1.5, 0, 10], [0.8, 0, 0, -3], [0, 0, 2, 7], [0, 0, 0, 1]], float)
    sha1 = write_nifti(tmp_path / "a.nii.gz", array, affine)
    sha2 = write_nifti(tmp_path / "b.nii.gz", array, affine)
    assert sha1 == sha2
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.get_data_dtype() == np.float32
    assert np.allclose(img.affine, affine, atol=1e-5)
    assert np.array_equal(np.asarray(img.dataobj), array)


def test_intensity_stats() -> None:
    stats = intensity_stats(np.arange(101, dtype=np.float32))
    assert stats["intensity_min"] == 0 and stats["intensity_max"] == 100
    assert stats["p01"] == pytest.approx(1.0) and stats["p99"] == pytest.approx(99.0)
    assert stats["intensity_mean"] == pytest.approx(50.0)


def test_int16_output_is_lossless_enough_and_smaller(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(24, 20, 12)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    write_nifti(tmp_path / "f.nii.gz", array, affine)
    write_nifti(tmp_path / "i.nii.gz", array, affine, dtype="int16", max_abs_error=1e-3)
    small = nib.load(tmp_path / "i.nii.gz")
    assert small.get_data_dtype() == np.int16
    assert np.abs(small.get_fdata() - array).max() <= 1e-3
    np.testing.assert_allclose(small.affine, affine)
    assert (tmp_path / "i.nii.gz").stat().st_size < 0.75 * (tmp_path / "f.nii.gz").stat().st_size


def test_int16_falls_back_to_float32_when_the_error_is_too_large(tmp_path: Path) -> None:
    array = np.linspace(0, 1, 200_000, dtype=np.float32).reshape(100, 100, 20)
    write_nifti(tmp_path / "x.nii.gz", array, np.eye(4), dtype="int16", max_abs_error=1e-9)
    img = nib.load(tmp_path / "x.nii.gz")
    assert img.get_data_dtype() == np.float32
    assert np.array_equal(img.get_fdata(dtype=np.float32), array)


# ---------------------------------------------------------------------------------------------
# Loading without MONAI's reader gives what the reader gives, bit for bit.


def _monai_load(plan: VolumePlan) -> tuple[np.ndarray, np.ndarray]:
    """The loading of normalize-1 as it was: every slice through ``PydicomReader.read`` and
    ``pixel_array``, the first one's affine (and pixels) from the reader's ``get_data``."""
    from monai.data import PydicomReader

    reader = PydicomReader(swap_ij=True, affine_lps_to_ras=True)
    slices, first_affine = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for inst in plan.instances:
            ds = reader.read(inst.path)
            arr = T._frame(ds)
            if first_affine is None:
                ref, meta = reader.get_data(ds)
                assert np.asarray(ref, dtype=np.float32).tobytes() == arr.tobytes()
                first_affine = np.asarray(meta["affine"], dtype=float)
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                arr = float(arr.max() + arr.min()) - arr
            slices.append(arr)
    assert first_affine is not None
    if plan.kind == KIND_PROJECTION:
        ps = plan.first.pixel_spacing or (1.0, 1.0)
        return slices[0][:, :, None], np.diag([float(ps[1]), float(ps[0]), 1.0, 1.0])
    affine = first_affine.copy()
    affine[:3, 2] = np.diag([-1.0, -1.0, 1.0]) @ slice_step_lps(plan)
    return np.stack(slices, axis=-1), affine


def _same_bits(loaded: T.Loaded, reference: tuple[np.ndarray, np.ndarray]) -> None:
    array, affine = reference
    assert loaded.array.dtype == array.dtype and loaded.array.shape == array.shape
    assert loaded.array.tobytes() == array.tobytes()
    assert loaded.affine.tobytes() == affine.tobytes()  # -0.0 and 0.0 differ here too


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_loading_gives_monai_pydicom_readers_bits(tmp_path: Path, name: str) -> None:
    plan = _plan(tmp_path, GEOMETRIES[name])
    assert all(i.pixels is not None for i in plan.instances)  # the byte path is the one tested
    _same_bits(load_plan(plan), _monai_load(plan))


def test_loading_real_and_projection_files_gives_the_readers_bits(tmp_path: Path) -> None:
    ct5n = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    (plan,) = assemble([i for i in (read_instance(p) for p in sorted(ct5n.iterdir())) if i])
    assert isinstance(plan, VolumePlan) and len(plan.instances) == 5
    _same_bits(load_plan(plan), _monai_load(plan))
    (proj,) = assemble([read_instance(write_projection(tmp_path, rows=32, cols=28))])  # type: ignore[list-item]
    assert isinstance(proj, VolumePlan)
    _same_bits(load_plan(proj), _monai_load(proj))
    from monai.data import PydicomReader

    reader = PydicomReader(swap_ij=True, affine_lps_to_ras=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "OBXXXX1A.dcm"):
        ds = reader.read(str(pydicom.data.get_testdata_file(name)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, meta = reader.get_data(ds)
        assert T.reader_affine(ds).tobytes() == np.asarray(meta["affine"]).tobytes(), name


def _variant(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of one phantom slice with some pixel-module attributes changed (None: removed)."""
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _garbage_high_bits(ds_path: Path, dst: Path, stored: int, signed: int) -> Path:
    ds = pydicom.dcmread(ds_path)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    raw[::3] |= np.uint16(0xF000)  # bits above BitsStored hold junk: pydicom ignores them
    raw[1::7] = np.uint16(0x0900)  # bit 11 set: negative in 12-bit signed
    return _variant(
        ds_path, dst, PixelData=raw.tobytes(), BitsStored=stored, HighBit=stored - 1,
        PixelRepresentation=signed,
    )  # fmt: skip


def test_byte_path_decodes_every_native_layout_as_pixel_array_does(tmp_path: Path) -> None:
    (src, *_) = write_series(tmp_path / "s", PhantomSeries(name="v", slices=2))
    eight = pydicom.dcmread(src)
    small = (np.frombuffer(eight.PixelData, dtype="<i2") % 200).astype(np.uint8)
    files = [
        _garbage_high_bits(src, tmp_path / "u12.dcm", 12, 0),
        _garbage_high_bits(src, tmp_path / "s12.dcm", 12, 1),
        _variant(
            src,
            tmp_path / "u8.dcm",
            PixelData=small.tobytes(),
            BitsAllocated=8,
            BitsStored=8,
            HighBit=7,
            PixelRepresentation=0,
        ),
        _variant(
            src,
            tmp_path / "s32.dcm",
            PixelData=np.frombuffer(eight.PixelData, "<i2").astype("<i4").tobytes(),
            BitsAllocated=32,
            BitsStored=32,
            HighBit=31,
        ),
        _variant(src, tmp_path / "slope.dcm", RescaleSlope="0.37", RescaleIntercept="-1024.25"),
        _variant(src, tmp_path / "intercept.dcm", RescaleSlope=None, RescaleIntercept="-7.5"),
        _variant(src, tmp_path / "plain.dcm", RescaleSlope=None, RescaleIntercept=None),
        _variant(src, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1"),
    ]
    implicit = pydicom.dcmread(src)
    implicit.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    implicit.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True)
    files.append(tmp_path / "implicit.dcm")
    for path in files:
        info = read_instance(path)
        assert info is not None and info.pixels is not None, path.name
        ds = pydicom.dcmread(path)
        mine = T._slice_from_layout(str(path), info.pixels)
        theirs = T._slice_from_dataset(ds)
        assert mine.dtype == theirs.dtype == np.float32, path.name
        assert mine.tobytes() == theirs.tobytes(), path.name


def test_files_without_a_layout_and_a_wrong_layout_fall_back_to_pixel_array(
    tmp_path: Path,
) -> None:
    s = PhantomSeries(name="fb", slices=4)
    plan = _plan(tmp_path / "a", s)
    reference = _monai_load(plan)
    # a series whose recorded layouts are all wrong (offsets two bytes early, or past the end):
    # the first slice's cross-check catches it and every slice is decoded by pydicom
    layouts = [i.pixels for i in plan.instances]
    assert all(layout is not None for layout in layouts)
    for shift in (-2, 10**6):
        off = [
            dataclasses.replace(i, pixels=dataclasses.replace(lay, offset=lay.offset + shift))
            for i, lay in zip(plan.instances, layouts, strict=True)
            if lay is not None
        ]
        _same_bits(load_plan(dataclasses.replace(plan, instances=off)), reference)
    # files without a layout (as compressed or big-endian files are) are decoded by pydicom
    none = [dataclasses.replace(i, pixels=None) for i in plan.instances]
    _same_bits(load_plan(dataclasses.replace(plan, instances=none)), reference)
    mixed = [none[0], *plan.instances[1:]]
    _same_bits(load_plan(dataclasses.replace(plan, instances=mixed)), reference)
