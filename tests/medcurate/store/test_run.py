"""The release stages as plain functions: run_curate, run_splits, check_splits, run_release,
and the card's lineage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.splits import SplitConfig
from medcurate.stage import Markdown, PathValue, StageResult
from medcurate.store.card import code_version, lineage
from medcurate.store.objects import ObjectStore, StoreUnavailableError
from medcurate.store.publish import latest_version, list_versions, load_manifest
from medcurate.store.run import (
    DEFAULT_DATASET,
    MissingTableError,
    ReleaseSettings,
    check_splits,
    release_store,
    run_curate,
    run_release,
    run_splits,
)


def _inputs(z: Zones, release_cohort, patients: int = 8, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    vol, lab = release_cohort(z.home, patients, start=start)
    if z.volumes_table.exists():
        vol = pd.concat([pd.read_parquet(z.volumes_table), vol], ignore_index=True)
        lab = pd.concat([pd.read_parquet(z.labels_table), lab], ignore_index=True)
    vol.to_parquet(z.volumes_table, index=False)
    lab.to_parquet(z.labels_table, index=False)


def _chain(z: Zones, store: ObjectStore, run_id: str = "run-1"):  # type: ignore[no-untyped-def]
    curated = run_curate(z)
    split = run_splits(z, SplitConfig(folds=2, seed=3), store)
    released = run_release(z, ReleaseSettings(), store, run_id)
    return curated, split, released


def test_zones_own_the_release_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    z = Zones(tmp_path)
    assert z.volumes_table == tmp_path / "volumes" / "volumes.parquet"
    assert z.labels_table == tmp_path / "labels" / "labels.parquet"
    assert z.label_masks == tmp_path / "labels" / "masks"
    assert z.samples_table == tmp_path / "curated" / "samples.parquet"
    assert z.splits_table == tmp_path / "curated" / "splits.parquet"
    assert z.balance_plot == tmp_path / "curated" / "balance.png"
    assert z.dataset_cache("demo", "v2") == tmp_path / "cache" / "datasets" / "demo" / "v2"


def test_run_curate_writes_samples_and_reports_counts(zones_tmp: Zones, release_cohort) -> None:  # type: ignore[no-untyped-def]
    _inputs(zones_tmp, release_cohort, 6)
    res = run_curate(zones_tmp)
    assert isinstance(res, StageResult) and res.problems == []
    samples = pd.read_parquet(zones_tmp.samples_table)
    assert len(samples) == len(res.samples) == res.metadata()["samples"]
    md = res.metadata()
    assert list(md) == ["samples", "patients", "labels", "labels_available", "path"]
    assert md["patients"] == 6 and md["labels_available"] is True
    assert isinstance(md["labels"], Markdown) and "| label | samples |" in md["labels"]
    assert isinstance(md["path"], PathValue) and md["path"] == str(zones_tmp.samples_table)
    line = res.summary_line()
    assert line.startswith(f"curate: {len(samples)} samples of 6 patients") and "\n" not in line
    assert not list(zones_tmp.curated.glob(".*tmp*"))  # written atomically, nothing left over


def test_run_curate_without_volumes_names_the_upstream_asset(zones_tmp: Zones) -> None:
    with pytest.raises(MissingTableError, match="materialize series_volumes first"):
        run_curate(zones_tmp)
    with pytest.raises(MissingTableError, match="materialize curated_samples first"):
        run_splits(zones_tmp, SplitConfig(), release_store(zones_tmp))
    with pytest.raises(MissingTableError, match="materialize dataset_splits first"):
        run_release(zones_tmp, ReleaseSettings(), release_store(zones_tmp), "r")


def test_chain_of_plain_functions_is_the_assets_chain(  # type: ignore[no-untyped-def]
    zones_tmp: Zones, release_cohort, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDCURATE_FIGURES_URL", raising=False)  # the default URL
    _inputs(zones_tmp, release_cohort, 8)
    store = release_store(zones_tmp)
    curated, split, released = _chain(zones_tmp, store)
    assert curated.metadata()["samples"] == len(split.assigned) == released.metadata()["samples"]

    smd = split.metadata()
    assert list(smd) == [
        "counts", "balance", "max_deviation", "previous_version", "path", "balance_plot",
        "balance_plot_embedded",
    ]  # fmt: skip
    assert smd["previous_version"] == "none" and split.problems == []
    # a short link Dagster shows inline, to a copy named by its content under curated/figures/
    assert len(smd["balance_plot"]) < 1000
    assert smd["balance_plot"].startswith("[![balance](http://127.0.0.1:3001/curated/figures/")
    [copy] = (zones_tmp.curated / "figures").glob("balance-*.png")
    assert copy.read_bytes() == zones_tmp.balance_plot.read_bytes()
    url = f"http://127.0.0.1:3001/curated/figures/{copy.name}"
    assert smd["balance_plot"] == f"[![balance]({url})]({url})"  # a click: full size
    assert smd["balance_plot_embedded"].startswith("![balance](data:image/png;base64,")
    assert zones_tmp.balance_plot.read_bytes()[:4] == b"\x89PNG"
    assert "largest stratum deviation" in split.summary_line()

    rmd = released.metadata()
    info = list_versions(store, DEFAULT_DATASET)[0]
    assert (rmd["version"], rmd["version_id"], rmd["created"]) == ("v1", info.id, True)
    assert rmd["manifest_digest"] == info.digest and rmd["pull"].endswith("@v1 DEST")
    assert "| split | samples |" in rmd["splits"] and released.problems == []
    assert f"{info.id} published" in released.summary_line()
    # the release page: a short summary inline, the full card, the plot by URL
    summary = rmd["card_summary"]
    assert len(summary) < 1000 and f"{DEFAULT_DATASET}@v1" in summary and info.id in summary
    counts = released.splits.value_counts()
    assert f"train {counts['train']}" in summary and "labels: " in summary
    card_url = f"http://127.0.0.1:3001/releases/{DEFAULT_DATASET}/v1/card.md"
    assert f"[dataset card]({card_url})" in summary
    assert rmd["card"] == (zones_tmp.releases / DEFAULT_DATASET / "v1" / "card.md").read_text()
    assert rmd["balance_plot"].startswith("[![balance](http://127.0.0.1:3001/curated/figures/")
    assert len(rmd["balance_plot"]) < 1000

    # the same inputs again: no new version; new patients: v2, and v1's patients stay put
    assert run_release(zones_tmp, ReleaseSettings(), store, "run-2").published.created is False
    _inputs(zones_tmp, release_cohort, 3, start=8)
    _, split2, released2 = _chain(zones_tmp, store, "run-3")
    assert split2.metadata()["previous_version"] == info.id
    assert released2.published.info.version == "v2"
    m1 = load_manifest(store, info).set_index("sample_id")
    m2 = load_manifest(store, released2.published.info).set_index("sample_id").loc[m1.index]
    assert (m1["split"] == m2["split"]).all() and (m1["fold"] == m2["fold"]).all()
    card = (zones_tmp.releases / DEFAULT_DATASET / "v2" / "card.md").read_text()
    assert '"dagster_run_id": "run-3"' in card


def test_check_splits_counts_leaking_patients_without_naming_them(zones_tmp: Zones) -> None:
    assert check_splits(zones_tmp) == [
        "splits.parquet is missing: materialize dataset_splits first"
    ]
    rows = {
        "sample_id": ["a0", "a1", "b0", "c0", "c1", "g0", "g1"],
        "patient": ["pA", "pA", "pB", "pC", "pC", "gen", "gen"],
        "split": ["train", "train", "test", "train", "validation", "train", "test"],
        "synthetic": [False, False, False, False, False, True, True],
    }
    zones_tmp.curated.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(zones_tmp.splits_table, index=False)
    problems = check_splits(zones_tmp)
    assert problems == ["1 patient(s) have samples in more than one split"]  # synthetic: exempt
    assert "pC" not in " ".join(problems)
    ok = pd.DataFrame(rows).assign(split=lambda d: d["split"].where(d["patient"] != "pC", "test"))
    ok.to_parquet(zones_tmp.splits_table, index=False)
    assert check_splits(zones_tmp) == []


def test_lineage_hashes_the_upstream_tables_that_exist(zones_tmp: Zones) -> None:
    zones_tmp.volumes.mkdir(parents=True, exist_ok=True)
    zones_tmp.volumes_table.write_bytes(b"volumes")
    got = lineage(zones_tmp, "run-x")
    assert got == {
        "code_version": code_version(),
        "dagster_run_id": "run-x",
        "upstream": {"volumes.parquet": "sha256:" + sha256_file(zones_tmp.volumes_table)},
    }
    zones_tmp.labels.mkdir(parents=True, exist_ok=True)
    zones_tmp.labels_table.write_bytes(b"labels")
    zones_tmp.curated.mkdir(parents=True, exist_ok=True)
    zones_tmp.splits_table.write_bytes(b"splits")
    upstream = lineage(zones_tmp, "run-x")["upstream"]
    assert list(upstream) == ["volumes.parquet", "labels.parquet", "splits.parquet"]
    json.dumps(upstream)  # plain JSON for the card


def test_release_store_and_latest_version(zones_tmp: Zones, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert release_store(zones_tmp).root == str(zones_tmp.releases)
    assert release_store(zones_tmp, str(tmp_path / "elsewhere")).root == str(tmp_path / "elsewhere")
    with pytest.MonkeyPatch.context() as mp:  # where readers look: $MEDCURATE_STORE
        mp.setenv("MEDCURATE_STORE", str(tmp_path / "shared"))
        assert release_store(zones_tmp).root == str(tmp_path / "shared")
        assert release_store(zones_tmp, str(tmp_path / "given")).root == str(tmp_path / "given")
    with pytest.raises(StoreUnavailableError, match="protocol 'nosuchproto'"):
        release_store(zones_tmp, "nosuchproto://bucket/releases")
    assert latest_version(release_store(zones_tmp), "demo") is None
