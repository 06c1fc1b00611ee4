"""Train the baselines on a pulled release and measure them on its test split.

This is the scientist's script, written once: rows of each split from the public
:class:`~medcurate.datasets.Dataset`, slices of their volumes, a classifier trained on train with
its operating point chosen on validation, metrics with bootstrap intervals on test, overall and
per subgroup, Grad-CAM on a few test cases, and the segmentation UNet's Dice. Nothing here writes
files; :mod:`medcurate.evaluate.run` does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcurate.evaluate import EvaluationError, explain
from medcurate.evaluate import classifier as clf
from medcurate.evaluate import segmenter as seg
from medcurate.evaluate.cohort import (
    SliceSet,
    load_slices,
    sample_scores,
    save_slices,
    slices_from_volumes,
    thin,
)
from medcurate.evaluate.config import EvaluationConfig
from medcurate.evaluate.metrics import (
    Estimate,
    RocBand,
    bootstrap,
    brier,
    choose_threshold,
    roc_band,
)
from medcurate.evaluate.subgroups import fairness_gaps, flag_gaps, subgroup_table

CLASSES = ("normal", "abnormal")
SPLITS = ("train", "validation", "test")


@dataclass
class SplitData:
    """Labelled samples of one split (rows of the manifest) and their slices."""

    rows: pd.DataFrame
    slices: SliceSet
    excluded: int  # samples of the split without a normal/abnormal label

    @property
    def y(self) -> np.ndarray:
        return (self.rows["label"] == "abnormal").to_numpy(dtype=np.int64)


@dataclass
class Case:
    """One explained test case: which sample, which slice, what the model said."""

    kind: str  # true positive, false negative, false positive
    sample_id: str
    position: int
    score: float
    share: float  # occlusion saliency share inside the lesion mask (NaN without a lesion)
    area: float  # the mask's share of the slice
    image: np.ndarray = field(repr=False)
    cam: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)


@dataclass
class Evaluation:
    """Everything measured; plain values, PHI-free (samples are named by pseudonymous ids)."""

    config: EvaluationConfig
    counts: pd.DataFrame  # per split: samples, abnormal, normal, excluded, slices
    threshold: float
    threshold_note: str
    test_scores: pd.DataFrame  # sample_id, y_true, score, attributes
    metrics: dict[str, Estimate]
    roc: RocBand
    brier: float
    subgroups: pd.DataFrame
    gaps: pd.DataFrame
    flags: list[str]
    cases: list[Case]
    saliency: dict[str, float]  # mean share inside masks, mean mask area, pointing hit rate
    classifier: clf.TrainedClassifier
    segmenter: seg.TrainedSegmenter | None
    dice: dict[str, Estimate]  # mean Dice over test samples with a mask
    dice_per_sample: dict[str, float]
    lesions: dict[str, float]  # lesion-wise detection on test
    timings: dict[str, float]  # seconds; kept out of the report files (not deterministic)


def _labelled(rows: pd.DataFrame, split: str) -> tuple[pd.DataFrame, int]:
    keep = rows["label"].isin(CLASSES)
    if split != "train":
        keep &= ~rows["synthetic"].astype(bool)
    return rows.loc[keep].reset_index(drop=True), int((~keep).sum())


def load_split(ds: Any, split: str, size: int) -> SplitData:
    """Labelled rows of ``split`` and their slices, read from the pulled version's files."""
    rows, excluded = _labelled(ds.split(split), split)
    by_id = {d["sample_id"]: d for d in ds.data_dicts(split)}
    items = [by_id[s] for s in rows["sample_id"]]
    return SplitData(rows, slices_from_volumes(items, size=size), excluded)


#: bump when the slices made from the same files change (cohort's reading or scaling)
SLICES_FORMAT = 1


def load_splits(
    ds: Any, size: int, splits: Sequence[str] = SPLITS, cache: str | Path | None = None
) -> dict[str, SplitData]:
    """:func:`load_split` for each of ``splits``; with ``cache`` (a folder) the slices are kept
    there per version, size and splits, so the next stage on the same version (the augmentation
    report after the evaluation) does not read and resize every volume again. A version's files
    never change, so its id and signature name its slices."""
    rows = {s: _labelled(ds.split(s), s) for s in splits}
    path = None
    if cache is not None:
        key = json.dumps([ds.id, ds.signature, size, list(splits), SLICES_FORMAT])
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = Path(cache) / f"slices-{name}.npz"
        if path.is_file():
            try:
                sets = load_slices(path)
                return {s: SplitData(rows[s][0], sets[s], rows[s][1]) for s in splits}
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file: read the volumes again
    data = {s: load_split(ds, s, size) for s in splits}
    if path is not None:
        for old in path.parent.glob("slices-*.npz"):  # one version's slices at a time
            old.unlink()
        save_slices({s: d.slices for s, d in data.items()}, path)
    return data


