"""``medcurate quality run``: one line per table, exit 1 on an ERROR failure only, tables not
materialized yet reported (not failures)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

import quality.suites
from medcurate.cli import app  # the quality group joins it through its entry point
from medcurate.config import Zones
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig


class LabelsSuite:
    """A tiny labels suite: class in a set (GX, ERROR) and a WARN-level extra check."""

    table = "labels"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        allowed = ["normal", "abnormal"]
        exp = gxe.ExpectColumnValuesToBeInSet(column="label", value_set=allowed)
        return [GxSpec("tiny_class_in_set", exp)]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        few = int((df["label"] == "abnormal").sum()) < 2
        return [Outcome("tiny_few_positives", "WARN", not few, int(few), "tiny_few_positives: few")]


@pytest.fixture
def tiny_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    real = quality.suites.get_suite

    def get_suite(table: str):  # type: ignore[no-untyped-def]
        return LabelsSuite() if table == "labels" else real(table)

    monkeypatch.setattr(quality.suites, "get_suite", get_suite)


def _labels(z: Zones, labels: list[str]) -> None:
    z.labels.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(labels))], "label": labels})
    df.to_parquet(z.labels_table, index=False)


def test_an_error_failure_exits_1(zones_tmp: Zones, tiny_labels: None) -> None:
    _labels(zones_tmp, ["normal", "abnormal", "bogus"])
    out = CliRunner().invoke(app, ["quality", "run", "--table", "labels"])
    assert out.exit_code == 1, out.output
    assert "quality labels: FAILED" in out.output and "tiny_class_in_set" in out.output
    assert (zones_tmp.quality_docs / "index.html").is_file()


def test_warnings_only_exit_0(zones_tmp: Zones, tiny_labels: None) -> None:
    _labels(zones_tmp, ["normal", "abnormal", "normal"])
    out = CliRunner().invoke(app, ["quality", "run", "--table", "labels"])
    assert out.exit_code == 0, out.output
    assert "passed with warnings" in out.output and "WARN  tiny_few_positives" in out.output


def test_tables_not_materialized_are_reported_not_failed(zones_tmp: Zones) -> None:
    out = CliRunner().invoke(app, ["quality", "run"])
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if ln.startswith("quality ")]
    assert len(lines) == 7 and all("not materialized" in ln for ln in lines)


def test_an_unknown_table_is_refused(zones_tmp: Zones) -> None:
    out = CliRunner().invoke(app, ["quality", "run", "--table", "nope"])
    assert out.exit_code == 2 and "unknown table" in out.output


def test_quality_is_a_command_of_medcurate_through_its_entry_point() -> None:
    code = "from medcurate.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "quality", "run", "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--table" in out.stdout
