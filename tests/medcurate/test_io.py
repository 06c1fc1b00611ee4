"""medcurate.io: atomic writes, deterministic NIfTI, hashes and the DICOM age string."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcurate import io


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _load(path: Path) -> Any:
    """A nibabel image (typed loosely: nibabel's load is typed as the base class)."""
    return nib.load(path)


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# --------------------------------------------------------------------------- hashes


def test_hashes_agree_with_hashlib(tmp_path: Path) -> None:
    data = b"medcurate" * 300_000  # more than one read chunk
    (tmp_path / "f").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert io.sha256_file(tmp_path / "f") == io.sha256_bytes(data) == expected
    assert io.sha256_text("é") == hashlib.sha256("é".encode()).hexdigest()


# --------------------------------------------------------------------------- atomic writes


def test_temp_path_sits_beside_the_target_and_names_the_process(tmp_path: Path) -> None:
    tmp = io.temp_path(tmp_path / "table.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name == f".table.parquet.tmp-{os.getpid()}"


@pytest.mark.parametrize("private", [False, True])
def test_atomic_writes_leave_no_temporary_file(tmp_path: Path, private: bool) -> None:
    io.atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01", private=private)
    io.atomic_write_text(tmp_path / "a" / "c.txt", "héllo", private=private)
    io.atomic_write_parquet(pd.DataFrame({"x": [1, 2]}), tmp_path / "a" / "d.parquet", private)
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "c.txt").read_text(encoding="utf-8") == "héllo"
    assert pd.read_parquet(tmp_path / "a" / "d.parquet")["x"].tolist() == [1, 2]
    assert _litter(tmp_path / "a") == []


def test_private_writes_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        for name, write in {
            "b.bin": lambda p: io.atomic_write_bytes(p, b"x", private=True),
            "t.txt": lambda p: io.atomic_write_text(p, "x", private=True),
            "p.parquet": lambda p: io.atomic_write_parquet(pd.DataFrame({"x": [1]}), p, True),
        }.items():
            write(tmp_path / name)
            assert _mode(tmp_path / name) == 0o600, name
        io.atomic_write_bytes(tmp_path / "open.bin", b"x")  # not private: the umask decides
        assert _mode(tmp_path / "open.bin") == 0o666
    finally:
        os.umask(old)


def test_a_private_rewrite_closes_a_file_left_open(tmp_path: Path) -> None:
    target = tmp_path / "crosswalk.csv"
    target.write_text("old")
    target.chmod(0o644)
    io.atomic_write_text(target, "new", private=True)
    assert target.read_text() == "new" and _mode(target) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_litter(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    io.atomic_write_parquet(pd.DataFrame({"x": [1]}), target)
    before = target.read_bytes()

    class Broken:
        def to_parquet(self, path: Path, index: bool = False) -> None:
            Path(path).write_bytes(b"half")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.atomic_write_parquet(Broken(), target)
    assert target.read_bytes() == before
    assert _litter(tmp_path) == []


def test_parquet_of_a_table_drops_schema_metadata_same_rows_same_bytes(tmp_path: Path) -> None:
    rows = {"series_uid": ["2.25.1", "2.25.2"], "n": [3, 4]}
    plain = pa.table(rows)
    tagged = plain.replace_schema_metadata({b"written_at": b"2026-12-02T04:00:00"})
    io.atomic_write_parquet(plain, tmp_path / "a.parquet")
    io.atomic_write_parquet(tagged, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert pq.read_table(tmp_path / "a.parquet").to_pydict() == rows


def test_parquet_of_a_dataframe_is_written_as_pandas_writes_it(tmp_path: Path) -> None:
    df = pd.DataFrame({"sample_id": ["a", "b"], "age_years": [45.0, None]}, index=[7, 9])
    io.atomic_write_parquet(df, tmp_path / "ours.parquet")
    df.to_parquet(tmp_path / "pandas.parquet", index=False)
    assert (tmp_path / "ours.parquet").read_bytes() == (tmp_path / "pandas.parquet").read_bytes()


# --------------------------------------------------------------------------- NIfTI


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    array = rng.normal(100.0, 30.0, size=(9, 8, 5)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.5]
    return array, affine


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint8"])
def test_write_nifti_is_byte_identical_for_identical_input(tmp_path: Path, dtype: str) -> None:
    array, affine = _volume()
    if dtype == "uint8":
        array = (array > 100).astype(np.uint8)
    a = io.write_nifti(tmp_path / "a.nii.gz", array, affine, dtype=dtype, max_abs_error=0.5)
    b = io.write_nifti(tmp_path / "b.nii.gz", array.copy(), affine.copy(), dtype, 0.5)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    assert a == b == io.sha256_file(tmp_path / "a.nii.gz")
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes())[:4] == (348).to_bytes(4, "little")
    assert _litter(tmp_path) == []


def test_write_nifti_gzip_header_carries_no_time(tmp_path: Path) -> None:
    array, affine = _volume()
    io.write_nifti(tmp_path / "v.nii.gz", array, affine)
    head = (tmp_path / "v.nii.gz").read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\x00\x00\x00\x00"  # mtime 0


def test_float32_round_trip_through_read_nifti(tmp_path: Path) -> None:
    array, affine = _volume()
    io.write_nifti(tmp_path / "v.nii.gz", array, affine)
    back, back_affine = io.read_nifti(tmp_path / "v.nii.gz")
    assert back.dtype == np.float32 and np.array_equal(back, array)
    assert np.allclose(back_affine, affine)
    img = _load(tmp_path / "v.nii.gz")
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"


def test_int16_within_tolerance_else_float32(tmp_path: Path) -> None:
    array, affine = _volume()
    io.write_nifti(tmp_path / "q.nii.gz", array, affine, dtype="int16", max_abs_error=0.5)
    assert _load(tmp_path / "q.nii.gz").get_data_dtype() == np.int16
    back, _ = io.read_nifti(tmp_path / "q.nii.gz")
    assert float(np.abs(back - array).max()) <= 0.5
    io.write_nifti(tmp_path / "f.nii.gz", array, affine, dtype="int16", max_abs_error=0.0)
    assert _load(tmp_path / "f.nii.gz").get_data_dtype() == np.float32  # would lose detail


def test_uint8_labels_round_trip_and_refuse_values_outside_0_255(tmp_path: Path) -> None:
    _, affine = _volume()
    labels = np.zeros((6, 5, 4), dtype=np.int64)
    labels[1:3, 2:4, 1] = 1
    labels[4, 4, 3] = 255
    io.write_nifti(tmp_path / "m.nii.gz", labels, affine, dtype="uint8")
    assert _load(tmp_path / "m.nii.gz").get_data_dtype() == np.uint8
    back, _ = io.read_nifti(tmp_path / "m.nii.gz")
    assert np.array_equal(back.astype(np.int64), labels)
    for bad in (-1, 256):
        labels[0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"0\.\.255"):
            io.write_nifti(tmp_path / "bad.nii.gz", labels, affine, dtype="uint8")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_an_unknown_dtype_is_refused(tmp_path: Path) -> None:
    array, affine = _volume()
    with pytest.raises(ValueError, match="unsupported output dtype"):
        io.write_nifti(tmp_path / "x.nii.gz", array, affine, dtype="float64")


# --------------------------------------------------------------------------- DICOM age (AS)


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("045Y", 45.0),
        ("045y", 45.0),
        (" 045Y ", 45.0),
        ("000Y", 0.0),
        ("006M", 0.5),
        ("018M", 1.5),
        ("010W", round(10 * 7 / 365.25, 4)),
        ("003D", round(3 / 365.25, 4)),
        (b"045Y".decode(), 45.0),
    ],
)
def test_age_years_of_each_unit(value: str, years: float) -> None:
    assert io.age_years(value) == years


@pytest.mark.parametrize(
    "value", [None, "", "45Y", "0045Y", "045", "045X", "04YY", "-45Y", "abcd", 45, "045 Y"]
)
def test_age_years_of_malformed_values_is_none(value: object) -> None:
    assert io.age_years(value) is None


def test_a_private_write_makes_its_new_folder_owner_only(tmp_path: Path) -> None:
    """A round's raw export (it names accounts) lands in a folder it creates: 0700, not 0755."""
    from medcurate.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "exports" / "round-1.json", "{}", private=True)
        atomic_write_text(tmp_path / "open" / "x.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "exports").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "exports" / "round-1.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o755
