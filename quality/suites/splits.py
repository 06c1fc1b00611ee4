"""Suite of ``curated/splits.parquet`` (the samples with their split, fold and age band).

Expectations (names are the keys of ``quality.yaml``'s ``splits`` section):

``contract_columns``, ``<column>_not_null``  the samples contract (quality/contracts.py) (ERROR)
``split_in_set``           every split is train, validation, test or external (ERROR)
``no_patient_in_two_splits``  every patient's samples sit in one split (ERROR)
``split_balance_within_tolerance``  per split (``balance_splits``, default train/validation/
    test), the share of each value of ``balance_attributes`` (default label, sex, age_band, site)
    is within ``balance_tolerance`` (default 0.25) of the whole's share (WARN unless configured:
    a split of a few patients cannot be balanced tightly, e.g. the demo's 12 patients put two in
    validation and two in test, 0.6 off on age band and site; make it ERROR for real cohorts)
``evaluation_splits_have_positives``  every split of ``evaluation_splits`` (default validation,
    test) holds at least ``min_positives`` (default 1) real samples of each class of
    ``positive_classes`` (default abnormal), with a mask when ``positives_need_mask`` (default
    true: a segmentation model is evaluated on masks). When the cohort itself cannot satisfy it
    (too few positive patients or samples) the message says so (ERROR)
``synthetic_only_in_train``  synthetic samples only in train (ERROR)
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medcurate.splits import ALL_SPLITS, balance_report, leaking_patients
from quality.contracts import SAMPLES
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

DEFAULT_BALANCE_ATTRIBUTES: tuple[str, ...] = ("label", "sex", "age_band", "site")
DEFAULT_BALANCE_SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_TOLERANCE = 0.25
DEFAULT_EVALUATION_SPLITS: tuple[str, ...] = ("validation", "test")
DEFAULT_POSITIVE_CLASSES: tuple[str, ...] = ("abnormal",)
MAX_LISTED = 10


def _flag(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), False).astype(bool)


def _synthetic(df: pd.DataFrame) -> pd.Series:
    if "synthetic" not in df.columns:
        return pd.Series(False, index=df.index)
    return _flag(df["synthetic"])


def _has(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


class SplitsSuite:
    table = "splits"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        return [
            *(GxSpec(n, e) for n, e in SAMPLES.gx_expectations()),
            GxSpec(
                "split_in_set",
                gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(ALL_SPLITS)),
            ),
        ]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if {"sample_id", "patient", "split"} - set(df.columns):
            return []  # contract_columns already says which
        return [
            _no_leak(df, cfg),
            _balance(df, cfg),
            _positives(df, cfg),
            synthetic_in_train(df, cfg),
        ]


def _no_leak(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    name = "no_patient_in_two_splits"
    n = len(leaking_patients(df))  # a count only: pseudonyms stay out of messages
    msg = (
        f"{name}: every patient sits in one split"
        if not n
        else f"{name}: {n} patient(s) have samples in more than one split"
    )
    return Outcome(name, cfg.sev(name), not n, {"leaking_patients": n}, msg)


def _balance(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    name = "split_balance_within_tolerance"
    attrs = [str(a) for a in cfg.get("balance_attributes", list(DEFAULT_BALANCE_ATTRIBUTES))]
    splits = [str(s) for s in cfg.get("balance_splits", list(DEFAULT_BALANCE_SPLITS))]
    tol = float(cfg.get("balance_tolerance", DEFAULT_TOLERANCE))
    report = balance_report(df, attrs)
    part = report.loc[report["split"].isin(splits)]
    off = part.loc[part["deviation"].abs() > tol + 1e-9]
    worst = float(part["deviation"].abs().max()) if len(part) else 0.0
    ok = off.empty
    # attribute values are codes (label, sex, age band, site code): safe to name
    where = sorted({f"{r.split}:{r.attribute}={r.value}" for r in off.itertuples()})[:MAX_LISTED]
    msg = (
        f"{name}: every split's shares are within {tol} of the whole (largest {worst:.3f})"
        if ok
        else f"{name}: {len(off)} split share(s) deviate from the whole by more than {tol} "
        f"(largest {worst:.3f}: {', '.join(where[:3])})"
    )
    observed = {"max_deviation": round(worst, 4), "tolerance": tol, "off": where}
    return Outcome(name, cfg.severity.get(name, "WARN"), ok, observed, msg)


def _positives(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    name = "evaluation_splits_have_positives"
    splits = [str(s) for s in cfg.get("evaluation_splits", list(DEFAULT_EVALUATION_SPLITS))]
    classes = [str(c) for c in cfg.get("positive_classes", list(DEFAULT_POSITIVE_CLASSES))]
    need = int(cfg.get("min_positives", 1))
    need_mask = bool(cfg.get("positives_need_mask", True))
    real = df.loc[~_synthetic(df)]
    if "label" not in real.columns:
        real = real.assign(label=None)
    positive = real["label"].astype(object).isin(classes)
    if need_mask:
        masks = real["mask_path"] if "mask_path" in real.columns else pd.Series(None, real.index)
        positive &= masks.map(_has).astype(bool)
    counts: dict[str, dict[str, int]] = {}
    short: list[str] = []
    for split in splits:
        in_split = real["split"].astype(str).eq(split)
        counts[split] = {}
        for cls in classes:
            n = int((positive & in_split & real["label"].astype(object).eq(cls)).sum())
            counts[split][cls] = n
            if n < need:
                short.append(f"{split}:{cls}={n}")
    ok = not short
    what = "positive(s) with a mask" if need_mask else "positive(s)"
    if ok:
        msg = f"{name}: each of {', '.join(splits)} holds at least {need} {what} per class"
        return Outcome(name, cfg.sev(name), ok, {"counts": counts}, msg)
    cannot = []
    for cls in classes:
        pos = real.loc[positive & real["label"].astype(object).eq(cls)]
        patients, samples = int(pos["patient"].nunique()), len(pos)
        if patients < len(splits) or samples < need * len(splits):
            cannot.append(
                f"the cohort cannot satisfy it for {cls}: {samples} {what} from {patients} "
                f"patient(s) for {len(splits)} evaluation split(s) needing {need} each "
                "(grow the cohort or label more samples; never ship it)"
            )
    tail = "; ".join(cannot) or (
        "the cohort has enough: the assignment did not place them (change the split seed or ratios)"
    )
    msg = f"{name}: too few {what} in {', '.join(short)} (need {need}); {tail}"
    observed = {"counts": counts, "cohort_cannot_satisfy": bool(cannot)}
    return Outcome(name, cfg.sev(name), ok, observed, msg)


def synthetic_in_train(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    """Synthetic samples only ever in train (splits and releases alike)."""
    name = "synthetic_only_in_train"
    syn = df.loc[_synthetic(df)]
    bad = syn.loc[syn["split"].astype(str) != "train"]
    ok = bad.empty
    msg = (
        f"{name}: all {len(syn)} synthetic sample(s) are in train"
        if ok
        else f"{name}: {len(bad)} synthetic sample(s) outside train"
    )
    observed = {
        "synthetic": len(syn),
        "outside_train": len(bad),
        "examples": sorted(bad["sample_id"].astype(str))[:MAX_LISTED],
    }
    return Outcome(name, cfg.sev(name), ok, observed, msg)


SUITE = SplitsSuite()
