"""Does augmentation help? The evaluation consumer trained on real-only train and on real+synthetic
train, seed by seed, measured on the same validation and test samples.

One training run says little: a small classifier's AUC moves by a few hundredths between seeds, as
much as augmentation is likely to move it. So each seed trains both arms (real, real+synthetic)
and the comparison is paired twice over: by seed (a paired t-test across seeds) and by test sample
(a paired bootstrap that resamples the same test samples for both arms, stratified by class, and
averages the difference over seeds). Subgroups are compared the same way and their p-values
Holm-adjusted as one family per metric, overall included, so that "helped" is not claimed from
the luckiest of many subgroups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from medcurate.evaluate.baseline import SplitData, evaluate, load_splits
from medcurate.evaluate.config import EvaluationConfig
from medcurate.evaluate.metrics import binary_metrics
from medcurate.evaluate.subgroups import CROSS, OVERALL

REAL, AUGMENTED = "real", "real+synthetic"
ARMS = (REAL, AUGMENTED)
METRICS = ("auc", "sensitivity", "specificity")
SPLITS = ("train", "validation", "test")
HELPED, HURT, NO_BENEFIT = "helped", "hurt", "no measurable benefit"
ALPHA = 0.05
# Bootstrap resamples are drawn in blocks so memory stays near this many cells per array.
_BLOCK_CELLS = 2_000_000


def synthetic_flags(rows: pd.DataFrame) -> np.ndarray:
    """Which rows are synthetic (a missing column or value counts as real)."""
    if "synthetic" not in rows:
        return np.zeros(len(rows), bool)
    return rows["synthetic"].astype("boolean").fillna(False).to_numpy(dtype=bool)


def real_only(train: SplitData) -> SplitData:
    """The split without its synthetic rows: rows re-indexed from 0, slices of the dropped rows
    removed and the kept slices' ``sample`` renumbered to the new rows."""
    keep = ~synthetic_flags(train.rows)
    new_index = np.full(len(train.rows), -1, np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    s = train.slices
    sub = s.subset(keep[s.sample]) if len(s) else s
    sub = replace(sub, sample=new_index[sub.sample])
    return SplitData(train.rows.loc[keep].reset_index(drop=True), sub, train.excluded)


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: the k-th smallest of m is multiplied by m - k + 1, made
    non-decreasing in that order and capped at 1. NaN entries stay NaN and do not count in m."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def _rank_auc(s: np.ndarray, n_pos: int) -> np.ndarray:
    """AUC per row of ``s`` whose first ``n_pos`` columns are positives (mid-ranks for ties)."""
    ranks = stats.rankdata(s, axis=1)
    n_neg = s.shape[1] - n_pos
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _resampled(s: np.ndarray, n_pos: int, threshold: float) -> dict[str, np.ndarray]:
    pred = s >= threshold
    return {
        "auc": _rank_auc(s, n_pos),
        "sensitivity": pred[:, :n_pos].mean(axis=1),
        "specificity": (~pred[:, n_pos:]).mean(axis=1),
    }


def paired_bootstrap(
    y: np.ndarray,
    real: np.ndarray,
    augmented: np.ndarray,
    thresholds: tuple[np.ndarray, np.ndarray],
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per metric, the augmented-minus-real difference averaged over seeds, for each of
    ``n_resamples`` stratified resamples of the test samples (the same samples for both arms and
    every seed). ``real``/``augmented`` are scores of shape (seeds, samples); ``thresholds`` the
    two arms' per-seed operating points. Needs both classes in ``y``."""
    y = np.asarray(y).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("a paired bootstrap needs both classes among the samples")
    rng = np.random.default_rng(seed)
    n = len(y)
    block = max(1, _BLOCK_CELLS // n)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    done = 0
    while done < n_resamples:
        rows = min(block, n_resamples - done)
        idx = np.hstack(
            [
                pos[rng.integers(0, len(pos), size=(rows, len(pos)))],
                neg[rng.integers(0, len(neg), size=(rows, len(neg)))],
            ]
        )
        total = {m: np.zeros(rows) for m in METRICS}
        for k in range(len(real)):
            a = _resampled(augmented[k][idx], len(pos), float(thresholds[1][k]))
            r = _resampled(real[k][idx], len(pos), float(thresholds[0][k]))
            for m in METRICS:
                total[m] += a[m] - r[m]
        for m in METRICS:
            out[m].append(total[m] / len(real))
        done += rows
    return {m: np.concatenate(v) for m, v in out.items()}


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of a zero difference: twice the smaller tail share, capped at 1.

    Shares are counted as (k + 1) / (R + 1) (Davison & Hinkley 1997): R resamples cannot show a
    p below about 1 / R, and a p of exactly 0 would survive any Holm multiplier."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan
    tails = [(int(np.sum(d <= 0)) + 1) / (len(d) + 1), (int(np.sum(d >= 0)) + 1) / (len(d) + 1)]
    return float(min(1.0, 2.0 * min(tails)))


def seed_p(real: np.ndarray, augmented: np.ndarray) -> float:
    """Paired t-test across seeds; NaN with fewer than two seeds or identical differences (the
    t statistic is then undefined, and the caller falls back to the bootstrap)."""
    real, augmented = np.asarray(real, float), np.asarray(augmented, float)
    d = augmented - real
    # differences equal up to rounding (0.8 - 0.7 vs 0.7 - 0.6) have no variance either
    if len(d) < 2 or np.isnan(d).any() or np.ptp(d) <= 1e-12:
        return math.nan
    return float(stats.ttest_rel(augmented, real).pvalue)


def _members(frame: pd.DataFrame, attribute: str, group: str) -> np.ndarray:
    if attribute == OVERALL:
        return np.ones(len(frame), bool)
    keep = np.ones(len(frame), bool)
    for a, g in zip(attribute.split(CROSS), group.split(CROSS), strict=True):
        keep &= frame[a].astype(str).to_numpy() == g
    return keep


@dataclass
class UtilityResult:
    """Both arms' numbers per seed and their paired comparison; plain tables, PHI-free."""

    runs: (
        pd.DataFrame
    )  # seed, arm, auc(+_low/_high), sensitivity, specificity, threshold, n_train_*
    subgroups: pd.DataFrame  # seed, arm, attribute, group, n, n_pos, n_neg, auc, sens, spec
    paired: pd.DataFrame  # attribute, group, n, metric, real, augmented, difference, low, high, p..
    scores: pd.DataFrame  # seed, arm, sample_id, y_true, score (test)
    seeds: tuple[int, ...]
    n_resamples: int

    def overall(self, metric: str = "auc") -> dict[str, Any]:
        """The paired row of ``metric`` over the whole test set."""
        p = self.paired
        row = p[(p["attribute"] == OVERALL) & (p["metric"] == metric)]
        return dict(row.iloc[0])

    @property
    def verdict(self) -> str:
        """``helped`` when the overall AUC difference's 95% CI lies above 0 and its Holm-adjusted
        p is below 0.05, ``hurt`` when the CI lies below 0 (same p), else no measurable benefit."""
        r = self.overall("auc")
        significant = bool(r["p_holm"] < ALPHA)
        if significant and r["low"] > 0:
            return HELPED
        if significant and r["high"] < 0:
            return HURT
        return NO_BENEFIT

    def statement(self) -> str:
        """One plain sentence with the figures behind the verdict."""
        r = self.overall("auc")
        phrase = {HELPED: "helped", HURT: "hurt", NO_BENEFIT: "did not measurably help"}
        p = r["p_holm"]
        p_text = "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"= {p:.2f}")
        k = len(self.seeds)
        return (
            f"Augmentation {phrase[self.verdict]}: test AUC {r['real']:.2f} (real) vs "
            f"{r['augmented']:.2f} (real+synthetic), difference {r['difference']:+.2f} "
            f"(95% CI {r['low']:+.2f} to {r['high']:+.2f}), Holm-adjusted p {p_text} over "
            f"{k} seed{'s' if k != 1 else ''}."
        )


def _seed_config(cfg: EvaluationConfig, seed: int) -> EvaluationConfig:
    return replace(
        cfg,
        seed=seed,
        segmentation=False,
        explain_cases=min(cfg.explain_cases, 1),
        classifier=replace(cfg.classifier, seed=seed),
    )


def _check(data: dict[str, SplitData]) -> None:
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise ValueError(f"splits lack {', '.join(missing)}: give train, validation and test")
    if not synthetic_flags(data["train"].rows).any():
        raise ValueError(
            "the train split has no synthetic samples (rows with synthetic True), so there is "
            "nothing to compare; release synthetic samples into train first, or measure the real "
            "data alone with medcurate.evaluate.baseline.evaluate"
        )
    for s in ("validation", "test"):
        if synthetic_flags(data[s].rows).any():
            raise ValueError(
                f"the {s} split holds synthetic samples; they belong in train only "
                "(load_split drops them: load the splits with it)"
            )


def _paired_rows(
    frame: pd.DataFrame,
    groups: pd.DataFrame,
    score: dict[str, np.ndarray],
    threshold: dict[str, np.ndarray],
    n_resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    y_all = frame["y_true"].to_numpy().astype(int)
    rows = []
    for attribute, group in groups[["attribute", "group"]].itertuples(index=False):
        m = _members(frame, attribute, group)
        y = y_all[m]
        n_pos = int(y.sum())
        base = {"attribute": attribute, "group": group, "n": int(m.sum()), "n_pos": n_pos}
        base["n_neg"] = base["n"] - n_pos
        if n_pos == 0 or n_pos == len(y):
            for metric in METRICS:
                rows.append({**base, "metric": metric, "p_method": "one class: not compared"})
            continue
        real, aug = score[REAL][:, m], score[AUGMENTED][:, m]
        point = {
            arm: [
                binary_metrics(y, s, float(t))
                for s, t in zip(score[arm][:, m], threshold[arm], strict=True)
            ]
            for arm in ARMS
        }
        diffs = paired_bootstrap(
            y, real, aug, (threshold[REAL], threshold[AUGMENTED]), n_resamples, seed
        )
        for metric in METRICS:
            per_real = np.array([d[metric] for d in point[REAL]])
            per_aug = np.array([d[metric] for d in point[AUGMENTED]])
            low, high = np.quantile(diffs[metric], [0.025, 0.975])
            p = seed_p(per_real, per_aug)
            method = "paired t-test across seeds"
            if math.isnan(p):
                p, method = bootstrap_p(diffs[metric]), "paired bootstrap"
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "real": float(per_real.mean()),
                    "augmented": float(per_aug.mean()),
                    "difference": float((per_aug - per_real).mean()),
                    "low": float(low),
                    "high": float(high),
                    "p": p,
                    "p_method": method,
                }
            )
    return rows


def compare(
    ds: Any,
    cfg: EvaluationConfig,
    seeds: Sequence[int] = (0, 1, 2),
    splits: dict[str, SplitData] | None = None,
    intersections: bool = False,
    bootstrap_seed: int = 0,
    cache: str | Path | None = None,
) -> UtilityResult:
    """Train and measure both arms for each seed on the same validation and test samples.

    The splits are loaded once from ``ds`` (or taken from ``splits``). Each run uses ``cfg`` with
    the seed in ``cfg.seed`` and ``cfg.classifier.seed``, no segmentation and few Grad-CAM
    cases. The paired table compares overall and every single-attribute subgroup (and, with
    ``intersections``, the pairwise ones the evaluation kept); intersections are left out by
    default because they multiply the Holm family while resting on a handful of samples each.
    No saliency is computed (only scores are compared). ``cache`` (a folder) is the evaluation's:
    slices loaded there and a classifier it trained on the same slices and config (the
    real+synthetic arm of its seed) are read, not made again; the numbers are the same.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds repeat; each seed is one paired run")
    data = splits or load_splits(
        ds, cfg.size, SPLITS, cache=cache, train_slices_per_sample=cfg.train_slices_per_sample
    )
    _check(data)
    train = data["train"]
    runs, subgroups, scores = [], [], []
    score: dict[str, list[np.ndarray]] = {a: [] for a in ARMS}
    threshold: dict[str, list[float]] = {a: [] for a in ARMS}
    frame = pd.DataFrame()
    groups = pd.DataFrame()
    for seed in seeds:
        run_cfg = _seed_config(cfg, seed)
        for arm in ARMS:
            # the real arm's copy of the train slices lives only while its run does
            arm_train = real_only(train) if arm == REAL else train
            ev = evaluate(
                ds,
                run_cfg,
                splits={**data, "train": arm_train},
                explain_saliency=False,
                cache=cache,
            )
            synth = int(synthetic_flags(arm_train.rows).sum())
            runs.append(
                {
                    "seed": seed,
                    "arm": arm,
                    "auc": ev.metrics["auc"].value,
                    "auc_low": ev.metrics["auc"].low,
                    "auc_high": ev.metrics["auc"].high,
                    "sensitivity": ev.metrics["sensitivity"].value,
                    "specificity": ev.metrics["specificity"].value,
                    "threshold": ev.threshold,
                    "n_train_real": len(arm_train.rows) - synth,
                    "n_train_synthetic": synth,
                    "epochs": len(ev.classifier.history),
                    "warm_start_from": ev.classifier.parent or "none",
                }
            )
            cols = ["attribute", "group", "n", "n_pos", "n_neg", *METRICS]
            subgroups.append(ev.subgroups[cols].assign(seed=seed, arm=arm))
            ts = ev.test_scores
            scores.append(ts[["sample_id", "y_true", "score"]].assign(seed=seed, arm=arm))
            if frame.empty:
                frame, groups = ts, ev.subgroups
            elif not np.array_equal(ts["sample_id"].to_numpy(), frame["sample_id"].to_numpy()):
                raise ValueError("test samples differ between runs; pass the same splits")
            score[arm].append(ts["score"].to_numpy(dtype=float))
            threshold[arm].append(ev.threshold)
    if not intersections:
        groups = groups[~groups["attribute"].str.contains(CROSS, regex=False)]
    paired = pd.DataFrame(
        _paired_rows(
            frame,
            groups,
            {a: np.vstack(v) for a, v in score.items()},
            {a: np.asarray(v) for a, v in threshold.items()},
            cfg.n_resamples,
            bootstrap_seed,
        )
    )
    for c in ("real", "augmented", "difference", "low", "high", "p"):
        if c not in paired:
            paired[c] = np.nan
    paired["p_holm"] = np.nan
    for metric in METRICS:
        on = paired["metric"] == metric
        paired.loc[on, "p_holm"] = holm(paired.loc[on, "p"].to_numpy(dtype=float))
    order = ["attribute", "group", "n", "n_pos", "n_neg", "metric", "real", "augmented"]
    order += ["difference", "low", "high", "p", "p_method", "p_holm"]
    sub = pd.concat(subgroups, ignore_index=True)
    lead = ["seed", "arm"]
    return UtilityResult(
        runs=pd.DataFrame(runs),
        subgroups=sub[lead + [c for c in sub.columns if c not in lead]],
        paired=paired[order],
        scores=pd.concat(scores, ignore_index=True)[[*lead, "sample_id", "y_true", "score"]],
        seeds=seeds,
        n_resamples=cfg.n_resamples,
    )
