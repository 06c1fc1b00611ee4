"""Utility of synthetic samples: both arms trained per seed on a released blob cohort, paired."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medcurate import datasets
from medcurate.augment import utility
from medcurate.augment.utility import (
    AUGMENTED,
    HELPED,
    HURT,
    NO_BENEFIT,
    REAL,
    UtilityResult,
    compare,
    holm,
    paired_bootstrap,
    real_only,
)
from medcurate.evaluate.baseline import SplitData, load_split
from medcurate.evaluate.classifier import ClassifierConfig
from medcurate.evaluate.cohort import SliceSet
from medcurate.evaluate.config import EvaluationConfig
from medcurate.store.objects import ObjectStore
from tests.evaluate_helpers import blob_slices, release_blobs

CFG = EvaluationConfig(
    size=32,
    classifier=ClassifierConfig(size=32, epochs=4, threads=1),
    segmentation=False,
    n_resamples=500,
    min_subgroup_n=3,
    explain_cases=1,
)


def _with_synthetic(train: SplitData, count: int, seed: int, noise: bool = False) -> SplitData:
    """``train`` plus ``count`` one-slice synthetic samples labelled abnormal: by default a train
    lesion slice with image and mask shifted by a few pixels and a little noise added; with
    ``noise``, a normal train slice unchanged (label noise: nothing abnormal in it)."""
    rng = np.random.default_rng(seed)
    s = train.slices
    rows = train.rows
    if noise:
        normal_rows = np.flatnonzero((rows["label"] == "normal").to_numpy())
        pool = np.flatnonzero(np.isin(s.sample, normal_rows))
    else:
        pool = np.flatnonzero(s.labels == 1)
    picks = pool[rng.integers(0, len(pool), count)]
    images, masks = [], []
    for i in picks:
        shift = tuple(int(v) for v in rng.integers(-2, 3, 2))
        img = np.roll(s.images[i], shift, axis=(-2, -1)) if not noise else s.images[i]
        mask = np.roll(s.masks[i], shift, axis=(-2, -1)) if not noise else s.masks[i]
        jitter = rng.normal(0, 0.01, img.shape) if not noise else 0.0
        images.append(np.clip(img + jitter, 0, 1).astype(np.float32))
        masks.append(mask)
    first = len(rows)
    syn = rows.iloc[s.sample[picks]].copy().reset_index(drop=True)
    syn["sample_id"] = [f"syn{k:04d}" for k in range(count)]
    syn["patient"] = "SYN-test"
    syn["label"] = "abnormal"
    syn["synthetic"] = True
    new = SliceSet(
        np.stack(images),
        np.stack(masks).astype(np.uint8),
        np.ones(count, np.int8),
        np.arange(first, first + count, dtype=np.int64),
        np.zeros(count, np.int64),
    )
    slices = SliceSet(
        *(
            np.concatenate([getattr(s, f), getattr(new, f)])
            for f in ("images", "masks", "labels", "sample", "position")
        )
    )
    return SplitData(pd.concat([rows, syn], ignore_index=True), slices, train.excluded)


@pytest.fixture(scope="module")
def real_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SplitData]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("utility")
    store = ObjectStore(str(root / "store"))
    release_blobs(root / "volumes", store, n=48)
    ds = datasets.load("blobs", "v1", root=store.url, cache_dir=root / "cache")
    return {s: load_split(ds, s, CFG.size) for s in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def augmented(real_splits: dict[str, SplitData]) -> dict[str, SplitData]:
    return {**real_splits, "train": _with_synthetic(real_splits["train"], 24, seed=5)}


@pytest.fixture(scope="module")
def result(augmented: dict[str, SplitData]) -> UtilityResult:
    return compare(None, CFG, seeds=(0, 1), splits=augmented)


def test_holm_matches_a_hand_example() -> None:
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5); NaN stays out
    p = [0.03, 0.5, 0.01, math.nan, 0.02]
    assert np.allclose(holm(p), [0.06, 0.5, 0.04, math.nan, 0.06], equal_nan=True)
    # monotone: a smaller raw p after a large scaled one inherits the larger value; capped at 1
    assert np.allclose(holm([0.04, 0.045, 0.9]), [0.12, 0.12, 0.9])
    assert np.allclose(holm([0.4, 0.6]), [0.8, 0.8])
    assert np.allclose(holm([0.7, 0.9]), [1.0, 1.0])
    assert holm([]).size == 0


def test_real_only_drops_synthetic_rows_and_renumbers_their_slices() -> None:
    s = blob_slices(6, size=16, seed=1)
    s = replace(s, sample=np.array([0, 0, 1, 2, 3, 3]))
    rows = pd.DataFrame(
        {
            "sample_id": ["a", "syn1", "b", "c"],
            "label": ["normal", "abnormal", "abnormal", "normal"],
            "synthetic": [False, True, None, False],  # a missing flag counts as real
        }
    )
    out = real_only(SplitData(rows, s, excluded=2))
    assert out.rows["sample_id"].tolist() == ["a", "b", "c"]
    assert out.rows.index.tolist() == [0, 1, 2] and out.excluded == 2
    assert out.slices.sample.tolist() == [0, 0, 1, 2, 2]
    assert np.array_equal(out.slices.images, s.images[[0, 1, 3, 4, 5]])


def test_paired_bootstrap_is_zero_for_identical_arms_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(0)
    y = np.array([1] * 10 + [0] * 14)
    noisy = rng.random((2, len(y)))
    thresholds = (np.full(2, 0.5), np.full(2, 0.5))
    same = paired_bootstrap(y, noisy, noisy, thresholds, n_resamples=300, seed=1)
    assert all(np.all(d == 0) for d in same.values())
    assert utility.bootstrap_p(same["auc"]) == 1.0
    better = np.vstack([y * 0.6 + 0.2 + rng.normal(0, 0.05, len(y)) for _ in range(2)])
    diff = paired_bootstrap(y, noisy, better, thresholds, n_resamples=300, seed=1)
    assert np.quantile(diff["auc"], 0.025) > 0 and utility.bootstrap_p(diff["auc"]) < 0.01
    # every resample favours one arm: p is small but never 0 (it must survive Holm)
    assert utility.bootstrap_p(np.ones(300)) == pytest.approx(2 / 301)
    again = paired_bootstrap(y, noisy, better, thresholds, n_resamples=300, seed=1)
    assert np.array_equal(diff["auc"], again["auc"])  # seeded
    # a t-test needs two seeds with differences that vary
    assert math.isnan(utility.seed_p(np.array([0.7]), np.array([0.8])))
    assert math.isnan(utility.seed_p(np.array([0.7, 0.6]), np.array([0.8, 0.7])))
    assert 0 < utility.seed_p(np.array([0.7, 0.6, 0.65]), np.array([0.8, 0.72, 0.7])) < 1


def _result_with(low: float, high: float, p_holm: float) -> UtilityResult:
    paired = pd.DataFrame(
        [
            {"attribute": "overall", "group": "overall", "metric": "auc", "real": 0.81,
             "augmented": 0.83, "difference": 0.02, "low": low, "high": high, "p_holm": p_holm},
        ]
    )  # fmt: skip
    empty = pd.DataFrame()
    return UtilityResult(empty, empty, paired, empty, seeds=(0, 1, 2), n_resamples=500)


def test_verdict_needs_both_the_interval_and_the_adjusted_p() -> None:
    assert _result_with(0.01, 0.05, 0.01).verdict == HELPED
    assert _result_with(0.01, 0.05, 0.2).verdict == NO_BENEFIT
    assert _result_with(-0.04, 0.08, 0.01).verdict == NO_BENEFIT
    assert _result_with(-0.08, -0.01, 0.03).verdict == HURT
    assert _result_with(-0.04, 0.08, 0.41).statement() == (
        "Augmentation did not measurably help: test AUC 0.81 (real) vs 0.83 (real+synthetic), "
        "difference +0.02 (95% CI -0.04 to +0.08), Holm-adjusted p = 0.41 over 3 seeds."
    )
    assert _result_with(0.01, 0.05, 0.0001).statement().startswith("Augmentation helped: ")
    assert "p < 0.001" in _result_with(0.01, 0.05, 0.0001).statement()


@pytest.mark.slow
def test_compare_refuses_a_train_split_without_synthetic_rows(
    real_splits: dict[str, SplitData],
) -> None:
    with pytest.raises(ValueError, match="no synthetic samples"):
        compare(None, CFG, seeds=(0,), splits=real_splits)
    test = real_splits["test"]
    rows = test.rows.assign(synthetic=[True] + [False] * (len(test.rows) - 1))
    bad = {**real_splits, "train": _with_synthetic(real_splits["train"], 2, seed=0)}
    bad["test"] = replace(test, rows=rows)
    with pytest.raises(ValueError, match="train only"):
        compare(None, CFG, seeds=(0,), splits=bad)


@pytest.mark.slow
def test_compare_pairs_both_arms_per_seed(
    result: UtilityResult, augmented: dict[str, SplitData]
) -> None:
    runs = result.runs
    assert runs[["seed", "arm"]].values.tolist() == [
        [0, REAL], [0, AUGMENTED], [1, REAL], [1, AUGMENTED],
    ]  # fmt: skip
    n_syn = int(augmented["train"].rows["synthetic"].sum())
    assert n_syn == 24
    synthetic_counts = runs.groupby("arm")["n_train_synthetic"].apply(list).to_dict()
    assert synthetic_counts == {REAL: [0, 0], AUGMENTED: [n_syn, n_syn]}
    assert set(runs["n_train_real"]) == {len(augmented["train"].rows) - n_syn}
    assert runs[["auc", "sensitivity", "specificity", "threshold"]].notna().all().all()
    # same test samples in every run
    n_test = len(augmented["test"].rows)
    assert len(result.scores) == 4 * n_test
    assert result.scores.groupby(["seed", "arm"])["sample_id"].apply(tuple).nunique() == 1
    # the two arms really differ (different training data), the seeds too
    s = result.scores.set_index(["seed", "arm"])["score"]
    assert not np.allclose(s.loc[(0, REAL)], s.loc[(0, AUGMENTED)])
    assert not np.allclose(s.loc[(0, REAL)], s.loc[(1, REAL)])

    sub = result.subgroups
    assert set(sub.groupby(["seed", "arm"]).size()) == {len(sub) // 4}
    assert {"attribute", "group", "n", "auc", "sensitivity", "specificity"} <= set(sub.columns)

    paired = result.paired
    single = sub[(sub["seed"] == 0) & (sub["arm"] == REAL) & ~sub["attribute"].str.contains("×")]
    assert len(paired) == 3 * len(single)  # every single-attribute group, per metric
    assert set(paired["metric"]) == {"auc", "sensitivity", "specificity"}
    overall = paired[paired["attribute"] == "overall"].set_index("metric")
    mean = runs.groupby("arm")[["auc", "sensitivity", "specificity"]].mean()
    for metric in ("auc", "sensitivity", "specificity"):
        row = overall.loc[metric]
        assert row["real"] == pytest.approx(mean.loc[REAL, metric])
        assert row["augmented"] == pytest.approx(mean.loc[AUGMENTED, metric])
        assert row["difference"] == pytest.approx(row["augmented"] - row["real"])
        assert row["low"] <= row["difference"] + 1e-9 <= row["high"] + 2e-9
        assert 0 <= row["p"] <= row["p_holm"] <= 1
    # a group of one class keeps its row and n, with nothing compared
    one_class = paired[(paired["n_pos"] == 0) | (paired["n_neg"] == 0)]
    assert len(one_class) and one_class["difference"].isna().all()
    assert (one_class["n"] > 0).all() and one_class["p_holm"].isna().all()
    compared = paired[paired["p"].notna()]
    assert (compared["p_holm"] >= compared["p"] - 1e-12).all()
    assert result.verdict in (HELPED, HURT, NO_BENEFIT)
    assert "over 2 seeds" in result.statement()


@pytest.mark.slow
def test_compare_is_deterministic_per_seed(
    result: UtilityResult, augmented: dict[str, SplitData]
) -> None:
    again = compare(None, CFG, seeds=(1,), splits=augmented, intersections=True)
    before = result.runs[result.runs["seed"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.runs, before)
    earlier = result.scores[result.scores["seed"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.scores, earlier)
    # intersections asked for: they join the paired table (and its Holm family)
    assert again.paired["attribute"].str.contains("×").any()
    assert not result.paired["attribute"].str.contains("×").any()
    # one seed: no t-test, so p comes from the bootstrap
    assert set(again.paired["p_method"].dropna()) <= {
        "paired bootstrap", "one class: not compared",
    }  # fmt: skip


@pytest.mark.slow
def test_label_noise_as_synthetic_samples_never_helps(real_splits: dict[str, SplitData]) -> None:
    train = real_splits["train"]
    noisy = {**real_splits, "train": _with_synthetic(train, 2 * len(train.rows), 7, noise=True)}
    res = compare(None, CFG, seeds=(0, 1), splits=noisy)
    assert res.runs["n_train_synthetic"].max() == 2 * len(train.rows)
    assert res.verdict in (HURT, NO_BENEFIT), res.statement()
    overall = res.overall("auc")
    assert not (overall["low"] > 0), res.statement()


def test_both_arms_warm_start_from_the_previous_release(
    real_splits: dict[str, SplitData], tmp_path: Path
) -> None:
    """The previous release lacked 4 real train samples and had another generator's samples:
    each arm of each seed starts from its own line's last classifier (the synthetic samples do
    not count in the subset test) for a share of the epochs."""
    train = real_splits["train"]
    keep = np.ones(len(train.rows), bool)
    keep[-4:] = False
    index = np.cumsum(keep) - 1
    sub = train.slices.subset(keep[train.slices.sample])
    sub = replace(sub, sample=index[sub.sample])
    earlier = SplitData(train.rows.loc[keep].reset_index(drop=True), sub, train.excluded)
    before = {**real_splits, "train": _with_synthetic(earlier, 24, seed=6)}
    now = {**real_splits, "train": _with_synthetic(train, 24, seed=5)}
    first = compare(None, CFG, seeds=(0,), splits=before, cache=tmp_path)
    assert (first.runs["warm_start_from"] == "none").all()
    second = compare(None, CFG, seeds=(0,), splits=now, cache=tmp_path)
    assert (second.runs["warm_start_from"] != "none").all()
    assert (second.runs["epochs"] < CFG.classifier.epochs).all()
    assert second.runs["warm_start_from"].nunique() == 2  # one line per arm
