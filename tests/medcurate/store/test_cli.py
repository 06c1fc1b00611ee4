"""``medcurate datasets list / show / pull / diff`` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medcurate.cli import app
from medcurate.splits import assign_splits
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore
from medcurate.store.release import release_dataset

runner = CliRunner()


def test_cli_list_show_pull_diff(tmp_path: Path, release_cohort) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "releases"
    store = ObjectStore(root)
    vol, lab = release_cohort(tmp_path, 6)
    a = assign_splits(curate_samples(vol, lab))
    r1 = release_dataset(store, "demo", a, tmp_path / "volumes", tmp_path / "labels")
    b = a.copy()
    b.loc[0, "label"] = "unreadable" if a.loc[0, "label"] != "unreadable" else "normal"
    release_dataset(store, "demo", b, tmp_path / "volumes", tmp_path / "labels")
    s = ["--store", str(root)]

    out = runner.invoke(app, ["datasets", "list", *s])
    assert out.exit_code == 0, out.output
    assert "demo@v1" in out.output and "demo@v2" in out.output and r1.info.id in out.output

    out = runner.invoke(app, ["datasets", "show", "demo@v1", *s, "--card"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.split("\n# demo")[0])
    assert summary["samples"] == len(a) and summary["digest"] == r1.info.digest
    assert "## Composition" in out.output

    out = runner.invoke(app, ["datasets", "pull", "demo@v1", str(tmp_path / "d1"), *s, "-q"])
    assert out.exit_code == 0, out.output
    assert len(pd.read_parquet(tmp_path / "d1" / "manifest.parquet")) == len(a)
    out = runner.invoke(
        app, ["datasets", "pull", "demo@v2", str(tmp_path / "nn"), "--format", "nnunet", *s, "-q"]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "nn" / "splits_final.json").exists()

    out = runner.invoke(app, ["datasets", "diff", "demo@v1", "demo@v2", *s])
    assert out.exit_code == 0, out.output
    assert "1 relabelled" in out.output

    out = runner.invoke(app, ["datasets", "show", "demo@v9", *s])
    assert out.exit_code == 1 and "does not exist" in out.output


def test_cli_list_empty_store(tmp_path: Path) -> None:
    out = runner.invoke(app, ["datasets", "list", "--store", str(tmp_path)])
    assert out.exit_code == 0 and "no datasets" in out.output
