"""Model lines across releases: reuse for the same training, a warm start when the last model's
train samples are a subset of this train split, from scratch when one of them left train."""

from __future__ import annotations

import json
from pathlib import Path

from medcurate.evaluate import lineage


def _line(tmp_path: Path, seen: list[str], key: str = "k1") -> lineage.Plan:
    first = lineage.plan(tmp_path, "L", key, seen, 8, "m")
    (tmp_path / f"m-{first.model_id}.pt").write_bytes(b"weights")
    lineage.record(tmp_path, "L", key, seen, first)
    return first


def test_no_record_trains_from_scratch(tmp_path: Path) -> None:
    p = lineage.plan(tmp_path, "L", "k1", ["a", "b"], 8, "m")
    assert p == lineage.Plan("k1", 8)


def test_superset_warm_starts_with_a_share_of_the_epochs(tmp_path: Path) -> None:
    first = _line(tmp_path, [f"s{i}" for i in range(10)])
    assert first.parent == "" and first.epochs == 8
    p = lineage.plan(tmp_path, "L", "k2", [f"s{i}" for i in range(12)], 8, "m")
    assert p.parent == first.model_id and p.parent_file == tmp_path / f"m-{first.model_id}.pt"
    assert p.epochs == 2  # ceil(8 * 2/12)
    assert p.model_id not in ("k2", first.model_id) and abs(p.new_share - 2 / 12) < 1e-12
    # one new sample of many: at least a tenth of the epochs
    few = lineage.plan(tmp_path, "L", "k3", [f"s{i}" for i in range(11)], 30, "m")
    assert few.epochs == 3
    # the same history gives the same plan (ids included)
    assert lineage.plan(tmp_path, "L", "k2", [f"s{i}" for i in range(12)], 8, "m") == p


def test_a_sample_that_left_train_forces_scratch(tmp_path: Path) -> None:
    _line(tmp_path, ["a", "b", "c"])
    # "c" moved to validation (or was relabelled: its content key changed)
    p = lineage.plan(tmp_path, "L", "k2", ["a", "b", "d", "e"], 8, "m")
    assert p == lineage.Plan("k2", 8)


def test_the_same_training_reuses_the_last_model(tmp_path: Path) -> None:
    _line(tmp_path, ["a", "b"])
    warm = lineage.plan(tmp_path, "L", "k2", ["a", "b", "c"], 8, "m")
    (tmp_path / f"m-{warm.model_id}.pt").write_bytes(b"weights")
    lineage.record(tmp_path, "L", "k2", ["a", "b", "c"], warm)
    rec = json.loads((tmp_path / "lineage-L.json").read_text())
    assert rec["parent"] == warm.parent and rec["train_samples"] == ["a", "b", "c"]
    again = lineage.plan(tmp_path, "L", "k2", ["a", "b", "c"], 8, "m")
    assert again.model_id == warm.model_id and again.parent_file is None


def test_missing_parent_file_or_damaged_record_trains_from_scratch(tmp_path: Path) -> None:
    first = _line(tmp_path, ["a"])
    (tmp_path / f"m-{first.model_id}.pt").unlink()
    assert lineage.plan(tmp_path, "L", "k2", ["a", "b"], 8, "m").parent == ""
    (tmp_path / "lineage-L.json").write_text("{")
    assert lineage.plan(tmp_path, "L", "k2", ["a", "b"], 8, "m").parent == ""


def test_line_names_differ_by_config_and_role() -> None:
    a = lineage.line_name("clf", "real", {"epochs": 8})
    assert a != lineage.line_name("clf", "real", {"epochs": 9})
    assert a != lineage.line_name("clf", "real+synthetic", {"epochs": 8})
    assert a == lineage.line_name("clf", "real", {"epochs": 8})
