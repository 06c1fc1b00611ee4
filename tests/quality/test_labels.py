"""The labels suite: good consensus labels pass; each planted defect fails exactly its
expectation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medcurate.config import Zones
from quality.contracts import LABEL_COLUMNS
from quality.runner import CheckContext, SuiteConfig, run_suite
from quality.suites.labels import SUITE

CFG = SuiteConfig(params={"min_dice": 0.5})


def _row(sid: str, label: str, **kw: object) -> dict[str, object]:
    abnormal = label == "abnormal"
    row: dict[str, object] = {
        "sample_id": sid, "label": label,
        "mask_path": f"masks/{sid}.nii.gz" if abnormal else None,
        "source_round": "round-1", "agreement": 0.9 if abnormal else 1.0,
        "mean_dice": 0.9 if abnormal else None, "kappa": 0.8, "class_support": 1.0,
        "n_annotators": 3, "annotated_slices": [0, 4], "adjudicated": False,
        "pending_adjudication": False,
    }  # fmt: skip
    row.update(kw)
    return row


def _table(*extra: dict[str, object]) -> pd.DataFrame:
    rows = [_row("s1", "abnormal"), _row("s2", "normal"), _row("s3", "unreadable"), *extra]
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))


def _zones(tmp_path: Path, empty: bool = False) -> Zones:
    z = Zones(tmp_path)
    z.label_masks.mkdir(parents=True)
    mask = np.zeros((4, 4, 2), np.uint8)
    if not empty:
        mask[1:3, 1:3, 1] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), z.label_masks / "s1.nii.gz")
    return z


def failed(df: pd.DataFrame, ctx: CheckContext | None = None) -> dict[str, str]:
    res = run_suite(SUITE, df, CFG, ctx)
    return {o.expectation: o.message for o in res.outcomes if not o.success}


def test_good_labels_pass(tmp_path: Path) -> None:
    assert failed(_table(), CheckContext(zones=_zones(tmp_path))) == {}


def test_label_outside_allowed_set() -> None:
    df = _table()
    df.loc[1, "label"] = "benign"
    assert list(failed(df)) == ["label_in_allowed_set"]


def test_duplicate_sample() -> None:
    assert list(failed(_table(_row("s2", "normal")))) == ["label_sample_id_unique"]


def test_abnormal_without_mask() -> None:
    out = failed(_table(_row("s4", "abnormal", mask_path=None)))
    assert list(out) == ["label_mask_iff_abnormal"]
    assert "1 abnormal sample(s) without a mask" in out["label_mask_iff_abnormal"]


def test_mask_on_a_normal_sample() -> None:
    out = failed(_table(_row("s4", "normal", mask_path="masks/s4.nii.gz")))
    assert list(out) == ["label_mask_iff_abnormal"]


def test_pending_sample_is_not_held_to_the_mask_rule() -> None:
    assert failed(_table(_row("s4", "abnormal", mask_path=None, pending_adjudication=True))) == {}


def test_mask_file_missing(tmp_path: Path) -> None:
    z = _zones(tmp_path)
    (z.label_masks / "s1.nii.gz").unlink()
    out = failed(_table(), CheckContext(zones=z))
    assert list(out) == ["label_mask_file_valid"]
    assert "1 mask file(s) missing" in out["label_mask_file_valid"]


def test_mask_file_empty(tmp_path: Path) -> None:
    out = failed(_table(), CheckContext(zones=_zones(tmp_path, empty=True)))
    assert list(out) == ["label_mask_file_valid"]
    assert "1 empty" in out["label_mask_file_valid"]


def test_low_agreement_silently_labelled() -> None:
    out = failed(_table(_row("s4", "abnormal", mean_dice=0.3, agreement=0.3)))
    assert list(out) == ["low_agreement_goes_to_adjudication"]
    assert "1 sample(s) below the agreement floor" in out["low_agreement_goes_to_adjudication"]


def test_low_agreement_pending_or_adjudicated_passes() -> None:
    pending = _row("s4", "abnormal", mean_dice=0.3, pending_adjudication=True)
    settled = _row("s5", "abnormal", mean_dice=0.3, adjudicated=True)
    assert failed(_table(pending, settled)) == {}


def test_kappa_floor_when_configured() -> None:
    df = _table(_row("s4", "normal", kappa=0.1))
    assert failed(df) == {}  # no kappa floor unless configured
    cfg = SuiteConfig(params={"min_dice": 0.5, "min_kappa": 0.4})
    res = run_suite(SUITE, df, cfg)
    assert [o.expectation for o in res.outcomes if not o.success] == [
        "low_agreement_goes_to_adjudication"
    ]