def _need_both_classes(data: SplitData, split: str) -> None:
    n_pos = int(data.y.sum())
    if n_pos == 0 or n_pos == len(data.y):
        raise EvaluationError(
            f"the {split} split has {len(data.y)} labelled sample(s) of one class only "
            f"({n_pos} abnormal): a classifier cannot be trained or measured on it"
        )


def _scores(model: Any, data: SplitData, pool: str) -> np.ndarray:
    prob = clf.predict(model, data.slices)
    return sample_scores(prob, data.slices.sample, len(data.rows), pool=pool)


def evaluate(
    ds: Any,
    cfg: EvaluationConfig,
    splits: dict[str, SplitData] | None = None,
    *,
    explain_saliency: bool = True,
    cache: str | Path | None = None,
) -> Evaluation:
    """Train on train, choose the threshold on validation, report on test.

    ``splits`` may be given (already loaded, e.g. with train labels altered by a test); by
    default they are loaded from ``ds`` (a :class:`medcurate.datasets.Dataset`).
    ``explain_saliency=False`` skips the saliency maps and cases (the augmentation report reads
    scores only). ``cache`` (a folder) keeps loaded slices and trained classifiers for the next
    stage on the same version; the figures do not depend on it.
    """
    t0 = time.perf_counter()
    data = splits or load_splits(ds, cfg.size, cache=cache)
    train, val, test = data["train"], data["validation"], data["test"]
    train_slices = thin(train.slices, cfg.train_slices_per_sample)
    _need_both_classes(train, "train")
    _need_both_classes(test, "test")
    timings = {"load_s": time.perf_counter() - t0}

    t = time.perf_counter()
    trained, cached = clf.train_or_load(train_slices, cfg.classifier, val.slices, cache)
    timings["classifier_train_s"] = time.perf_counter() - t
    timings["classifier_epoch_s"] = (
        float(np.mean([h["seconds"] for h in trained.history])) if not cached else 0.0
    )

    val_score = _scores(trained.model, val, cfg.pool)
    if len(set(val.y.tolist())) == 2:
        threshold = choose_threshold(
            val.y, val_score, rule=cfg.threshold_rule, target_sensitivity=cfg.target_sensitivity
        )
        rule = (
            "Youden's J (sensitivity + specificity - 1, maximal)"
            if cfg.threshold_rule == "youden"
            else f"the highest threshold reaching sensitivity {cfg.target_sensitivity:.2f}"
        )
        note = f"{rule} on validation ({len(val.y)} samples, {int(val.y.sum())} abnormal)"
    else:
        threshold = 0.5
        note = (
            f"0.5: validation has {len(val.y)} labelled sample(s) of one class, so no operating "
            "point could be chosen on it"
        )

    test_score = _scores(trained.model, test, cfg.pool)
    y = test.y
    metrics = bootstrap(y, test_score, threshold, n_resamples=cfg.n_resamples, seed=cfg.seed)
    band = roc_band(y, test_score, n_resamples=cfg.n_resamples, seed=cfg.seed)
    frame = _subgroup_frame(test.rows, y, test_score, cfg.attributes)
    table = subgroup_table(
        frame,
        list(cfg.attributes),
        threshold,
        min_n=cfg.min_subgroup_n,
        n_resamples=cfg.n_resamples,
        seed=cfg.seed,
    )
    gaps = fairness_gaps(frame, list(cfg.attributes), threshold)
    flags = flag_gaps(gaps, tolerance=cfg.gap_tolerance)

    t = time.perf_counter()
    cases: list[Case] = []
    saliency: dict[str, float] = {}
    if explain_saliency:
        cases, saliency = _explain(trained.model, test, test_score, threshold, cfg)
    timings["explain_s"] = time.perf_counter() - t

    segmenter = None
    dice: dict[str, Estimate] = {}
    per_sample: dict[str, float] = {}
    lesions: dict[str, float] = {}
    if cfg.segmentation:
        t = time.perf_counter()
        segmenter = seg.train_segmenter(train_slices, cfg.segmenter)
        timings["segmenter_train_s"] = time.perf_counter() - t
        timings["segmenter_epoch_s"] = float(np.mean([h["seconds"] for h in segmenter.history]))
        prob = seg.predict_masks(segmenter.model, test.slices)
        th = cfg.segmenter.lesion_threshold
        by_row = seg.dice_per_sample(test.slices, prob, th)
        # Dice of the samples with a lesion; false positives on normal ones are counted below
        with_mask = set(test.slices.sample[test.slices.masks.reshape(len(test.slices), -1).any(1)])
        per_sample = {
            str(test.rows["sample_id"][i]): float(v)
            for i, v in sorted(by_row.items())
            if i in with_mask
        }
        dice = {"dice": _mean_ci(list(per_sample.values()), cfg.n_resamples, cfg.seed)}
        det = seg.lesion_detection(test.slices, prob, th, cfg.segmenter.min_lesion_voxels)
        lesions = {
            "true_lesions": float(det.true_lesions),
            "detected": float(det.detected),
            "sensitivity": float(det.sensitivity),
            "false_positive_components": float(det.false_positive_components),
        }

    counts = pd.DataFrame(
        [
            {
                "split": name,
                "samples": len(d.rows),
                "abnormal": int(d.y.sum()),
                "normal": int(len(d.y) - d.y.sum()),
                "excluded": d.excluded,
                "slices": len(train_slices) if name == "train" else len(d.slices),
            }
            for name, d in data.items()
        ]
    )
    scores = frame.assign(sample_id=test.rows["sample_id"].to_numpy())
    timings["total_s"] = time.perf_counter() - t0
    return Evaluation(
        config=cfg,
        counts=counts,
        threshold=float(threshold),
        threshold_note=note,
        test_scores=scores,
        metrics=metrics,
        roc=band,
        brier=float(brier(y, test_score)),
        subgroups=table,
        gaps=gaps,
        flags=flags,
        cases=cases,
        saliency=saliency,
        classifier=trained,
        segmenter=segmenter,
        dice=dice,
        dice_per_sample=per_sample,
        lesions=lesions,
        timings=timings,
    )


