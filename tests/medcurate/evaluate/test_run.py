"""The evaluation consumer end to end on a released blob cohort whose truth is known."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medcurate import datasets
from medcurate.config import Zones
from medcurate.evaluate import EvaluationError
from medcurate.evaluate.baseline import SplitData, evaluate, load_split, load_splits
from medcurate.evaluate.classifier import ClassifierConfig
from medcurate.evaluate.cohort import SliceSet, _fields, thin
from medcurate.evaluate.config import EvaluationConfig
from medcurate.evaluate.run import EvaluateSettings, run_evaluation, write_report
from medcurate.evaluate.segmenter import SegmenterConfig
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import resolve
from medcurate.store.reports import read_report
from medcurate.store.signing import KEY_ENV
from tests.evaluate_helpers import release_blobs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CFG = EvaluationConfig(
    size=32,
    classifier=ClassifierConfig(size=32, epochs=6, threads=1),
    segmenter=SegmenterConfig(epochs=6, threads=1),
    min_subgroup_n=3,
)


@pytest.fixture(scope="module")
def blob_store(tmp_path_factory: pytest.TempPathFactory) -> ObjectStore:
    root = tmp_path_factory.mktemp("blobs")
    store = ObjectStore(str(root / "store"))
    release_blobs(root / "volumes", store, bright_site="site-b")
    return store


def test_release_is_evaluated_reported_and_attached_deterministically(
    blob_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    z = Zones(tmp_path / "home").ensure()
    settings = EvaluateSettings("blobs", "v1", blob_store.url, config=CFG)
    result = run_evaluation(z, settings)
    ev = result.evaluation
    auc = ev.metrics["auc"]
    # blobs are easy: far above chance, and the whole interval is above it
    assert auc.value > 0.85 and auc.low > 0.6, auc
    assert ev.metrics["sensitivity"].n == int(ev.counts.set_index("split").loc["test", "samples"])
    assert 0.0 < ev.threshold < 1.0 and "validation" in ev.threshold_note
    # how well the UNet learns is tested in test_segmenter; here: reported, per lesion sample
    assert 0.0 <= ev.dice["dice"].value <= 1.0 and ev.lesions["true_lesions"] >= 1
    assert ev.dice["dice"].n == int((ev.test_scores["y_true"] == 1).sum())
    assert ev.saliency["share_in_mask"] > 2 * ev.saliency["mask_area"]
    files = set(read_report(blob_store, resolve(blob_store, "blobs@v1"), "evaluation").files)
    assert {"evaluation.md", "section.md", "roc.png", "forest.png", "calibration.png"} <= files
    assert {"classifier.pt", "classifier.model-card.md", "segmenter.pt", "metrics.json"} <= files
    assert any(f.startswith("gradcam-") for f in files) and "timings.json" not in files
    doc = json.loads((result.folder / "metrics.json").read_text())  # strict JSON: no NaN
    assert doc["version_id"] == result.version_id and doc["test"]["auc"]["value"] == auc.value
    card = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c").card()
    assert "## Evaluation" in card and "## Bias, Risks and Limitations" in card
    assert card.index("## Evaluation") > card.index("## Lineage")
    model_card = (result.folder / "classifier.model-card.md").read_text()
    assert result.version_id in model_card and '"seed": 0' in model_card
    md = result.metadata()
    assert md["auc"] == round(auc.value, 4) and md["results"].startswith("![ROC](data:image/png")
    assert "AUC" in result.summary_line()

    before = {f: (result.folder / f).read_bytes() for f in files}
    again = run_evaluation(z, settings)
    assert {f: (again.folder / f).read_bytes() for f in files} == before


def _flip_site(data: dict, site: str) -> dict:  # type: ignore[type-arg]
    """Train labels of ``site``'s abnormal samples flipped to normal (their slices too)."""
    train = data["train"]
    rows = train.rows.copy()
    flip = (rows["site"] == site) & (rows["label"] == "abnormal")
    rows.loc[flip, "label"] = "normal"
    s = train.slices
    on = np.isin(s.sample, np.flatnonzero(flip.to_numpy()))
    labels = s.labels.copy()
    labels[on] = 0
    masks = s.masks.copy()
    masks[on] = 0
    data["train"] = replace(
        train, rows=rows, slices=SliceSet(s.images, masks, labels, s.sample, s.position)
    )
    return data


