"""The annotations suite: a good round passes; each planted defect fails exactly its expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medcurate.config import Zones
from quality.contracts import ANNOTATION_COLUMNS
from quality.runner import CheckContext, SuiteConfig, run_suite
from quality.suites.annotations import SUITE

CFG = SuiteConfig(params={"annotators": 3})


def _table() -> pd.DataFrame:
    """Two samples, two slices each, three annotators: slice 4 of s1 abnormal with masks."""
    rows = []
    for sid in ("s1", "s2"):
        for k in (0, 4):
            abnormal = sid == "s1" and k == 4
            for who in ("ann-a", "ann-b", "ann-c"):
                rows.append(
                    {"round": "round-1", "task_key": f"{sid}_k{k}", "sample_id": sid,
                     "slice_k": k, "annotator": who,
                     "choice": "abnormal" if abnormal else "normal", "has_mask": abnormal,
                     "mask_voxels": 12 if abnormal else 0,
                     "mask_path": f"round-1/masks/{sid}/{who}.nii.gz" if abnormal else None,
                     "lead_time": 3.0, "created_at": "t", "updated_at": "t",
                     "was_cancelled": False}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=list(ANNOTATION_COLUMNS))


def failed(df: pd.DataFrame, ctx: CheckContext | None = None) -> dict[str, str]:
    res = run_suite(SUITE, df, CFG, ctx)
    return {o.expectation: o.message for o in res.outcomes if not o.success}


def test_good_round_passes() -> None:
    assert failed(_table()) == {}


def test_class_outside_allowed_set() -> None:
    df = _table()
    df.loc[0, "choice"] = "maybe"
    assert list(failed(df)) == ["annotation_choice_in_allowed_set"]


def test_task_short_of_annotators() -> None:
    df = _table().iloc[1:].reset_index(drop=True)
    out = failed(df)
    assert list(out) == ["every_task_has_k_annotations"]
    assert "1 task(s) have fewer than 3" in out["every_task_has_k_annotations"]


def test_cancelled_annotation_does_not_count() -> None:
    df = _table()
    df.loc[0, "choice"] = None
    df.loc[0, "was_cancelled"] = True
    assert list(failed(df)) == ["every_task_has_k_annotations"]


def test_round_json_sets_k_and_tasks(tmp_path: Path) -> None:
    z = Zones(tmp_path)
    z.round_dir("round-1").mkdir(parents=True)
    keys = [*sorted(set(_table()["task_key"])), "s3_k0"]  # a task nobody annotated
    z.round_info("round-1").write_text(json.dumps({"annotators": 3, "task_keys": keys}))
    out = failed(_table(), CheckContext(zones=z))
    assert list(out) == ["every_task_has_k_annotations"]
    assert "s3_k0" in out["every_task_has_k_annotations"]


@pytest.mark.parametrize("choice,has_mask", [("abnormal", False), ("normal", True)])
def test_mask_and_class_disagree(choice: str, has_mask: bool) -> None:
    """An abnormal annotation without a mask, and a mask on a slice called normal."""
    df = _table()
    row = df.index[(df["task_key"] == "s1_k4") & (df["annotator"] == "ann-a")][0]
    df.loc[row, "choice"] = choice
    df.loc[row, "has_mask"] = has_mask
    out = failed(df)
    assert list(out) == ["annotation_mask_iff_abnormal"]
    assert out["annotation_mask_iff_abnormal"].startswith("annotation_mask_iff_abnormal: ")


def test_missing_column() -> None:
    assert "contract_columns" in failed(_table().drop(columns=["has_mask"]))


def test_mask_rule_is_a_warning_unless_configured() -> None:
    df = _table()
    df.loc[0, "has_mask"] = True  # a mask on a slice called normal
    res = run_suite(SUITE, df, CFG)
    assert res.problems == [] and len(res.warnings) == 1
