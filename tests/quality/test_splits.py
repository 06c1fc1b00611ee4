"""The splits suite: a good assignment passes; each planted defect fails exactly its expectation."""

from __future__ import annotations

import pandas as pd

from medcurate.store.manifest import SAMPLE_COLUMNS
from quality.runner import SuiteConfig, run_suite
from quality.suites.splits import SUITE

CFG = SuiteConfig(params={"balance_tolerance": 0.2, "min_positives": 1})

#: (label, sex, site, age): every split gets the same four, so every share equals the whole's
_FOUR = [("abnormal", "F", "site-a", 40.0), ("normal", "M", "site-b", 40.0),
         ("normal", "F", "site-a", 60.0), ("normal", "M", "site-b", 60.0)]  # fmt: skip


def _sample(sid: str, patient: str, split: str, label: str, sex: str, site: str, age: float,
            synthetic: bool = False) -> dict[str, object]:  # fmt: skip
    row: dict[str, object] = {c: None for c in SAMPLE_COLUMNS}
    row.update(
        sample_id=sid, patient=patient, label=label, modality="CT", site=site, sex=sex,
        age_years=age, nifti_path=f"{sid}.nii.gz", synthetic=synthetic, split=split,
        fold=-1, mask_path=f"masks/{sid}.nii.gz" if label == "abnormal" else None,
        age_band="30-39" if age < 50 else "50-64",
    )  # fmt: skip
    return row


def _table() -> pd.DataFrame:
    rows = []
    for s, split in enumerate(("train", "validation", "test")):
        for i, (label, sex, site, age) in enumerate(_FOUR):
            n = 4 * s + i
            rows.append(_sample(f"s{n:02d}", f"p{n:02d}", split, label, sex, site, age))
    rows.append(_sample("syn01", "gan", "train", "abnormal", "F", "site-a", 40.0, synthetic=True))
    return pd.DataFrame(rows)


def failed(df: pd.DataFrame, cfg: SuiteConfig = CFG) -> dict[str, str]:
    res = run_suite(SUITE, df, cfg)
    return {o.expectation: o.message for o in res.outcomes if not o.success}


def _row(df: pd.DataFrame, sid: str) -> int:
    return int(df.index[df["sample_id"] == sid][0])


def test_good_assignment_passes() -> None:
    assert failed(_table()) == {}


def test_split_outside_set() -> None:
    df = _table()
    df.loc[_row(df, "s03"), "split"] = "training"
    assert list(failed(df)) == ["split_in_set"]


def test_patient_in_two_splits() -> None:
    df = _table()
    df.loc[_row(df, "s09"), "patient"] = "p01"  # a test sample of a train patient
    out = failed(df)
    assert list(out) == ["no_patient_in_two_splits"]
    assert "1 patient(s) have samples in more than one split" in out["no_patient_in_two_splits"]


def test_split_off_balance() -> None:
    df = _table()
    df.loc[[_row(df, "s05"), _row(df, "s07")], "site"] = "site-c"
    out = failed(df)
    assert list(out) == ["split_balance_within_tolerance"]
    assert "validation:site=site-c" in out["split_balance_within_tolerance"]


def test_evaluation_split_without_positive() -> None:
    df = _table()
    df.loc[_row(df, "s08"), ["label", "mask_path"]] = ["normal", None]
    out = failed(df)
    assert list(out) == ["evaluation_splits_have_positives"]
    msg = out["evaluation_splits_have_positives"]
    assert "test:abnormal=0" in msg and "assignment did not place them" in msg


def test_positive_without_mask_does_not_count() -> None:
    df = _table()
    df.loc[_row(df, "s04"), "mask_path"] = None
    assert list(failed(df)) == ["evaluation_splits_have_positives"]
    lenient = SuiteConfig(params={**CFG.params, "positives_need_mask": False})
    assert failed(df, lenient) == {}


def test_cohort_cannot_satisfy_positives() -> None:
    df = _table()
    for sid in ("s04", "s08"):
        df.loc[_row(df, sid), ["label", "mask_path"]] = ["normal", None]
    out = failed(df)
    assert list(out) == ["evaluation_splits_have_positives"]
    assert "the cohort cannot satisfy it for abnormal" in out["evaluation_splits_have_positives"]


def test_synthetic_outside_train() -> None:
    df = _table()
    df.loc[_row(df, "syn01"), "split"] = "validation"
    out = failed(df)
    assert list(out) == ["synthetic_only_in_train"]
    assert "1 synthetic sample(s) outside train" in out["synthetic_only_in_train"]


def test_balance_is_a_warning_unless_configured() -> None:
    df = _table()
    df.loc[[_row(df, "s05"), _row(df, "s07")], "site"] = "site-c"
    res = run_suite(SUITE, df, CFG)
    assert res.problems == [] and len(res.warnings) == 1
    strict = SuiteConfig(severity={"split_balance_within_tolerance": "ERROR"}, params=CFG.params)
    assert run_suite(SUITE, df, strict).problems == res.warnings
