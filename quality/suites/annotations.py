"""Suite of a round's ``annotation/round-N/annotations.parquet`` (one row per annotator per task).

Expectations (names are the keys of ``quality.yaml``'s ``annotations`` section):

``contract_columns``, ``<column>_not_null``  the table contract (quality/contracts.py) (ERROR)
``annotation_choice_in_allowed_set``  every class is one of ``allowed_classes`` (ERROR)
``every_task_has_k_annotations``  each task of the round has ``k`` annotators that did not skip
    it; ``k`` and the task list come from the round's ``round.json`` when ``ctx.zones`` is given,
    else ``k`` is the ``annotators`` param (ERROR)
``annotation_mask_iff_abnormal``  an annotation draws a mask exactly when its class is
    ``abnormal`` (WARN by default: single annotators err by design, and consensus settles it;
    the consensus labels suite makes the same rule an ERROR)

Messages carry counts, task keys and round names only (pseudonymous ids, no patient data).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from quality.contracts import ANNOTATIONS
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

DEFAULT_CLASSES: tuple[str, ...] = ("normal", "abnormal", "unreadable")
DEFAULT_ANNOTATORS = 3
ABNORMAL = "abnormal"
MAX_LISTED = 10


def _listed(values: Any) -> list[str]:
    return sorted(str(v) for v in values)[:MAX_LISTED]


def _flag(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


class AnnotationsSuite:
    table = "annotations"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        classes = list(cfg.get("allowed_classes", list(DEFAULT_CLASSES)))
        return [
            *(GxSpec(n, e) for n, e in ANNOTATIONS.gx_expectations()),
            GxSpec(
                "annotation_choice_in_allowed_set",
                gxe.ExpectColumnValuesToBeInSet(column="choice", value_set=classes),
            ),
        ]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if missing_columns(df):
            return []  # contract_columns already says which
        return [self._k_annotations(df, cfg, ctx), self._mask_iff_abnormal(df, cfg)]

    def _k_annotations(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> Outcome:
        name = "every_task_has_k_annotations"
        done = df.loc[~_flag(df["was_cancelled"])]
        per_task = done.groupby("task_key")["annotator"].nunique()
        short: list[str] = []
        ks: set[int] = set()
        for round, rows in df.groupby("round", sort=True):
            info = round_info(ctx, str(round))
            k = int(info["annotators"]) if info else int(cfg.get("annotators", DEFAULT_ANNOTATORS))
            ks.add(k)
            tasks = set(info["task_keys"]) if info else set(rows["task_key"].astype(str))
            counts = per_task.reindex(sorted(tasks)).fillna(0)
            short += [str(t) for t, n in counts.items() if n < k]
        ok = not short
        k_text = "/".join(str(k) for k in sorted(ks)) or str(cfg.get("annotators", 3))
        msg = (
            f"{name}: every task has its {k_text} annotations"
            if ok
            else f"{name}: {len(short)} task(s) have fewer than {k_text} annotations "
            f"(e.g. {', '.join(_listed(short)[:3])})"
        )
        observed = {"short_tasks": len(short), "examples": _listed(short)}
        return Outcome(name, cfg.sev(name), ok, observed, msg)

    def _mask_iff_abnormal(self, df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
        name = "annotation_mask_iff_abnormal"
        done = df.loc[~_flag(df["was_cancelled"])]
        abnormal = done["choice"].astype(object).eq(ABNORMAL)
        drawn = _flag(done["has_mask"])
        bad = done.loc[abnormal != drawn]
        no_mask = int((abnormal & ~drawn).sum())
        mask_not_abnormal = int((~abnormal & drawn).sum())
        ok = bad.empty
        msg = (
            f"{name}: every annotation draws a mask exactly when it says abnormal"
            if ok
            else f"{name}: {no_mask} abnormal annotation(s) without a mask and "
            f"{mask_not_abnormal} mask(s) on a slice not called abnormal "
            f"(of {len(done)} annotations)"
        )
        observed = {
            "abnormal_without_mask": no_mask,
            "mask_without_abnormal": mask_not_abnormal,
            "annotations": len(done),
            "examples": _listed(bad["task_key"].unique()),
        }
        return Outcome(name, cfg.severity.get(name, "WARN"), ok, observed, msg)


def missing_columns(df: pd.DataFrame) -> list[str]:
    return ANNOTATIONS.missing(df.columns)


def round_info(ctx: CheckContext, round: str) -> dict[str, Any] | None:
    """The round's ``round.json`` (annotators per task, task keys), when the zones have it."""
    if ctx.zones is None:
        return None
    path = ctx.zones.round_info(round)
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info if isinstance(info, dict) else None


SUITE = AnnotationsSuite()