def test_planted_site_bias_shows_as_that_sites_gap(blob_store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c")
    cfg = replace(CFG, segmentation=False)
    data = {s: load_split(ds, s, cfg.size) for s in ("train", "validation", "test")}
    assert (data["test"].rows["site"] == "site-b").sum() >= 3
    ev = evaluate(ds, cfg, splits=_flip_site(data, "site-b"))
    by = ev.subgroups.set_index(["attribute", "group"])
    fnr_b = by.loc[("site", "site-b"), "fnr"]
    others = [by.loc[("site", g), "fnr"] for g in ("site-a", "site-c")]
    assert fnr_b > max(others) + 0.3, (fnr_b, others)
    assert any("site" in f and "site-b" in f for f in ev.flags), ev.flags


def test_one_class_test_split_is_a_clear_error(blob_store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c")
    data = {s: load_split(ds, s, CFG.size) for s in ("train", "validation", "test")}
    test = data["test"]
    keep = (test.rows["label"] == "normal").to_numpy()
    rows = test.rows.loc[keep].reset_index(drop=True)
    data["test"] = replace(
        test,
        rows=rows,
        slices=test.slices.subset(np.isin(test.slices.sample, np.flatnonzero(keep))),
    )
    with pytest.raises(EvaluationError, match=r"test split has .* of one class"):
        evaluate(ds, CFG, splits=data)


def test_cache_keeps_slices_and_classifier_for_the_next_stage(
    blob_store: ObjectStore, tmp_path: Path
) -> None:
    ds = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c")
    cfg = replace(CFG, segmentation=False)
    cache = tmp_path / "stage-cache"
    first = evaluate(ds, cfg, cache=cache)
    assert len(list(cache.glob("classifier-*.pt"))) == 1
    loaded = load_splits(ds, cfg.size, cache=cache)
    # one slice file per sample, named by its content
    labelled = sum(len(d.rows) for d in loaded.values())
    assert len(list((cache / "slices").glob("*.npz"))) == labelled
    fresh = {s: load_split(ds, s, cfg.size) for s in ("train", "validation", "test")}
    for s, d in fresh.items():
        assert np.array_equal(loaded[s].slices.images, d.slices.images)
        assert loaded[s].rows.equals(d.rows) and loaded[s].excluded == d.excluded
    second = evaluate(ds, cfg, cache=cache, explain_saliency=False)
    assert second.timings["classifier_epoch_s"] == 0.0  # read, not trained
    assert second.test_scores.equals(first.test_scores) and second.threshold == first.threshold
    assert second.cases == [] and second.saliency == {} and first.saliency


def _without(d: SplitData, drop: np.ndarray) -> SplitData:
    """The split without the rows in ``drop`` (an earlier release that lacked them)."""
    keep = ~drop
    new_index = np.cumsum(keep) - 1
    sub = d.slices.subset(keep[d.slices.sample])
    sub = replace(sub, sample=new_index[sub.sample])
    return SplitData(d.rows.loc[keep].reset_index(drop=True), sub, d.excluded)


def test_next_release_warm_starts_and_its_cards_name_the_parent(
    blob_store: ObjectStore, tmp_path: Path
) -> None:
    """An earlier release without 4 train samples trained both models from scratch; this one
    starts from them (parent in the model cards, fewer epochs), a rerun reuses them, the same
    history in another cache gives the same scores, and a train sample moved to test starts over."""
    ds = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c")
    cache = tmp_path / "stage-cache"
    data = load_splits(ds, CFG.size, cache=cache)
    drop = np.zeros(len(data["train"].rows), bool)
    drop[-4:] = True
    earlier = {**data, "train": _without(data["train"], drop)}
    results = []
    for c in (cache, tmp_path / "other-cache"):
        old = evaluate(ds, CFG, splits=earlier, cache=c, explain_saliency=False)
        new = evaluate(ds, CFG, splits=data, cache=c, explain_saliency=False)
        assert old.classifier.parent == "" and old.segmenter is not None
        assert old.segmenter.parent == ""
        assert new.classifier.parent == old.classifier.model_id
        assert new.segmenter is not None and new.segmenter.parent == old.segmenter.model_id
        assert len(new.classifier.history) < CFG.classifier.epochs
        results.append(new)
    assert results[0].test_scores.equals(results[1].test_scores)
    rerun = evaluate(ds, CFG, splits=data, cache=cache, explain_saliency=False)
    assert rerun.classifier.model_id == results[0].classifier.model_id
    assert rerun.timings["classifier_epoch_s"] == 0.0
    folder = tmp_path / "report"
    files = write_report(results[0], folder, "blobs@v1", ds.id, ds.signature)
    card = files["classifier.model-card.md"].decode()
    assert f'"warm_start_from": "{old.classifier.model_id}"' in card
    assert (
        f'"warm_start_from": "{old.segmenter.model_id}"'
        in files["segmenter.model-card.md"].decode()
    )
    # a sample of the earlier train split now in test: both models from scratch
    moved = dict(data)
    gone = np.zeros(len(data["train"].rows), bool)
    gone[0] = True
    moved["train"] = _without(data["train"], gone)
    scratch = evaluate(ds, replace(CFG, seed=0), splits=moved, cache=cache, explain_saliency=False)
    assert scratch.classifier.parent == "" and scratch.segmenter is not None
    assert scratch.segmenter.parent == ""
    assert len(scratch.classifier.history) == CFG.classifier.epochs


def test_splits_load_at_the_size_of_the_result_and_train_can_come_thinned(
    blob_store: ObjectStore, tmp_path: Path
) -> None:
    """Issue 16: loading held the per-sample parts, the freshly read slices and the joined
    splits at once (3x the result on a first load, 2x from the cache). Each split is now
    allocated from the per-sample counts and filled one sample file at a time."""
    ds = datasets.load("blobs", "v1", root=blob_store.url, cache_dir=tmp_path / "c")
    size = 64  # slices large enough that the arrays, not the tables, are the peak
    # what is not the slices is done before measuring: the files pulled, torch imported
    for split in ("train", "validation", "test"):
        ds.data_dicts(split)
    import torch.nn.functional  # noqa: F401

    for run in ("fresh", "cached"):
        tracemalloc.start()
        try:
            data = load_splits(ds, size, cache=tmp_path / "stage-cache")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        result = sum(a.nbytes for d in data.values() for a in _fields(d.slices))
        assert peak < 1.2 * result + 2**20, (run, peak, result)
    thinned = load_splits(ds, size, cache=tmp_path / "stage-cache", train_slices_per_sample=2)
    want = thin(data["train"].slices, 2)
    assert 0 < len(thinned["train"].slices) < len(data["train"].slices)
    for got, w in zip(_fields(thinned["train"].slices), _fields(want), strict=True):
        assert np.array_equal(got, w) and got.dtype == w.dtype
    for s in ("validation", "test"):
        assert np.array_equal(thinned[s].slices.images, data[s].slices.images)
    # without a cache the same thinning is applied to the freshly read split
    plain = load_splits(ds, size, train_slices_per_sample=2)
    assert np.array_equal(plain["train"].slices.position, want.position)
