"""The instance catalog (``restricted/catalog/<batch>.parquet``): its contract, its statuses and
reason codes, the modalities it lets through, and its books.

Config (``catalog`` in quality.yaml, ``params``): ``allowed_modalities`` (the modalities an ok row
may have). Expectation names are the keys of ``severity``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from medcurate.ingest import DUPLICATE, OK, QUARANTINED
from quality.contracts import CATALOG
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

STATUSES = (OK, QUARANTINED, DUPLICATE)
DEFAULT_MODALITIES = ("CT", "MR", "CR", "DX", "MG", "PT")
REASON_CODE = r"^$|^[A-Z][A-Z0-9_]*$"  # empty is reason_present's to report, not this one's

STATUS_IN_SET = "status_in_set"
MODALITY_ALLOWED = "modality_in_allowed_set"
REASON_UPPER = "reason_upper_case"
REASON_PRESENT = "reason_present"
ACCOUNTING = "accounting_balanced"
OK_HAS_UIDS = "ok_rows_have_uids"

_NOT_OK = f'status != "{OK}"'
_IS_OK = f'status == "{OK}"'


class CatalogSuite:
    table = "catalog"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        allowed = sorted(cfg.get("allowed_modalities", list(DEFAULT_MODALITIES)))
        specs = [GxSpec(n, e) for n, e in CATALOG.gx_expectations()]
        specs += [
            GxSpec(
                STATUS_IN_SET,
                gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
            ),
            GxSpec(
                MODALITY_ALLOWED,
                gxe.ExpectColumnValuesToBeInSet(
                    column="modality",
                    value_set=allowed,
                    row_condition=_IS_OK,
                    condition_parser="pandas",
                ),
            ),
            GxSpec(
                REASON_UPPER,
                gxe.ExpectColumnValuesToMatchRegex(
                    column="reason",
                    regex=REASON_CODE,
                    row_condition=_NOT_OK,
                    condition_parser="pandas",
                ),
            ),
        ]
        return specs

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        return [_reason_present(df, cfg), _accounting(df, cfg), _ok_has_uids(df, cfg)]


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index)


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def _reason_present(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    not_ok = _col(df, "status") != OK
    n = int((not_ok & _blank(_col(df, "reason"))).sum())
    msg = (
        f"{REASON_PRESENT}: passed"
        if n == 0
        else f"{REASON_PRESENT}: failed, {n} quarantined/duplicate row(s) without a reason code"
    )
    return Outcome(REASON_PRESENT, cfg.sev(REASON_PRESENT), n == 0, {"unexpected_count": n}, msg)


def _accounting(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    """received (rows) = ok + quarantined + duplicate, per batch and in all."""
    status = _col(df, "status")
    counts = {s: int((status == s).sum()) for s in STATUSES}
    received = len(df)
    observed: dict[str, Any] = {"received": received, **counts}
    unbalanced: list[str] = []
    if "batch" in df.columns:
        for batch, part in df.groupby("batch", dropna=False, sort=True):
            if len(part) != int(part["status"].isin(STATUSES).sum()):
                unbalanced.append(str(batch))
    ok = received == sum(counts.values()) and not unbalanced
    if ok:
        msg = (
            f"{ACCOUNTING}: passed, received {received} = ok {counts[OK]} + quarantined "
            f"{counts[QUARANTINED]} + duplicate {counts[DUPLICATE]}"
        )
    else:
        observed["batches"] = unbalanced[:10]
        msg = (
            f"{ACCOUNTING}: failed, received {received} != ok {counts[OK]} + quarantined "
            f"{counts[QUARANTINED]} + duplicate {counts[DUPLICATE]} "
            f"({received - sum(counts.values())} row(s) with no known status)"
        )
    return Outcome(ACCOUNTING, cfg.sev(ACCOUNTING), ok, observed, msg)


def _ok_has_uids(df: pd.DataFrame, cfg: SuiteConfig) -> Outcome:
    ok_rows = _col(df, "status") == OK
    missing = ok_rows & (_blank(_col(df, "sop_uid")) | _blank(_col(df, "series_uid")))
    n = int(missing.sum())
    msg = (
        f"{OK_HAS_UIDS}: passed"
        if n == 0
        else f"{OK_HAS_UIDS}: failed, {n} ok row(s) without sop_uid or series_uid"
    )
    return Outcome(OK_HAS_UIDS, cfg.sev(OK_HAS_UIDS), n == 0, {"unexpected_count": n}, msg)


SUITE = CatalogSuite()
