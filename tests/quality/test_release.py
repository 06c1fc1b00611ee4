"""The release suite on real published versions: a good one passes; each planted defect (in the
manifest, dataset.json, the card, the documents or the objects) fails exactly its expectation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medcurate.config import Zones
from medcurate.splits import assign_splits
from medcurate.store.card import render_card
from medcurate.store.manifest import UNLABELLED, build_manifest, curate_samples, datalist
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import VersionInfo, publish
from quality.runner import CheckContext, SuiteConfig, run_suite
from quality.suites.release import ReleaseSuite, card_counts, load_release, manifest_counts

SUITE = ReleaseSuite()
CFG = SuiteConfig()
Docs = Callable[[VersionInfo, pd.DataFrame], dict[str, bytes]]


def _docs(info: VersionInfo, m: pd.DataFrame) -> dict[str, bytes]:
    """The documents release_dataset renders, plus one more (a target for tampering)."""
    return {
        "dataset.json": json.dumps(datalist(m, info.dataset, info.id)).encode(),
        "card.md": render_card(m, info.id, info.dataset).encode(),
        "notes.txt": b"notes\n",
    }


class Cohort:
    def __init__(self, root: Path, release_cohort: Any) -> None:
        self.root = root
        self.store = ObjectStore(root / "releases")
        self.volumes, self.labels = release_cohort(root, 8)
        self.zones = Zones(root)
        self.labels.to_parquet(self.zones.labels_table, index=False)

    def assigned(self) -> pd.DataFrame:
        return assign_splits(curate_samples(self.volumes, self.labels))

    def publish(self, assigned: pd.DataFrame | None = None, docs: Docs = _docs) -> VersionInfo:
        a = self.assigned() if assigned is None else assigned
        m, sources = build_manifest(a, self.root / "volumes", self.root / "labels")
        return publish(self.store, "demo", m, sources, docs).info

    def failed(self, info: VersionInfo, zones: bool = True) -> dict[str, str]:
        df, info = load_release(self.store, info.ref)
        ctx = CheckContext(zones=self.zones if zones else None, store=self.store, version=info)
        res = run_suite(SUITE, df, CFG, ctx)
        return {o.expectation: o.message for o in res.outcomes if not o.success}


@pytest.fixture
def cohort(tmp_path: Path, release_cohort: Any) -> Cohort:
    return Cohort(tmp_path, release_cohort)


def _first(df: pd.DataFrame, **where: Any) -> int:
    mask = pd.Series(True, index=df.index)
    for k, v in where.items():
        mask &= df[k] == v
    return int(df.index[mask][0])


def test_good_release_passes(cohort: Cohort) -> None:
    assert cohort.failed(cohort.publish()) == {}


def test_unlabelled_samples_marked_and_kept_out_pass(cohort: Cohort) -> None:
    """A release with unlabelled samples passes: they are marked and listed apart."""
    cohort.labels = cohort.labels.iloc[4:]
    info = cohort.publish()
    df, _ = load_release(cohort.store, info.ref)
    assert (df["label"] == UNLABELLED).sum() > 0
    assert cohort.failed(info) == {}


def test_label_outside_allowed_set(cohort: Cohort) -> None:
    a = cohort.assigned()
    a.loc[_first(a, label="normal"), "label"] = "benign"
    assert list(cohort.failed(cohort.publish(a), zones=False)) == ["release_label_in_allowed_set"]


def test_labelled_without_source_round(cohort: Cohort) -> None:
    a = cohort.assigned()
    a.loc[_first(a, label="normal"), "source_round"] = None
    out = cohort.failed(cohort.publish(a))
    assert list(out) == ["only_labelled_released_as_labelled"]
    assert (
        "1 labelled sample(s) without a source round" in out["only_labelled_released_as_labelled"]
    )


def test_pending_sample_released_as_labelled(cohort: Cohort) -> None:
    a = cohort.assigned()  # joined before the reviewer's queue was known
    cohort.labels["pending_adjudication"] = False
    cohort.labels.loc[_first(cohort.labels, label="normal"), "pending_adjudication"] = True
    cohort.labels.to_parquet(cohort.zones.labels_table, index=False)
    out = cohort.failed(cohort.publish(a))
    assert list(out) == ["only_labelled_released_as_labelled"]
    assert (
        "1 whose label is not a settled consensus label"
        in out["only_labelled_released_as_labelled"]
    )


def test_unlabelled_sample_with_a_mask(cohort: Cohort) -> None:
    a = cohort.assigned()
    a.loc[_first(a, label="abnormal", split="train"), "label"] = UNLABELLED
    out = cohort.failed(cohort.publish(a), zones=False)
    assert list(out) == ["only_labelled_released_as_labelled"]
    assert "1 unlabelled sample(s) with a mask" in out["only_labelled_released_as_labelled"]


def test_unlabelled_sample_in_datalist_training(cohort: Cohort) -> None:
    cohort.labels = cohort.labels.iloc[4:]

    def old_datalist(info: VersionInfo, m: pd.DataFrame) -> dict[str, bytes]:
        docs = _docs(info, m)
        dl = json.loads(docs["dataset.json"])
        dl["training"] += dl.pop(UNLABELLED)  # as datalists were before unlabelled were kept out
        docs["dataset.json"] = json.dumps(dl).encode()
        return docs

    out = cohort.failed(cohort.publish(docs=old_datalist))
    assert list(out) == ["unlabelled_kept_out_of_labelled_lists"]
    assert "in dataset.json's labelled lists" in out["unlabelled_kept_out_of_labelled_lists"]


def test_tampered_document(cohort: Cohort) -> None:
    info = cohort.publish()
    notes = cohort.root / "releases" / "demo" / info.version / "notes.txt"
    os.chmod(notes, 0o644)
    notes.write_bytes(b"edited after publishing\n")
    out = cohort.failed(info)
    assert list(out) == ["documents_verified"]
    assert "notes.txt (TamperedObjectError)" in out["documents_verified"]


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_object_missing_or_corrupt(cohort: Cohort, how: str) -> None:
    info = cohort.publish()
    df, _ = load_release(cohort.store, info.ref)
    obj = Path(cohort.store.object_path(str(df["image_sha256"].iloc[0])))
    os.chmod(obj, 0o644)
    if how == "missing":
        obj.unlink()
    else:
        data = obj.read_bytes()
        obj.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other bytes
    out = cohort.failed(info)
    assert list(out) == ["objects_verified"]
    want = "1 object(s) missing" if how == "missing" else "1 not matching their sha256"
    assert want in out["objects_verified"]


def test_card_counts_differ(cohort: Cohort) -> None:
    def stale_card(info: VersionInfo, m: pd.DataFrame) -> dict[str, bytes]:
        docs = _docs(info, m)
        docs["card.md"] = render_card(m.iloc[1:], info.id, info.dataset).encode()
        return docs

    out = cohort.failed(cohort.publish(docs=stale_card))
    assert list(out) == ["card_counts_match"]
    assert "differ between card and manifest" in out["card_counts_match"]


def test_card_counts_parse_what_render_card_writes(cohort: Cohort) -> None:
    a = cohort.assigned()
    m, _ = build_manifest(a, cohort.root / "volumes", cohort.root / "labels")
    card = render_card(m, "v1-abc", "demo")
    parsed, actual = card_counts(card), manifest_counts(m)
    assert parsed["samples"] == actual["samples"] == len(m)
    assert set(parsed["splits"]) == set(actual["splits"])


def test_without_store_the_store_checks_fail(cohort: Cohort) -> None:
    df, _ = load_release(cohort.store, cohort.publish().ref)
    res = run_suite(SUITE, df, CFG, CheckContext())
    failed = {o.expectation for o in res.outcomes if not o.success}
    assert failed == {
        "unlabelled_kept_out_of_labelled_lists",
        "documents_verified",
        "objects_verified",
        "card_counts_match",
    }
    assert all("could not be checked" in m for m in res.problems)


def test_synthetic_sample_released_in_test(cohort: Cohort) -> None:
    """The split gate on what was published: a synthetic sample outside train fails it."""
    a = cohort.assigned()
    a.loc[a.index[0], ["synthetic", "generator_id", "split", "fold"]] = [True, "g1", "test", -1]
    failed = cohort.failed(cohort.publish(a))
    assert set(failed) == {"synthetic_only_in_train"}, failed
    assert "1 synthetic sample(s) outside train" in failed["synthetic_only_in_train"]
