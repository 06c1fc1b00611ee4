"""The deid manifest suite: a good manifest passes; each planted defect (PHI-looking values, the
generator's planted PHI, source UIDs, identity not removed, unverified bytes) fails exactly its
expectation, with a message that names it and carries no value."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from medcurate.config import Zones
from medcurate.deid.policy import DEFAULT_OPTIONS
from medcurate.deid.run import write_manifest
from medcurate.io import sha256_file
from medcurate.synth.truth import planted_phi
from quality.runner import CheckContext, SuiteConfig, run_suite
from quality.suites.deid import SUITE

CFG = SuiteConfig()
PROFILE = DEFAULT_OPTIONS.profile_text()


def _rows() -> list[dict[str, object]]:
    rows = []
    for i in range(3):
        study, series, sop = "2.25.1001", f"2.25.20{i % 2}", f"2.25.300{i}"
        rows.append(
            {"path": f"PAT7F3A/{study}/{series}/{sop}.dcm", "patient": "PAT7F3A",
             "study_uid": study, "series_uid": series, "sop_uid": sop,
             "frame_of_reference_uid": "2.25.4001", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
             "modality": "CT", "manufacturer": "ACME", "site": "site-a", "sex": "F",
             "age_years": 54.0, "patient_size_m": 1.7, "patient_weight_kg": 70.0,
             "study_date": "2023-01-31", "series_description": "Head, Neck", "rows": 8,
             "columns": 8, "number_of_frames": 1, "sha256": f"{i:064x}",
             "source_sha256": f"{i + 7:064x}", "profile": PROFILE}
        )  # fmt: skip
    return rows


def _manifest(tmp_path: Path, rows: list[dict[str, object]] | None = None) -> pd.DataFrame:
    """Through the writer (its column types), read back as the gate reads it."""
    path = tmp_path / "manifest.parquet"
    write_manifest(path, _rows() if rows is None else rows)
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def planted(synth_studies: tuple[Path, Path]) -> list[str]:
    return sorted(planted_phi(synth_studies[1]))


def _with_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The columns this suite asks deid to add: the header's PatientIdentityRemoved, verified."""
    return df.assign(patient_identity_removed="YES", verified=True)


def failed(df: pd.DataFrame, ctx: CheckContext | None = None) -> dict[str, str]:
    res = run_suite(SUITE, df, CFG, ctx or CheckContext())
    return {o.expectation: o.message for o in res.outcomes if not o.success}


def test_good_manifest_passes(tmp_path: Path, planted: list[str]) -> None:
    assert failed(_with_columns(_manifest(tmp_path)), CheckContext(planted_phi=planted)) == {}


def test_without_the_columns_or_files_the_checks_are_not_evaluated(tmp_path: Path) -> None:
    out = failed(_manifest(tmp_path))
    assert sorted(out) == ["patient_identity_removed", "verifier_passed"]
    assert all("not evaluated" in m for m in out.values())


def test_missing_contract_column(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path)).drop(columns=["sex"])
    assert list(failed(df)) == ["contract_columns"]


def test_dicom_person_name(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[1, "manufacturer"] = "DOE^JOHN"
    out = failed(df)
    assert list(out) == ["no_person_names"]
    assert "1 value(s) that look like a name in manufacturer" in out["no_person_names"]
    assert "DOE" not in out["no_person_names"]


def test_last_comma_first_name(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[0, "series_description"] = "Smithers, Jonah"
    out = failed(df)
    assert list(out) == ["no_person_names"]
    assert "Smithers" not in out["no_person_names"]


def test_birth_date_outside_study_date(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[2, "series_description"] = "CT 19800214"
    out = failed(df)
    assert list(out) == ["no_birth_dates"]
    assert "series_description" in out["no_birth_dates"]
    assert "1980" not in out["no_birth_dates"]


def test_source_uid_root(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[0, "sop_uid"] = "1.2.840.113619.2.55.3.1"
    out = failed(df)
    assert list(out) == ["uids_new_root"]
    assert "1 UID(s) not under the 2.25. root in sop_uid" in out["uids_new_root"]


def _plain_planted(planted: list[str]) -> str:
    """A planted string no other scan would flag: no caret, no comma, no 8-digit date."""
    return next(p for p in planted if "^" not in p and "," not in p and not re.search(r"\d{8}", p))


def test_planted_phi_from_the_generator(tmp_path: Path, planted: list[str]) -> None:
    value = _plain_planted(planted)
    df = _with_columns(_manifest(tmp_path))
    df.loc[1, "manufacturer"] = value
    out = failed(df, CheckContext(planted_phi=planted))
    assert list(out) == ["no_planted_phi"]
    assert "in manufacturer" in out["no_planted_phi"]
    assert value not in out["no_planted_phi"]


def test_planted_phi_inside_a_longer_value(tmp_path: Path, planted: list[str]) -> None:
    value = next(p for p in sorted(planted, key=len, reverse=True) if "^" not in p and "," not in p)
    df = _with_columns(_manifest(tmp_path))
    df.loc[0, "series_description"] = f"CT {value.lower()} HEAD"
    assert list(failed(df, CheckContext(planted_phi=planted))) == ["no_planted_phi"]


def test_profile_not_stated(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[0, "profile"] = "none"
    assert list(failed(df)) == ["profile_stated"]


def test_identity_not_removed_column(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[2, "patient_identity_removed"] = "NO"
    assert list(failed(df)) == ["patient_identity_removed"]


def test_verifier_not_passed_column(tmp_path: Path) -> None:
    df = _with_columns(_manifest(tmp_path))
    df.loc[2, "verified"] = False
    assert list(failed(df)) == ["verifier_passed"]


# --------------------------------------------------------------------------- from the files


def _dicom(path: Path, removed: str) -> str:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.1")
    ds.PatientIdentityRemoved = removed
    ds.Modality = "CT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sha256_file(path)


def _zoned(
    tmp_path: Path, removed: tuple[str, ...] = ("YES", "YES", "YES")
) -> tuple[pd.DataFrame, CheckContext, Zones]:
    z = Zones(tmp_path / "home")
    rows = _rows()
    for row, r in zip(rows, removed, strict=True):
        row["sha256"] = _dicom(z.deid / str(row["path"]), r)
    return _manifest(tmp_path, rows), CheckContext(zones=z), z


def test_files_say_identity_removed_and_hold_verified_bytes(tmp_path: Path) -> None:
    df, ctx, _ = _zoned(tmp_path)
    res = run_suite(SUITE, df, CFG, ctx, docs_dir=tmp_path / "docs")
    assert res.problems == []
    names = {o.expectation for o in res.outcomes}
    assert {"patient_identity_removed", "verifier_passed"} <= names


def test_file_without_identity_removed(tmp_path: Path) -> None:
    df, ctx, _ = _zoned(tmp_path, ("YES", "NO", "YES"))
    out = failed(df, ctx)
    assert list(out) == ["patient_identity_removed"]
    assert "1 not YES" in out["patient_identity_removed"]


def test_file_changed_after_verification(tmp_path: Path) -> None:
    df, ctx, z = _zoned(tmp_path)
    with open(z.deid / str(df.loc[0, "path"]), "ab") as f:
        f.write(b"\0\0")
    out = failed(df, ctx)
    assert list(out) == ["verifier_passed"]
    assert "1 with another sha256" in out["verifier_passed"]
