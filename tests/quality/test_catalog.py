"""The catalog suite: a good catalog passes; each planted defect fails exactly its expectation."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from medcurate.ingest import CATALOG_SCHEMA
from quality.runner import SuiteConfig, run_suite
from quality.suites.catalog import SUITE

CFG = SuiteConfig(params={"allowed_modalities": ["CT", "MR"]})
BATCH = "b20260101T000000-abc123"


def _table() -> pd.DataFrame:
    """Three ok instances, one quarantined, one duplicate: the catalog's own schema."""
    rows = []
    for i, modality in enumerate(["CT", "CT", "MR"]):
        rows.append(
            {"batch": BATCH, "relpath": f"f{i}.dcm", "path": f"/r/raw/f{i}.dcm",
             "sha256": f"{i:064x}", "size_bytes": 100, "status": "ok", "reason": "",
             "message": "", "sop_uid": f"1.2.3.{i}", "series_uid": "1.2.3", "study_uid": "1.2",
             "modality": modality}
        )  # fmt: skip
    rows.append(
        {"batch": BATCH, "relpath": "junk.txt", "path": "/r/q/junk.txt", "sha256": "9" * 64,
         "size_bytes": 3, "status": "quarantined", "reason": "NOT_DICOM",
         "message": "NOT_DICOM: not a DICOM file"}
    )  # fmt: skip
    rows.append(
        {"batch": BATCH, "relpath": "copy.dcm", "path": "/r/d/copy.dcm", "sha256": f"{0:064x}",
         "size_bytes": 100, "status": "duplicate", "reason": "DUPLICATE",
         "message": "DUPLICATE: same content as an earlier file"}
    )  # fmt: skip
    table = pa.Table.from_pylist(
        [{k: r.get(k) for k in CATALOG_SCHEMA.names} for r in rows], schema=CATALOG_SCHEMA
    )
    return table.to_pandas()


def failed(df: pd.DataFrame) -> dict[str, str]:
    res = run_suite(SUITE, df, CFG)
    return {o.expectation: o.message for o in res.outcomes if not o.success}


def test_good_catalog_passes() -> None:
    res = run_suite(SUITE, _table(), CFG)
    assert res.problems == [] and res.warnings == []
    acct = next(o for o in res.outcomes if o.expectation == "accounting_balanced")
    assert acct.observed == {"received": 5, "ok": 3, "quarantined": 1, "duplicate": 1}


def test_missing_contract_column() -> None:
    df = _table().drop(columns=["frame_of_reference_uid"])
    assert list(failed(df)) == ["contract_columns"]


def test_null_relpath() -> None:
    df = _table()
    df.loc[1, "relpath"] = None
    out = failed(df)
    assert list(out) == ["relpath_not_null"]
    assert out["relpath_not_null"].startswith("relpath_not_null: failed, 1 of 5")


def test_null_sha256() -> None:
    df = _table()
    df.loc[3, "sha256"] = None
    assert list(failed(df)) == ["sha256_not_null"]


def test_unknown_status_fails_status_and_accounting() -> None:
    # a status outside the set is both a vocabulary error and a row the books cannot place
    df = _table()
    df.loc[3, "status"] = "lost"
    out = failed(df)
    assert sorted(out) == ["accounting_balanced", "status_in_set"]
    assert "received 5 != ok 3 + quarantined 0 + duplicate 1" in out["accounting_balanced"]


def test_modality_outside_allowed_set() -> None:
    df = _table()
    df.loc[2, "modality"] = "US"
    out = failed(df)
    assert list(out) == ["modality_in_allowed_set"]
    assert "1 of" in out["modality_in_allowed_set"]


def test_quarantined_modality_is_not_judged() -> None:
    df = _table()
    df.loc[3, "modality"] = "US"
    assert failed(df) == {}


def test_reason_not_upper_case() -> None:
    df = _table()
    df.loc[3, "reason"] = "not_dicom"
    assert list(failed(df)) == ["reason_upper_case"]


def test_reason_missing_on_quarantined_row() -> None:
    df = _table()
    df.loc[3, "reason"] = ""
    out = failed(df)
    assert list(out) == ["reason_present"]
    assert "1 quarantined/duplicate row(s) without a reason code" in out["reason_present"]


def test_ok_row_without_uids() -> None:
    df = _table()
    df.loc[0, "sop_uid"] = None
    out = failed(df)
    assert list(out) == ["ok_rows_have_uids"]
    assert "1 ok row(s)" in out["ok_rows_have_uids"]


def test_messages_carry_no_paths() -> None:
    df = _table()
    df.loc[0, "sop_uid"] = None
    df.loc[2, "modality"] = "US"
    res = run_suite(SUITE, df, CFG)
    for o in res.outcomes:
        assert "/r/" not in o.message and "/r/" not in str(o.observed)