def _subgroup_frame(
    rows: pd.DataFrame, y: np.ndarray, score: np.ndarray, attributes: tuple[str, ...]
) -> pd.DataFrame:
    frame = pd.DataFrame({"y_true": y, "score": score})
    for a in attributes:
        frame[a] = rows[a].astype("string").fillna("unknown").to_numpy() if a in rows else "unknown"
    return frame


def _mean_ci(values: list[float], n_resamples: int, seed: int) -> Estimate:
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Estimate(float(v.mean()), float(low), float(high), len(v))


def _explain(
    model: Any, test: SplitData, score: np.ndarray, threshold: float, cfg: EvaluationConfig
) -> tuple[list[Case], dict[str, float]]:
    """Saliency on the test slices with a lesion, by occlusion sensitivity (shown in the
    pictures) and by Grad-CAM: the share inside the mask and how often the peak is on the lesion;
    then a few cases of each kind: true positives, false negatives, false positives."""
    s = test.slices
    lesion = np.flatnonzero(s.labels == 1)
    saliency = {"lesion_slices": float(len(lesion))}
    if len(lesion):
        masks = s.masks[lesion, 0]
        saliency["mask_area"] = float(masks.reshape(len(masks), -1).mean())
        for name, maps in (
            ("", explain.occlusion(model, s.images[lesion])),
            ("gradcam_", explain.gradcam(model, s.images[lesion])),
        ):
            shares = [explain.saliency_share(c, m) for c, m in zip(maps, masks, strict=True)]
            hits = [explain.pointing_hit(c, m) for c, m in zip(maps, masks, strict=True)]
            saliency[f"{name}share_in_mask"] = float(np.nanmean(shares))
            saliency[f"{name}pointing_hit_rate"] = float(np.mean(hits))
    prob = clf.predict(model, s)
    y = test.y
    kinds = {
        "true positive": (y == 1) & (score >= threshold),
        "false negative": (y == 1) & (score < threshold),
        "false positive": (y == 0) & (score >= threshold),
    }
    picks: list[tuple[str, int]] = []
    for kind, chosen in kinds.items():
        rows = np.flatnonzero(chosen)
        order = rows[np.argsort(-score[rows] if kind != "false negative" else score[rows])]
        for r in order[: cfg.explain_cases]:
            on = np.flatnonzero(s.sample == r)
            with_lesion = on[s.labels[on] == 1]
            pool = with_lesion if kind == "false negative" and len(with_lesion) else on
            picks.append((kind, int(pool[np.argmax(prob[pool])])))
    if not picks:
        return [], saliency
    idx = np.asarray([i for _, i in picks])
    cams = explain.occlusion(model, s.images[idx])
    cases = []
    for (kind, i), cam in zip(picks, cams, strict=True):
        mask = s.masks[i, 0]
        cases.append(
            Case(
                kind=kind,
                sample_id=str(test.rows["sample_id"][s.sample[i]]),
                position=int(s.position[i]),
                score=float(prob[i]),
                share=explain.saliency_share(cam, mask),
                area=float(mask.mean()),
                image=s.images[i, 0],
                cam=cam,
                mask=mask,
            )
        )
    return cases, saliency
