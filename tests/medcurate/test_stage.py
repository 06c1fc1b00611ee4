"""medcurate.stage: the contract every stage returns, without Dagster."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurate.stage import JsonValue, Markdown, Outcome, PathValue, StageResult, UrlValue


def test_outcome_is_a_stage_result() -> None:
    assert isinstance(Outcome("ingest"), StageResult)


def test_outcome_metadata_is_counts_then_values() -> None:
    out = Outcome(
        "normalize",
        "batch-1",
        counts={"volumes": 3, "quarantined": 1},
        values={"table": PathValue.of(Path("/h/volumes/volumes.parquet"))},
    )
    assert out.metadata() == {
        "volumes": 3,
        "quarantined": 1,
        "table": "/h/volumes/volumes.parquet",
    }
    assert list(out.metadata()) == ["volumes", "quarantined", "table"]
    assert out.problems == []


def test_outcome_summary_line() -> None:
    out = Outcome("deid", "batch-7", counts={"written": 5, "quarantined": 2})
    assert out.summary_line() == "deid batch-7: written 5, quarantined 2"
    out.problem_list.append("count mismatch")
    assert out.summary_line() == "deid batch-7: written 5, quarantined 2; 1 problem(s)"
    assert out.problems == ["count mismatch"]
    assert Outcome("release").summary_line() == "release: nothing to report"


def test_outcomes_do_not_share_their_dicts() -> None:
    a, b = Outcome("a"), Outcome("b")
    a.counts["n"] = 1
    a.problem_list.append("x")
    assert b.counts == {} and b.problems == []


@dataclass
class _OwnResult:
    """A room's own typed result: typed counts, the three members of the protocol."""

    written: int = 0
    problems: list[str] = field(default_factory=list)

    def metadata(self) -> Mapping[str, Any]:
        return {"written": self.written}

    def summary_line(self) -> str:
        return f"wrote {self.written}"


class _NoSummary:
    @property
    def problems(self) -> list[str]:
        return []

    def metadata(self) -> Mapping[str, Any]:
        return {}


def test_the_protocol_is_structural() -> None:
    assert isinstance(_OwnResult(), StageResult)
    assert not isinstance(_NoSummary(), StageResult)  # summary_line missing
    assert not isinstance({"problems": []}, StageResult)


def test_markers_stay_plain_values() -> None:
    """The domain tags values without dagster; untagged code sees plain str and dict."""
    md, url, path = Markdown("| a |"), UrlValue("http://127.0.0.1:8080/projects/3"), PathValue("/x")
    assert md == "| a |" and isinstance(md, str)
    assert url.startswith("http://") and path == "/x"
    assert PathValue.of(Path("/a/b")) == "/a/b" and isinstance(PathValue.of("/a"), PathValue)
    counts = JsonValue({"CT": 2, "MR": {"T1": 1}})
    assert json.loads(json.dumps(counts)) == {"CT": 2, "MR": {"T1": 1}}
    assert isinstance(counts, dict)
