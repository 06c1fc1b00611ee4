"""The volumes suite on tiny NIfTIs (8x8x4, written with medcurate.io.write_nifti): a good table
passes; each planted defect fails exactly its expectation; a planted site drift is a WARN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medcurate.config import Zones
from medcurate.io import write_nifti
from medcurate.normalize.run import VOLUME_COLUMNS
from quality.runner import CheckContext, SuiteConfig, run_suite
from quality.suites import volumes
from quality.suites.volumes import SUITE

CFG = SuiteConfig(
    params={"allowed_modalities": ["CT", "MR"], "spacing_mm": [0.2, 10.0], "shape_voxels": [2, 64]}
)
SITES = ("site-a", "site-b", "site-c")
EYE = np.eye(4)


def _image(seed: int, offset: float = 0.0, shape: tuple[int, ...] = (8, 8, 4)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.normal(100.0 + 2.0 * (seed % 3) + offset, 5.0, size=shape)
    arr[0, 0, 0] = -1000.0  # background: the minimum, left out of the fingerprint
    return arr.astype(np.float32)


class Cohort:
    """Nine CT volumes, three per site; labels for the first two samples."""

    def __init__(self, root: Path, drift: float = 0.0) -> None:
        self.z = Zones(root / "home")
        self.rows: list[dict[str, Any]] = []
        self.labels: list[dict[str, Any]] = []
        for i in range(9):
            site = SITES[i // 3]
            self.add(f"s{i:02d}", _image(i, drift if site == "site-c" else 0.0), EYE, site)
        for sid in ("s00", "s01"):
            mask = np.zeros((8, 8, 4), dtype=np.uint8)
            mask[2:4, 2:4, 1] = 1
            self.label(sid, mask, EYE)

    def add(self, sid: str, arr: np.ndarray, affine: np.ndarray, site: str = "site-a") -> None:
        rel = f"{sid}.nii.gz"
        sha = write_nifti(self.z.volume_file(rel), arr, affine)
        spacing = [float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))]
        row: dict[str, Any] = {c: None for c in VOLUME_COLUMNS}
        row.update(
            sample_id=sid, patient=f"P{sid}", study_uid="2.25.1", series_uid=f"2.25.2{sid[1:]}",
            part="", kind="image", modality="CT", manufacturer="ACME", site=site, sex="F",
            age_years=50.0, out_shape=list(arr.shape), out_spacing=spacing,
            affine=[float(v) for v in affine.ravel()], nifti_path=rel, nifti_sha256=sha,
            status="ok", batch="b1",
        )  # fmt: skip
        self.rows = [r for r in self.rows if r["sample_id"] != sid] + [row]

    def label(self, sid: str, mask: np.ndarray, affine: np.ndarray) -> None:
        rel = f"masks/{sid}.nii.gz"
        write_nifti(self.z.label_file(rel), mask, affine, dtype="uint8")
        self.labels = [r for r in self.labels if r["sample_id"] != sid]
        self.labels.append({"sample_id": sid, "label": "abnormal", "mask_path": rel})

    def df(self) -> pd.DataFrame:
        if self.labels:
            self.z.labels.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(self.labels).to_parquet(self.z.labels_table)
        return pd.DataFrame(self.rows, columns=VOLUME_COLUMNS)

    def run(self, df: pd.DataFrame | None = None, cfg: SuiteConfig = CFG):  # type: ignore[no-untyped-def]
        df = self.df() if df is None else df
        return run_suite(SUITE, df, cfg, CheckContext(zones=self.z), docs_dir=None)

    def failed(self, df: pd.DataFrame | None = None, cfg: SuiteConfig = CFG) -> dict[str, str]:
        return {o.expectation: o.message for o in self.run(df, cfg).outcomes if not o.success}


@pytest.fixture
def cohort(tmp_path: Path) -> Cohort:
    return Cohort(tmp_path)


def test_good_volumes_pass(cohort: Cohort) -> None:
    res = cohort.run()
    assert res.problems == [] and res.warnings == []
    drift = next(o for o in res.outcomes if o.expectation == "intensity_drift")
    fp = drift.observed["fingerprint"]["CT"]
    assert sorted(fp) == list(SITES)
    assert set(fp["site-a"]) == {"volumes", "mean", "std", "p00_5", "p99_5"}
    assert 95.0 < fp["site-a"]["mean"] < 110.0  # the background voxel is not foreground
    assert {o.expectation for o in res.outcomes} >= {
        "label_geometry_matches", "label_values_allowed", "orientation_ras", "image_finite",
    }  # fmt: skip


def test_planted_site_drift_is_a_warning(tmp_path: Path) -> None:
    res = Cohort(tmp_path, drift=50.0).run()
    assert res.problems == []
    assert [o.expectation for o in res.outcomes if not o.success] == ["intensity_drift"]
    (msg,) = res.warnings
    assert msg.startswith("intensity_drift: failed") and "CT/site-c" in msg
    assert "site-a" not in msg and "site-b" not in msg


def test_without_zones_files_are_not_checked(cohort: Cohort) -> None:
    res = run_suite(SUITE, cohort.df(), CFG, CheckContext())
    assert [o.expectation for o in res.outcomes if not o.success] == ["files_checked"]


def test_missing_contract_column(cohort: Cohort) -> None:
    assert list(cohort.failed(cohort.df().drop(columns=["transform_config_hash"]))) == [
        "contract_columns"
    ]


def test_duplicate_sample_id(cohort: Cohort) -> None:
    df = cohort.df()
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    assert list(cohort.failed(df)) == ["sample_id_unique"]


def test_status_not_ok(cohort: Cohort) -> None:
    df = cohort.df()
    df.loc[3, "status"] = "failed"
    assert list(cohort.failed(df)) == ["status_ok"]


def test_modality_outside_allowed_set(cohort: Cohort) -> None:
    df = cohort.df()
    df.loc[3, "modality"] = "US"
    assert list(cohort.failed(df)) == ["modality_in_allowed_set"]


def test_sha256_malformed(cohort: Cohort) -> None:
    df = cohort.df()
    df.loc[3, "nifti_sha256"] = str(df.loc[3, "nifti_sha256"]).upper()
    assert list(cohort.failed(df)) == ["nifti_sha256_format"]


def test_sha256_missing(cohort: Cohort) -> None:
    df = cohort.df()
    df.loc[3, "nifti_sha256"] = None
    assert sorted(cohort.failed(df)) == ["nifti_sha256_not_null", "sha256_matches"]


def test_file_missing(cohort: Cohort) -> None:
    df = cohort.df()
    cohort.z.volume_file("s05.nii.gz").unlink()
    out = cohort.failed(df)
    assert list(out) == ["file_exists"]
    assert "1 of 9 volume file(s) missing (s05)" in out["file_exists"]


def test_sha256_differs(cohort: Cohort) -> None:
    df = cohort.df()
    df.loc[4, "nifti_sha256"] = "0" * 64
    out = cohort.failed(df)
    assert list(out) == ["sha256_matches"]
    assert "(s04)" in out["sha256_matches"]


def test_nan_voxel(cohort: Cohort) -> None:
    arr = _image(4)
    arr[3, 3, 2] = np.nan
    cohort.add("s04", arr, EYE, "site-b")
    out = cohort.failed()
    assert list(out) == ["image_finite"]
    assert "(s04)" in out["image_finite"]


def test_inf_voxel(cohort: Cohort) -> None:
    arr = _image(4)
    arr[1, 1, 1] = np.inf
    cohort.add("s04", arr, EYE, "site-b")
    assert list(cohort.failed()) == ["image_finite"]


def test_not_ras(cohort: Cohort) -> None:
    cohort.add("s04", _image(4), np.diag([-1.0, 1.0, 1.0, 1.0]), "site-b")
    out = cohort.failed()
    assert list(out) == ["orientation_ras"]


def test_spacing_out_of_range(cohort: Cohort) -> None:
    cohort.add("s04", _image(4), np.diag([1.0, 1.0, 25.0, 1.0]), "site-b")
    assert list(cohort.failed()) == ["spacing_in_range"]


def test_spacing_range_per_modality(cohort: Cohort) -> None:
    cfg = SuiteConfig(params={**CFG.params, "spacing_mm": {"CT": [2.0, 5.0], "default": [0.1, 9]}})
    out = cohort.failed(cfg=cfg)
    assert list(out) == ["spacing_in_range"]
    assert "9 of 9" in out["spacing_in_range"]


def test_shape_out_of_range(cohort: Cohort) -> None:
    cohort.add("s04", _image(4, shape=(8, 8, 1)), EYE, "site-b")
    assert list(cohort.failed()) == ["shape_in_range"]


def test_table_geometry_differs_from_file(cohort: Cohort) -> None:
    df = cohort.df()
    df["out_shape"] = [[8, 8, 5] if i == 6 else v for i, v in enumerate(df["out_shape"])]
    out = cohort.failed(df)
    assert list(out) == ["geometry_matches_table"]
    assert "(s06)" in out["geometry_matches_table"]


def test_label_shape_differs(cohort: Cohort) -> None:
    cohort.label("s01", np.zeros((8, 8, 3), dtype=np.uint8), EYE)
    out = cohort.failed()
    assert list(out) == ["label_geometry_matches"]
    assert "(s01)" in out["label_geometry_matches"]


def test_label_affine_differs(cohort: Cohort) -> None:
    shifted = EYE.copy()
    shifted[:3, 3] = [4.0, 0.0, 0.0]
    cohort.label("s00", np.zeros((8, 8, 4), dtype=np.uint8), shifted)
    assert list(cohort.failed()) == ["label_geometry_matches"]


def test_label_spacing_differs(cohort: Cohort) -> None:
    cohort.label("s00", np.zeros((8, 8, 4), dtype=np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    assert list(cohort.failed()) == ["label_geometry_matches"]


def test_label_file_missing(cohort: Cohort) -> None:
    df = cohort.df()
    cohort.z.label_file("masks/s00.nii.gz").unlink()
    assert list(cohort.failed(df)) == ["label_geometry_matches"]


def test_label_value_outside_allowed_set(cohort: Cohort) -> None:
    mask = np.zeros((8, 8, 4), dtype=np.uint8)
    mask[1, 1, 1] = 2
    cohort.label("s01", mask, EYE)
    out = cohort.failed()
    assert list(out) == ["label_values_allowed"]
    assert "(s01)" in out["label_values_allowed"]


def test_label_value_not_an_integer(cohort: Cohort) -> None:
    mask = np.zeros((8, 8, 4), dtype=np.float32)
    mask[1, 1, 1] = 0.5
    cohort.label("s01", mask, EYE)  # a uint8 file cannot hold 0.5: rewrite it as float32
    write_nifti(cohort.z.label_file("masks/s01.nii.gz"), mask, EYE, dtype="float32")
    assert list(cohort.failed()) == ["label_values_allowed"]


def test_allowed_labels_not_consecutive(cohort: Cohort) -> None:
    cfg = SuiteConfig(params={**CFG.params, "label_values": [0, 2]})
    out = cohort.failed(cfg=cfg)
    assert list(out) == ["label_values_allowed"]
    assert "not consecutive" in out["label_values_allowed"]


def test_each_file_is_decoded_once(cohort: Cohort, monkeypatch: pytest.MonkeyPatch) -> None:
    volumes.clear_cache()
    calls: list[bool] = []
    real = volumes._facts

    def counting(data: bytes, foreground: Any, label: bool) -> Any:
        calls.append(label)
        return real(data, foreground, label)

    monkeypatch.setattr(volumes, "_facts", counting)
    df = cohort.df()
    cohort.run(df)
    # nine images; the two masks are the same bytes, so one label decode serves both
    assert sorted(calls) == [False] * 9 + [True]
    cohort.run(df)
    assert len(calls) == 10  # the second run reads the bytes (hash) but decodes nothing


def test_fingerprint_foreground_above_background() -> None:
    arr = np.zeros((4, 4, 4))
    arr[1:3, 1:3, 1:3] = 10.0
    fp = volumes.fingerprint(arr)
    assert fp is not None
    assert (fp.mean, fp.std, fp.voxels) == (10.0, 0.0, 8)
    all_voxels = volumes.fingerprint(arr, foreground=20.0)  # nothing above it: every voxel
    assert all_voxels is not None and all_voxels.voxels == 64


def test_histogram_fingerprint_is_numpys() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 200, 5000):
        arr = np.round(rng.normal(0.0, 40.0, size=n)) * 0.37 + 1.1
        values, counts = np.unique(arr, return_counts=True)
        for rule in ("min", 0.0, 1e9):
            want = volumes.fingerprint(arr, rule)
            got = volumes.fingerprint_of_histogram(values, counts, rule)
            assert want is not None and got is not None
            assert (got.p00_5, got.p99_5, got.voxels) == (want.p00_5, want.p99_5, want.voxels)
            assert got.mean == pytest.approx(want.mean, rel=1e-12, abs=1e-12)
            assert got.std == pytest.approx(want.std, rel=1e-9, abs=1e-12)


def test_int16_volumes_are_counted_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int16 NIfTI (what normalization writes) gives the facts of its float voxels."""
    arr = _image(5, shape=(16, 12, 6)) / 200.0
    path = tmp_path / "v.nii.gz"
    write_nifti(path, arr, np.diag([1.5, 1.5, 2.0, 1.0]), dtype="int16", max_abs_error=1e-3)
    data = path.read_bytes()
    assert volumes._int16_histogram(_nifti(data)) is not None  # the fast path is taken
    fast = volumes._facts(data, "min", False)
    monkeypatch.setattr(volumes, "_int16_histogram", lambda img: None)
    slow = volumes._facts(data, "min", False)
    assert (fast.shape, fast.spacing, fast.affine, fast.axcodes, fast.finite) == (
        slow.shape, slow.spacing, slow.affine, slow.axcodes, slow.finite,
    )  # fmt: skip
    assert fast.fingerprint is not None and slow.fingerprint is not None
    assert fast.fingerprint.p00_5 == slow.fingerprint.p00_5
    assert fast.fingerprint.p99_5 == slow.fingerprint.p99_5
    assert fast.fingerprint.voxels == slow.fingerprint.voxels
    assert fast.fingerprint.mean == pytest.approx(slow.fingerprint.mean, rel=1e-12)
    assert fast.fingerprint.std == pytest.approx(slow.fingerprint.std, rel=1e-9)


def test_float_and_unscaled_volumes_take_the_float_path(tmp_path: Path) -> None:
    path = tmp_path / "f.nii.gz"
    write_nifti(path, _image(1), EYE)  # float32
    assert volumes._int16_histogram(_nifti(path.read_bytes())) is None
    nan = _image(2)
    nan[1, 1, 1] = np.nan
    write_nifti(path, nan, EYE, dtype="int16", max_abs_error=1e-3)  # NaN: float32 after all
    assert volumes._facts(path.read_bytes(), "min", False).finite is False


def test_files_read_in_threads_give_the_same_outcomes(
    cohort: Cohort, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = cohort.df()
    volumes.clear_cache()
    monkeypatch.setattr(volumes, "MAX_THREADS", 1)
    one = cohort.run(df).outcomes
    volumes.clear_cache()
    monkeypatch.setattr(volumes, "MAX_THREADS", 4)
    monkeypatch.setattr(volumes.os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    assert cohort.run(df).outcomes == one


def _nifti(data: bytes) -> Any:
    import gzip

    import nibabel as nib

    return nib.Nifti1Image.from_bytes(gzip.decompress(data))
