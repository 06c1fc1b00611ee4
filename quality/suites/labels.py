"""Suite of the consensus ``labels/labels.parquet`` (one row per labelled sample).

Expectations (names are the keys of ``quality.yaml``'s ``labels`` section):

``contract_columns``, ``<column>_not_null``  the table contract (quality/contracts.py) (ERROR)
``label_sample_id_unique``  one row per sample (ERROR)
``label_in_allowed_set``    every label is one of ``allowed_classes`` (ERROR)
``label_mask_iff_abnormal`` a settled sample (not pending adjudication) has a ``mask_path``
    exactly when its label is ``abnormal`` (ERROR)
``label_mask_file_valid``   with ``ctx.zones``: every ``mask_path`` names a label file under
    ``labels/`` that exists and is not empty (ERROR; skipped, and says so, without zones)
``low_agreement_goes_to_adjudication``  a sample whose agreement is below the floor
    (``min_dice`` on ``mean_dice``, default 0.5 as in consensus; ``min_kappa`` on ``kappa`` and
    ``min_class_support`` on ``class_support``, both off unless configured) is pending
    adjudication or was adjudicated, never silently labelled (ERROR)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from quality.contracts import LABELS
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

DEFAULT_CLASSES: tuple[str, ...] = ("normal", "abnormal", "unreadable")
DEFAULT_MIN_DICE = 0.5
ABNORMAL = "abnormal"
MAX_LISTED = 10


def _flag(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), False).astype(bool)


def _ids(df: pd.DataFrame) -> list[str]:
    return sorted(df["sample_id"].astype(str))[:MAX_LISTED]


def _has(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


class LabelsSuite:
    table = "labels"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        classes = list(cfg.get("allowed_classes", list(DEFAULT_CLASSES)))
        return [
            *(GxSpec(n, e) for n, e in LABELS.gx_expectations()),
            GxSpec("label_sample_id_unique", gxe.ExpectColumnValuesToBeUnique(column="sample_id")),
            GxSpec(
                "label_in_allowed_set",
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            ),
        ]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if LABELS.missing(df.columns):
            return []  # contract_columns already says which
        return [
            self._mask_iff_abnormal(df, cfg),
            self._mask_files(df, cfg, ctx),
            self._agreement(df, cfg),
        ]

    def _mask_iff_abnormal(self, df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
        name = "label_mask_iff_abnormal"
        settled = df.loc[~_flag(df["pending_adjudication"])]
        abnormal = settled["label"].astype(object).eq(ABNORMAL)
        masked = settled["mask_path"].map(_has).astype(bool)
        no_mask = settled.loc[abnormal & ~masked]
        stray = settled.loc[~abnormal & masked]
        ok = no_mask.empty and stray.empty
        msg = (
            f"{name}: every settled abnormal sample has a mask and no other sample has one"
            if ok
            else f"{name}: {len(no_mask)} abnormal sample(s) without a mask, {len(stray)} "
            "sample(s) with a mask but not labelled abnormal"
        )
        observed = {
            "abnormal_without_mask": len(no_mask),
            "mask_without_abnormal": len(stray),
            "examples": _ids(pd.concat([no_mask, stray])),
        }
        return Outcome(name, cfg.sev(name), ok, observed, msg)

    def _mask_files(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> Outcome:
        name = "label_mask_file_valid"
        if ctx.zones is None:
            msg = f"{name}: not checked (no data zones given)"
            return Outcome(name, cfg.sev(name), True, {"checked": 0}, msg)
        from medcurate.io import read_nifti  # lazy: nibabel

        rows = df.loc[df["mask_path"].map(_has).astype(bool)]
        missing, empty = [], []
        for rec in rows.to_dict("records"):
            path = ctx.zones.label_file(str(rec["mask_path"]))
            if not path.is_file():
                missing.append(str(rec["sample_id"]))
                continue
            data, _ = read_nifti(path)
            if not np.any(np.asarray(data)):
                empty.append(str(rec["sample_id"]))
        ok = not missing and not empty
        msg = (
            f"{name}: all {len(rows)} mask file(s) exist and are not empty"
            if ok
            else f"{name}: {len(missing)} mask file(s) missing, {len(empty)} empty (of {len(rows)})"
        )
        observed = {
            "checked": len(rows),
            "missing": len(missing),
            "empty": len(empty),
            "examples": sorted(missing + empty)[:MAX_LISTED],
        }
        return Outcome(name, cfg.sev(name), ok, observed, msg)

    def _agreement(self, df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
        name = "low_agreement_goes_to_adjudication"
        floors = {
            "mean_dice": cfg.get("min_dice", DEFAULT_MIN_DICE),
            "kappa": cfg.get("min_kappa", None),
            "class_support": cfg.get("min_class_support", None),
        }
        low = pd.Series(False, index=df.index)
        for col, floor in floors.items():
            if floor is None:
                continue
            values = pd.to_numeric(df[col], errors="coerce")
            low |= values.notna() & (values < float(floor))
        settled_by_reviewer = _flag(df["adjudicated"]) | _flag(df["pending_adjudication"])
        silent = df.loc[low & ~settled_by_reviewer]
        used = {k: v for k, v in floors.items() if v is not None}
        ok = silent.empty
        floor_text = ", ".join(f"{k} >= {v}" for k, v in used.items())
        msg = (
            f"{name}: every sample below the agreement floor ({floor_text}) is pending or "
            "adjudicated"
            if ok
            else f"{name}: {len(silent)} sample(s) below the agreement floor ({floor_text}) are "
            "labelled without adjudication (mark them pending_adjudication)"
        )
        observed = {
            "below_floor": int(low.sum()),
            "silently_labelled": len(silent),
            "pending": int(_flag(df["pending_adjudication"]).sum()),
            "examples": _ids(silent),
        }
        return Outcome(name, cfg.sev(name), ok, observed, msg)


SUITE = LabelsSuite()
