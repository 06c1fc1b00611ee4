"""The MONAI chain: geometry exact (marker at its RAS coordinate), dcm2niix agrees, bytes stable."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcurate.io import write_nifti
from medcurate.normalize.assembly import VolumePlan, assemble, read_instance
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
