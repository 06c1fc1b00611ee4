"""Train the baselines on a pulled release and measure them on its test split.

This is the scientist's script, written once: rows of each split from the public
:class:`~medcurate.datasets.Dataset`, slices of their volumes, a classifier trained on train with
its operating point chosen on validation, metrics with bootstrap intervals on test, overall and
per subgroup, Grad-CAM on a few test cases, and the segmentation UNet's Dice. Nothing here writes
files; :mod:`medcurate.evaluate.run` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcurate.evaluate import EvaluationError, explain
from medcurate.evaluate import classifier as clf
from medcurate.evaluate import segmenter as seg
from medcurate.evaluate.cohort import (
    READ_WORKERS,
    SliceSet,
    allocate,
    load_slices,
    put,
    sample_scores,
    save_slices,
    slices_from_volumes,
    thin,
    thin_rows,
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
#: lesion slices explained at a time (a multiple of :func:`explain.gradcam`'s batch of 64)
EXPLAIN_CHUNK = 256
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
_CONTENT = ("image_sha256", "mask_sha256", "label")


def sample_keys(rows: pd.DataFrame, size: int) -> list[str] | None:
    """A key per row naming its slices by content: the image's and mask's sha256, the label (it
    decides the slice labels of a sample without a mask), the size and :data:`SLICES_FORMAT`.
    The same sample in two versions has one key; a relabelled or re-masked one a new key. None
    when the rows lack the content columns (splits built by hand)."""
    if rows.empty:
        return []
    if not set(_CONTENT) <= set(rows.columns):
        return None
    keys = []
    for rec in rows[list(_CONTENT)].itertuples(index=False):
        parts = ["" if pd.isna(v) else str(v) for v in rec]
        raw = json.dumps([*parts, size, SLICES_FORMAT])
        keys.append(hashlib.sha256(raw.encode()).hexdigest()[:32])
    return keys


def real_train_keys(rows: pd.DataFrame, size: int) -> list[str] | None:
    """:func:`sample_keys` of the real (not synthetic) rows: what a model line compares
    (:mod:`medcurate.evaluate.lineage`)."""
    keys = sample_keys(rows, size)
    if keys is None:
        return None
    return [k for k, syn in zip(keys, _synthetic(rows), strict=True) if not syn]


def _synthetic(rows: pd.DataFrame) -> np.ndarray:
    if "synthetic" not in rows:
        return np.zeros(len(rows), bool)
    return rows["synthetic"].astype("boolean").fillna(False).to_numpy(dtype=bool)


def load_splits(
    ds: Any,
    size: int,
    splits: Sequence[str] = SPLITS,
    cache: str | Path | None = None,
    train_slices_per_sample: int = 0,
) -> dict[str, SplitData]:
    """:func:`load_split` for each of ``splits``; with ``cache`` (a folder) each sample's slices
    are kept there under its content key (:func:`sample_keys`), so the next stage on the same
    version (the augmentation report after the evaluation) reads no volume, and the next version
    reads only the samples it adds or changes. The slices of a sample do not depend on the other
    samples, so cached and fresh slices are the same arrays.

    ``train_slices_per_sample`` > 0 keeps of the train split only what :func:`thin` keeps (what
    training uses). Memory stays at the size of the result: each split is allocated from the
    per-sample slice counts and filled one sample file at a time (no per-sample parts held, no
    concatenation copy), and new samples are read one per thread and written to the cache."""
    rows = {s: _labelled(ds.split(s), s) for s in splits}
    keys = {s: sample_keys(rows[s][0], size) for s in splits}
    per = {s: train_slices_per_sample if s == "train" else 0 for s in splits}
    if cache is None or any(k is None for k in keys.values()):
        return {s: _thinned(load_split(ds, s, size), per[s]) for s in splits}
    folder = Path(cache) / "slices"
    wanted = sorted({k for ks in keys.values() for k in ks or []})
    labels: dict[str, np.ndarray] = {}
    for k in wanted:
        # a damaged cache file: the volume is read again
        with contextlib.suppress(OSError, ValueError, KeyError):
            path = folder / f"{k}.npz"
            if path.is_file():
                with np.load(path) as f:
                    labels[k] = np.asarray(f["s.labels"])
    items: dict[str, dict[str, Any]] = {}

    def item(k: str) -> dict[str, Any]:
        if not items:
            for s in splits:
                ids = set(rows[s][0]["sample_id"])
                for d, key in zip(_items(ds, s, rows[s][0], ids), keys[s] or [], strict=True):
                    items.setdefault(key, d)
        return items[k]

    def read(k: str) -> SliceSet:
        one = slices_from_volumes([item(k)], size=size, workers=1)
        save_slices({"s": one}, folder / f"{k}.npz")
        return one

    missing = [k for k in wanted if k not in labels]
    if missing:
        item(missing[0])  # the lookup is built once, before the threads
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            for k, lab in zip(missing, pool.map(lambda k: read(k).labels, missing), strict=True):
                labels[k] = lab
    out = {}
    for s in splits:
        ks = keys[s] or []
        keep = [thin_rows(labels[k], per[s]) for k in ks]
        sliced = allocate(sum(int(m.sum()) for m in keep), size)
        start = 0
        for i, (k, m) in enumerate(zip(ks, keep, strict=True)):
            one = _cached(folder / f"{k}.npz", labels[k])
            if one is None:
                one = read(k)
            start = put(sliced, start, one.subset(m) if not m.all() else one, sample=i)
        out[s] = SplitData(rows[s][0], sliced, rows[s][1])
    return out


def _thinned(data: SplitData, per_sample: int) -> SplitData:
    return replace(data, slices=thin(data.slices, per_sample)) if per_sample > 0 else data


def _cached(path: Path, labels: np.ndarray) -> SliceSet | None:
    """One sample's cached slices, or None when the file is gone or damaged (or no longer the
    one whose labels were counted)."""
    try:
        one = load_slices(path)["s"]
    except (OSError, ValueError, KeyError):
        return None
    return one if np.array_equal(one.labels, labels) else None


def _items(ds: Any, split: str, rows: pd.DataFrame, ids: set[str]) -> list[dict[str, Any]]:
    by_id = {d["sample_id"]: d for d in ds.data_dicts(split) if d["sample_id"] in ids}
    return [by_id[s] for s in rows["sample_id"]]


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
    data = splits or load_splits(
        ds, cfg.size, cache=cache, train_slices_per_sample=cfg.train_slices_per_sample
    )
    train, val, test = data["train"], data["validation"], data["test"]
    train_slices = thin(train.slices, cfg.train_slices_per_sample)
    _need_both_classes(train, "train")
    _need_both_classes(test, "test")
    timings = {"load_s": time.perf_counter() - t0}

    t = time.perf_counter()
    keys = real_train_keys(train.rows, cfg.size)
    role = "real+synthetic" if _synthetic(train.rows).any() else "real"
    trained, cached = clf.train_or_load(
        train_slices, cfg.classifier, val.slices, cache, train_samples=keys, role=role
    )
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
        segmenter, seg_cached = seg.train_or_load(
            train_slices, cfg.segmenter, cache, train_samples=keys, role=role
        )
        timings["segmenter_train_s"] = time.perf_counter() - t
        timings["segmenter_epoch_s"] = (
            float(np.mean([h["seconds"] for h in segmenter.history])) if not seg_cached else 0.0
        )
        th = cfg.segmenter.lesion_threshold
        by_row, det = seg.score_volumes(
            segmenter.model, test.slices, th, cfg.segmenter.min_lesion_voxels
        )
        # Dice of the samples with a lesion; false positives on normal ones are counted below
        with_mask = set(test.slices.sample[test.slices.masks.reshape(len(test.slices), -1).any(1)])
        per_sample = {
            str(test.rows["sample_id"][i]): float(v)
            for i, v in sorted(by_row.items())
            if i in with_mask
        }
        dice = {"dice": _mean_ci(list(per_sample.values()), cfg.n_resamples, cfg.seed)}
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
        pixels = int(np.prod(s.masks.shape[1:]))
        # the exact pixel count over the exact total: what the mean of all lesion masks gives
        lit = int(sum(int(s.masks[i].sum(dtype=np.int64)) for i in lesion))
        saliency["mask_area"] = float(lit / (len(lesion) * pixels))
        shares: dict[str, list[float]] = {"": [], "gradcam_": []}
        hits: dict[str, list[bool]] = {"": [], "gradcam_": []}
        # in chunks (a multiple of Grad-CAM's batch, each map is scaled on its own): the maps
        # of one chunk at a time, not of every lesion slice of the split
        for c in range(0, len(lesion), EXPLAIN_CHUNK):
            chunk = lesion[c : c + EXPLAIN_CHUNK]
            images, masks = s.images[chunk], s.masks[chunk, 0]
            for name, fn in (("", explain.occlusion), ("gradcam_", explain.gradcam)):
                maps = fn(model, images)
                pairs = list(zip(maps, masks, strict=True))
                shares[name] += [explain.saliency_share(m, k) for m, k in pairs]
                hits[name] += [explain.pointing_hit(m, k) for m, k in pairs]
        for name in shares:
            saliency[f"{name}share_in_mask"] = float(np.nanmean(shares[name]))
            saliency[f"{name}pointing_hit_rate"] = float(np.mean(hits[name]))
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
