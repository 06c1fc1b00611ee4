"""The runner: GX expectations and extra checks merged into one PHI-free SuiteResult, severity
from the config file, a raising suite contained, one GX context for many suites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medcurate.config import Zones
from quality import runner
from quality.runner import (
    CheckContext,
    GxSpec,
    Outcome,
    SuiteConfig,
    SuiteResult,
    check_table,
    load_config,
    read_table,
    run_suite,
    scrub_observed,
)
from quality.suites import TABLES


class TinySuite:
    """Modality in a set (GX), a name column checked by GX (text: values withheld) and one extra
    check counting rows."""

    table = "catalog"

    def __init__(self, extra: Any = None) -> None:
        self.extra = extra

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        allowed = cfg.get("allowed_modalities", ["CT", "MR"])
        return [
            GxSpec("modality_in_allowed_set",
                   gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=allowed)),
            GxSpec("name_is_redacted",
                   gxe.ExpectColumnValuesToBeInSet(column="name", value_set=["REDACTED"])),
        ]  # fmt: skip

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if self.extra is not None:
            return self.extra(df)
        ok = len(df) >= cfg.get("min_rows", 1)
        return [Outcome("enough_rows", cfg.sev("enough_rows"), ok, len(df),
                        f"enough_rows: {len(df)} row(s)")]  # fmt: skip


def _good() -> pd.DataFrame:
    return pd.DataFrame({"modality": ["CT", "MR", "CT"], "name": ["REDACTED"] * 3})


def _by_name(result: SuiteResult) -> dict[str, Outcome]:
    return {o.expectation: o for o in result.outcomes}


def test_a_good_table_passes_gx_and_extra_checks_merged_after_gx() -> None:
    result = run_suite(TinySuite(), _good(), SuiteConfig())
    assert [o.expectation for o in result.outcomes] == [
        "modality_in_allowed_set", "name_is_redacted", "enough_rows",
    ]  # fmt: skip
    assert all(o.success for o in result.outcomes)
    assert result.problems == [] and result.warnings == []
    assert "passed" in result.summary_line() and result.rows == 3


def test_a_planted_defect_fails_exactly_its_expectation_with_ids_shown() -> None:
    df = _good()
    df.loc[1, "modality"] = "XX"
    result = run_suite(TinySuite(), df, SuiteConfig())
    failed = [o for o in result.outcomes if not o.success]
    assert [o.expectation for o in failed] == ["modality_in_allowed_set"]
    (o,) = failed
    assert o.severity == "ERROR" and "modality_in_allowed_set" in o.message
    assert o.observed["unexpected_count"] == 1 and o.observed["unexpected_values"] == ["XX"]
    assert result.problems == [o.message]


def test_text_values_never_reach_observed_or_messages() -> None:
    df = _good()
    df.loc[0, "name"] = "Doe^John"
    result = run_suite(TinySuite(), df, SuiteConfig())
    o = _by_name(result)["name_is_redacted"]
    assert not o.success and o.observed["unexpected_count"] == 1
    assert "Doe" not in repr(result.outcomes) and "Doe" not in str(result.metadata())


def test_severity_and_params_come_from_the_config() -> None:
    df = _good()
    df.loc[1, "modality"] = "XX"
    cfg = SuiteConfig(severity={"modality_in_allowed_set": "WARN", "enough_rows": "WARN"},
                      params={"min_rows": 5})  # fmt: skip
    result = run_suite(TinySuite(), df, cfg)
    out = _by_name(result)
    assert out["modality_in_allowed_set"].severity == "WARN"
    assert out["enough_rows"].severity == "WARN" and not out["enough_rows"].success
    assert result.problems == [] and len(result.warnings) == 2
    assert "warnings" in result.summary_line()
    allowed = run_suite(
        TinySuite(), df, SuiteConfig(params={"allowed_modalities": ["CT", "XX", "MR"]})
    )
    assert allowed.problems == []


def test_an_extra_check_that_raises_is_one_failed_error_naming_the_exception() -> None:
    def boom(df: pd.DataFrame) -> list[Outcome]:
        raise KeyError("Doe^John")

    result = run_suite(TinySuite(extra=boom), _good(), SuiteConfig())
    out = _by_name(result)
    assert out["modality_in_allowed_set"].success  # GX's outcomes are kept
    raised = out["extra_checks_raised"]
    assert raised.severity == "ERROR" and not raised.success
    assert "KeyError" in raised.message and "Doe" not in raised.message
    assert result.problems == [raised.message]


def test_a_missing_column_fails_its_expectation_not_the_run() -> None:
    result = run_suite(TinySuite(), _good().drop(columns=["name"]), SuiteConfig())
    o = _by_name(result)["name_is_redacted"]
    assert not o.success and "name_is_redacted" in o.message


def test_one_gx_context_for_many_suites() -> None:
    run_suite(TinySuite(), _good(), SuiteConfig())
    created = runner.gx_contexts_created()
    for _ in range(3):
        run_suite(TinySuite(), _good(), SuiteConfig())
    assert created == 1 and runner.gx_contexts_created() == 1


def test_a_suite_without_gx_expectations_never_touches_gx() -> None:
    class OnlyExtra(TinySuite):
        def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
            return []

    result = run_suite(OnlyExtra(), _good(), SuiteConfig())
    assert [o.expectation for o in result.outcomes] == ["enough_rows"]


def test_docs_page_is_written_when_asked(tmp_path: Path) -> None:
    result = run_suite(TinySuite(), _good(), SuiteConfig(), docs_dir=tmp_path)
    assert result.docs is not None and result.docs.is_file()
    assert "data_docs" in result.metadata()


def test_the_shipped_config_has_a_section_per_table_and_valid_severities() -> None:
    cfg = load_config()
    assert set(TABLES) <= set(cfg)
    for section in cfg.values():
        assert set(section.severity.values()) <= {"ERROR", "WARN"}
    assert SuiteConfig().sev("anything") == "ERROR" and SuiteConfig().get("x", 3) == 3


def test_a_bad_severity_in_the_config_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "q.yaml"
    bad.write_text("catalog:\n  severity: {modality_in_allowed_set: FATAL}\n")
    with pytest.raises(runner.QualityConfigError, match="modality_in_allowed_set"):
        load_config(bad)


def test_scrub_keeps_counts_and_withholds_text_values() -> None:
    gx_result = {"element_count": 4, "unexpected_count": 1, "unexpected_percent": 25.0,
                 "partial_unexpected_list": ["Doe^John"], "observed_value": "Doe^John"}  # fmt: skip
    scrubbed = scrub_observed(gx_result, "patient_name")
    assert scrubbed["unexpected_count"] == 1 and "unexpected_values" not in scrubbed
    assert "Doe" not in str(scrubbed)
    ids = scrub_observed({"partial_unexpected_list": [f"s{i}" for i in range(20)]}, "sample_id")
    assert len(ids["unexpected_values"]) == 10


def test_tables_are_read_from_the_zones_per_partition(zones_tmp: Zones) -> None:
    z = zones_tmp
    assert read_table(z, "catalog")[0] is None and read_table(z, "release")[0] is None
    for batch in ("b1", "b2"):
        pd.DataFrame({"batch": [batch] * 2, "modality": ["CT", "MR"]}).to_parquet(
            z.catalog_file(batch), index=False
        )
    assert len(read_table(z, "catalog")[0]) == 4  # type: ignore[arg-type]
    assert set(read_table(z, "catalog", "b2")[0]["batch"]) == {"b2"}  # type: ignore[index]
    z.volumes.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sample_id": ["s1", "s2"], "batch": ["b1", "b2"]}).to_parquet(z.volumes_table)
    assert list(read_table(z, "volumes", "b1")[0]["sample_id"]) == ["s1"]  # type: ignore[index]
    result = check_table(z, "labels")
    assert not result.materialized and "not materialized" in result.summary_line()
    assert result.problems == []


def test_a_table_that_cannot_be_read_is_one_failed_error(zones_tmp: Zones) -> None:
    zones_tmp.labels.mkdir(parents=True, exist_ok=True)
    zones_tmp.labels_table.write_bytes(b"not parquet")
    result = check_table(zones_tmp, "labels")
    assert [o.expectation for o in result.outcomes] == ["table_readable"]
    assert result.problems and "labels table could not be read" in result.problems[0]
