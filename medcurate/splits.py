"""Patient-level, multi-attribute stratified splits that stay put across dataset versions.

Why this shape:

* Leakage: slice- or scan-level splits inflate test accuracy by tens of points (Yagis et al. 2021),
  so every sample of a patient lands in the same split, and folds are assigned per patient too.
* Balance on several attributes at once (label, sex, age band, site, modality): a full cross-product
  of strata is too sparse for small cohorts, so patients are placed iteratively to balance the
  marginal attribute values (in the spirit of Sechidis et al. 2011, see
  :func:`iterative_stratify`), counting samples, not patients.
* Stability: an assigned patient never moves. New patients are stratified against the *deficit*
  of each split (target share of the whole cohort minus what earlier patients already hold), the
  MIDRC "stratify each new batch, never reassign" rule with balance corrected over time.
* Whole-site hold-out: patients from configured sites form an ``external`` test split.
* Synthetic samples only ever go to ``train`` (fold -1: they train in every fold).

Everything is deterministic for a seed: ties are broken by a seeded permutation of sorted patients.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcurate.io import atomic_write_bytes

TRAIN, VALIDATION, TEST, EXTERNAL = "train", "validation", "test", "external"
SPLITS: tuple[str, ...] = (TRAIN, VALIDATION, TEST)
ALL_SPLITS: tuple[str, ...] = (TRAIN, VALIDATION, TEST, EXTERNAL)
NO_FOLD = -1

#: CDC-style age bins as used by MIDRC's stratified sampling.
AGE_BINS: tuple[tuple[int, int, str], ...] = (
    (0, 18, "0-17"),
    (18, 30, "18-29"),
    (30, 40, "30-39"),
    (40, 50, "40-49"),
    (50, 65, "50-64"),
    (65, 75, "65-74"),
    (75, 85, "75-84"),
    (85, 1000, "85+"),
)
UNKNOWN = "unknown"
DEFAULT_STRATA: tuple[str, ...] = ("label", "sex", "age_band", "site", "modality")


class SplitError(ValueError):
    """The cohort or the configuration cannot be split as asked."""


@dataclass(frozen=True)
class SplitConfig:
    """How to split: target ratios (train, validation, test), folds inside train, seed, hold-out."""

    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    folds: int = 5
    seed: int = 0
    strata: tuple[str, ...] = DEFAULT_STRATA
    holdout_sites: tuple[str, ...] = field(default_factory=tuple)
    #: How much each attribute's balance counts (default 1). The label weighs most: a split
    #: without abnormal cases is worse than one a little off on age.
    weights: tuple[tuple[str, float], ...] = (("label", 8.0),)
    #: Evaluation splits that must each hold ``min_positives`` positive samples per class of
    #: ``positive_classes`` (a sample with that label and, where the table has ``mask_path``,
    #: a mask), as the blocking ``evaluation_splits_have_positives`` check of quality/ asks.
    #: Stratification balances shares, not this floor: with a few positive patients an unlucky
    #: order (the pseudonyms change with the salt) can leave one split without any.
    evaluation_splits: tuple[str, ...] = ("validation", "test")
    positive_classes: tuple[str, ...] = ("abnormal",)
    min_positives: int = 1

    def __post_init__(self) -> None:
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or sum(self.ratios) <= 0:
            raise SplitError("ratios must be three non-negative numbers (train, validation, test)")
        if self.folds < 0 or self.folds == 1:
            raise SplitError("folds must be 0 (no cross-validation) or at least 2")

    def normalised_ratios(self) -> np.ndarray:
        r = np.asarray(self.ratios, dtype=float)
        return r / r.sum()


def age_band(age: object) -> str:
    """The CDC age bin of an age in years; ``unknown`` for missing or negative ages."""
    try:
        a = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNKNOWN
    if not np.isfinite(a) or a < 0:
        return UNKNOWN
    for lo, hi, name in AGE_BINS:
        if lo <= a < hi:
            return name
    return UNKNOWN


def _with_strata(samples: pd.DataFrame, strata: Sequence[str]) -> pd.DataFrame:
    df = samples.copy()
    if "age_band" in strata and "age_band" not in df.columns:
        ages = df["age_years"] if "age_years" in df.columns else pd.Series([None] * len(df))
        df["age_band"] = [age_band(a) for a in ages]
    for col in strata:
        if col not in df.columns:
            df[col] = UNKNOWN
        df[col] = df[col].astype(object).where(df[col].notna(), UNKNOWN).astype(str)
    if "synthetic" not in df.columns:
        df["synthetic"] = False
    df["synthetic"] = df["synthetic"].fillna(False).astype(bool)
    return df


def _informative(df: pd.DataFrame, strata: Sequence[str]) -> list[str]:
    """Attributes that vary in the cohort (modality only matters "where mixed")."""
    return [c for c in strata if df[c].nunique() > 1]


def _feature_matrix(
    df: pd.DataFrame,
    strata: Sequence[str],
    patients: Sequence[str],
    weights: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per patient: sample counts per attribute value (columns) and total sample counts.

    A column is scaled by the square root of its attribute's weight, so that its squared
    deficit counts ``weight`` times in the stratifier's objective.
    """
    if not strata:
        counts = df.groupby("patient").size().reindex(list(patients)).to_numpy(dtype=float)
        return np.zeros((len(patients), 0)), counts
    w = weights or {}
    parts = [
        pd.crosstab(df["patient"], df[c].map(lambda v, c=c: f"{c}={v}"))
        * float(np.sqrt(w.get(c, 1.0)))
        for c in strata
    ]
    feats = pd.concat(parts, axis=1).reindex(index=list(patients)).fillna(0)
    feats = feats[sorted(feats.columns)]
    sizes = df.groupby("patient").size().reindex(list(patients)).to_numpy(dtype=float)
    return feats.to_numpy(dtype=float), sizes


def iterative_stratify(
    features: np.ndarray,
    sizes: np.ndarray,
    ratios: np.ndarray,
    seed: int,
    held_features: np.ndarray | None = None,
    held_sizes: np.ndarray | None = None,
    sweeps: int = 5,
) -> np.ndarray:
    """Assign each row (patient) to one of ``len(ratios)`` bins, balancing every feature column.

    ``features`` is patients x features (sample counts), ``sizes`` the samples per patient.
    ``held_features``/``held_sizes`` (bins x features / bins) are what earlier, fixed patients
    already put into each bin: targets are shares of the whole cohort, so new patients fill the
    deficits. Returns the bin index per patient. Deterministic for a seed.

    Patients are placed one at a time (seeded order) into the bin that least increases the sum
    of squared deficits, measured in proportion-of-bin units, then single-patient moves are made
    while they lower it. On random cohorts this halves the largest stratum deviation of Sechidis'
    rarest-label-first rule (which balances rare values but lets common ones such as sex drift).
    """
    n, m = features.shape
    k = len(ratios)
    held_f = np.zeros((k, m)) if held_features is None else held_features.astype(float)
    held_s = np.zeros(k) if held_sizes is None else held_sizes.astype(float)
    total_s = sizes.sum() + held_s.sum()
    want_f = np.outer(ratios, features.sum(axis=0) + held_f.sum(axis=0)) - held_f
    want_s = ratios * total_s - held_s
    scale = np.maximum(ratios * total_s, 1e-9) ** 2
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    tiebreak = rng.random(k)  # a fixed bin preference for exact ties, per seed
    out = np.full(n, -1, dtype=int)

    def join_cost(i: int) -> np.ndarray:
        f, s = features[i], sizes[i]
        return (float(f @ f) + s * s - 2.0 * (want_f @ f) - 2.0 * want_s * s) / scale

    def move(i: int, frm: int, to: int) -> None:
        if frm >= 0:
            want_f[frm] += features[i]
            want_s[frm] += sizes[i]
        want_f[to] -= features[i]
        want_s[to] -= sizes[i]
        out[i] = to

    for i in order:
        move(int(i), -1, int(np.lexsort((-tiebreak, join_cost(int(i))))[0]))
    for _ in range(sweeps):
        moved = False
        for i in order:
            b = int(out[i])
            f, s = features[i], sizes[i]
            leave = (float(f @ f) + s * s + 2.0 * (want_f[b] @ f) + 2.0 * want_s[b] * s) / scale[b]
            delta = leave + join_cost(int(i))
            delta[b] = 0.0
            j = int(np.argmin(delta))
            if delta[j] < -1e-9:
                move(int(i), b, j)
                moved = True
        if not moved:
            break
    return out


def _patient_table(df: pd.DataFrame) -> pd.DataFrame:
    return (
        df.loc[~df["synthetic"]]
        .groupby("patient", sort=True)
        .agg(site=("site", "first"))
        .reset_index()
    )


def previous_assignment(previous: pd.DataFrame | None) -> dict[str, tuple[str, int]]:
    """Patient -> (split, fold) from an earlier manifest (one row per sample or per patient)."""
    if previous is None or previous.empty:
        return {}
    prev = previous
    if "synthetic" in prev.columns:
        prev = prev.loc[~prev["synthetic"].fillna(False).astype(bool)]
    out: dict[str, tuple[str, int]] = {}
    for patient, grp in prev.groupby("patient", sort=True):
        splits = set(grp["split"])
        if len(splits) != 1:
            raise SplitError(f"previous assignment puts one patient in {len(splits)} splits")
        fold = int(grp["fold"].iloc[0]) if "fold" in grp.columns else NO_FOLD
        out[str(patient)] = (str(next(iter(splits))), fold)
    return out


def assign_splits(
    samples: pd.DataFrame,
    config: SplitConfig | None = None,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Add ``split``, ``fold`` and ``age_band`` to a samples table (needs ``sample_id, patient``).

    Patients found in ``previous`` (an earlier manifest with ``patient, split, fold``) keep their
    split and fold; new patients are stratified against the remaining deficits.
    """
    config = config or SplitConfig()
    for col in ("sample_id", "patient"):
        if col not in samples.columns:
            raise SplitError(f"samples table lacks the column {col!r}")
    if samples["sample_id"].duplicated().any():
        raise SplitError("samples table has duplicate sample_id values")
    strata = list(config.strata)
    df = _with_strata(samples, strata)
    df["patient"] = df["patient"].astype(str)
    real = df.loc[~df["synthetic"]]
    fixed = previous_assignment(previous)

    split_of: dict[str, str] = {}
    fold_of: dict[str, int] = {}
    for p, (s, f) in fixed.items():
        split_of[p] = s
        fold_of[p] = f

    patients = _patient_table(df)
    new = [p for p in patients["patient"] if p not in split_of]
    holdout = set(config.holdout_sites)
    if holdout:
        site_of = dict(zip(patients["patient"], patients["site"], strict=True))
        for p in list(new):
            if site_of[p] in holdout:
                split_of[p] = EXTERNAL
                fold_of[p] = NO_FOLD
        new = [p for p in new if p not in split_of]

    # stratify over the internal cohort only (external patients do not count towards ratios)
    internal = real.loc[real["patient"].map(lambda p: split_of.get(p) != EXTERNAL)]
    cols = _informative(internal, strata)
    ratios = config.normalised_ratios()
    if new:
        _place(
            internal, cols, new, split_of, list(SPLITS), ratios, config.seed, dict(config.weights)
        )
        _ensure_positives(internal, set(new), split_of, config)
    # folds inside train: earlier train patients keep their fold, new ones fill the deficits
    real_patients = set(real["patient"])
    if config.folds >= 2:
        train_patients = sorted(p for p, s in split_of.items() if s == TRAIN and p in real_patients)
        fold_split = {
            p: str(fold_of[p]) for p in train_patients if fold_of.get(p, NO_FOLD) != NO_FOLD
        }
        new_train = [p for p in train_patients if p not in fold_split]
        if new_train:
            train = internal.loc[internal["patient"].isin(train_patients)]
            _place(
                train,
                _informative(train, strata),
                new_train,
                fold_split,
                [str(i) for i in range(config.folds)],
                np.full(config.folds, 1.0 / config.folds),
                config.seed + 1,
                dict(config.weights),
            )
            for p in new_train:
                fold_of[p] = int(fold_split[p])
    for p, s in split_of.items():
        if s != TRAIN or config.folds < 2:
            fold_of[p] = NO_FOLD

    out = samples.copy()
    out["age_band"] = df["age_band"].to_numpy() if "age_band" in df.columns else UNKNOWN
    synthetic = df["synthetic"].to_numpy()
    pats = df["patient"].to_numpy()
    out["split"] = [TRAIN if syn else split_of[p] for p, syn in zip(pats, synthetic, strict=True)]
    out["fold"] = [
        NO_FOLD if syn else fold_of.get(p, NO_FOLD) for p, syn in zip(pats, synthetic, strict=True)
    ]
    out["fold"] = out["fold"].astype("int64")
    return out


def _positive_counts(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Patients x classes: positive samples per patient (label in the class and, where the
    table has ``mask_path``, a mask: a segmentation model is evaluated on masks)."""
    label = df["label"].astype(object) if "label" in df.columns else pd.Series(None, df.index)
    has_mask = pd.Series(True, index=df.index)
    if "mask_path" in df.columns:
        has_mask = df["mask_path"].map(
            lambda v: v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v) != ""
        )
    cols = {c: (label.eq(c) & has_mask.astype(bool)).astype(int) for c in classes}
    counts = pd.DataFrame(cols, index=df.index).groupby(df["patient"]).sum()
    return counts.reindex(columns=list(classes), fill_value=0)


def _ensure_positives(
    internal: pd.DataFrame, new: set[str], split_of: dict[str, str], config: SplitConfig
) -> None:
    """Swap patients so each evaluation split holds ``min_positives`` positives per class.

    Only ``new`` patients move (earlier ones keep their split across versions): a new patient
    with positives of the missing class trades places with a new patient of the short split who
    has no positive of any class. The donor comes from train first (while train keeps a positive
    of each class the patient has: a segmenter trains on them), else from an evaluation split
    that keeps its own floor. The pair closest in sample count is taken, so the split ratios
    hardly change; ties go to the smallest pseudonyms, so the result is deterministic and
    independent of row order. Where no such pair exists the assignment stays and the quality
    check names the shortfall.
    """
    classes = list(config.positive_classes)
    evaluation = [s for s in config.evaluation_splits if s in SPLITS]
    if not classes or not evaluation or config.min_positives < 1 or internal.empty:
        return
    table = _positive_counts(internal, classes)
    pos: dict[str, dict[str, int]] = {
        str(p): {str(c): int(v) for c, v in row.items()} for p, row in table.iterrows()
    }
    sizes = {str(p): int(v) for p, v in internal.groupby("patient").size().items()}
    need = config.min_positives

    def held(split: str, cls: str) -> int:
        return sum(pos[p][cls] for p, s in split_of.items() if s == split and p in pos)

    negatives_of = [p for p in sorted(new) if p in pos and not any(pos[p].values())]
    for split in evaluation:
        for cls in classes:
            while held(split, cls) < need:
                negatives = [p for p in negatives_of if split_of.get(p) == split]
                donors = []
                for d in sorted(new):
                    frm = split_of.get(d)
                    if d not in pos or pos[d][cls] == 0 or frm == split:
                        continue
                    if frm not in (TRAIN, *evaluation):
                        continue
                    # the donor split keeps what it needs: an evaluation split its floor, train
                    # at least one positive of each class it had (a segmenter trains on them)
                    floor = need if frm in evaluation else 1
                    if any(held(frm, c) - pos[d][c] < floor for c in classes if pos[d][c]):
                        continue
                    donors.append(d)
                pairs = [
                    (0 if split_of[d] == TRAIN else 1, abs(sizes[d] - sizes[n]), n, d)
                    for d in donors
                    for n in negatives
                ]
                if not pairs:
                    break
                _, _, n, d = min(pairs)
                split_of[n], split_of[d] = split_of[d], split


def _place(
    df: pd.DataFrame,
    cols: list[str],
    new: list[str],
    assignment: dict[str, str],
    bins: list[str],
    ratios: np.ndarray,
    seed: int,
    weights: dict[str, float] | None = None,
) -> None:
    """Stratify the ``new`` patients of ``df`` into ``bins``, given the fixed ``assignment``."""
    held = [p for p in sorted(set(df["patient"])) if p in assignment and assignment[p] in bins]
    # features must share columns: build on the union of old and new patients
    everyone = held + list(new)
    feats, sizes = _feature_matrix(df.loc[df["patient"].isin(everyone)], cols, everyone, weights)
    new_feats, new_sizes = feats[len(held) :], sizes[len(held) :]
    held_f = np.zeros((len(bins), feats.shape[1]))
    held_s = np.zeros(len(bins))
    for i, p in enumerate(held):
        b = bins.index(assignment[p])
        held_f[b] += feats[i]
        held_s[b] += sizes[i]
    idx = iterative_stratify(new_feats, new_sizes, ratios, seed, held_f, held_s)
    for p, b in zip(new, idx, strict=True):
        assignment[p] = bins[int(b)]


def leaking_patients(assigned: pd.DataFrame) -> list[str]:
    """Patients whose samples sit in more than one split (must be empty)."""
    real = assigned
    if "synthetic" in real.columns:
        real = real.loc[~real["synthetic"].fillna(False).astype(bool)]
    n = real.groupby("patient")["split"].nunique()
    return sorted(str(p) for p in n[n > 1].index)


def leak_problems(assigned: pd.DataFrame) -> list[str]:
    """The patient-leak test as problems: how many patients sit in two splits, never who (the
    count is enough to stop a release; the pseudonyms stay out of logs and check metadata)."""
    n = len(leaking_patients(assigned))
    return [f"{n} patient(s) have samples in more than one split"] if n else []


def balance_report(
    assigned: pd.DataFrame, strata: Sequence[str] = DEFAULT_STRATA, real_only: bool = True
) -> pd.DataFrame:
    """Per split and stratum value: sample count, proportion, the whole's proportion, deviation.

    The whole is the internal cohort (train/validation/test); ``external`` is reported against it.
    """
    df = _with_strata(assigned, strata)
    if real_only:
        df = df.loc[~df["synthetic"]]
    internal = df.loc[df["split"] != EXTERNAL]
    rows: list[dict[str, object]] = []
    for col in strata:
        whole = internal[col].value_counts(normalize=True)
        values = sorted(set(df[col]))
        for split in [s for s in ALL_SPLITS if s in set(df["split"])]:
            part = df.loc[df["split"] == split, col]
            n = len(part)
            counts = part.value_counts()
            for v in values:
                c = int(counts.get(v, 0))
                prop = c / n if n else 0.0
                ref = float(whole.get(v, 0.0))
                rows.append(
                    {
                        "split": split,
                        "attribute": col,
                        "value": v,
                        "count": c,
                        "proportion": round(prop, 4),
                        "overall": round(ref, 4),
                        "deviation": round(prop - ref, 4),
                    }
                )
    return pd.DataFrame(
        rows, columns=["split", "attribute", "value", "count", "proportion", "overall", "deviation"]
    )


def split_counts(assigned: pd.DataFrame) -> pd.DataFrame:
    """Samples and patients per split (synthetic samples counted apart)."""
    df = assigned.copy()
    syn = df["synthetic"].fillna(False).astype(bool) if "synthetic" in df.columns else False
    df["_syn"] = syn
    rows = []
    for split in [s for s in ALL_SPLITS if s in set(df["split"])]:
        part = df.loc[df["split"] == split]
        real = part.loc[~part["_syn"]]
        rows.append(
            {
                "split": split,
                "samples": len(part),
                "patients": int(real["patient"].nunique()),
                "synthetic": int(part["_syn"].sum()),
                "share": round(len(real) / max(1, int((~df["_syn"]).sum())), 4),
            }
        )
    return pd.DataFrame(rows, columns=["split", "samples", "patients", "synthetic", "share"])


def max_deviation(report: pd.DataFrame, splits: Sequence[str] = SPLITS) -> float:
    """The largest absolute deviation of a split's stratum proportion from the whole."""
    part = report.loc[report["split"].isin(list(splits))]
    return float(part["deviation"].abs().max()) if len(part) else 0.0


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def balance_markdown(report: pd.DataFrame) -> str:
    """The balance report as one markdown table: a proportion column per split."""
    if report.empty:
        return "(no samples)"
    wide = report.pivot_table(
        index=["attribute", "value"],
        columns="split",
        values="proportion",
        aggfunc="first",
        sort=False,
    )
    overall = report.groupby(["attribute", "value"], sort=False)["overall"].first()
    wide = wide[[s for s in ALL_SPLITS if s in wide.columns]]
    wide.insert(0, "all", overall)
    wide = wide.reset_index()
    return markdown_table(wide)


def balance_plot(report: pd.DataFrame, out: Path) -> Path:
    """Stratum proportions per split, one panel per attribute (PNG, no timestamp inside, so the
    same report gives the same bytes), written atomically.

    Small multiples rather than one long bar chart: each attribute's values sit side by side
    with one bar per split in a fixed colour, two panels to a row (about 600 px wide, so it fits
    Dagster's metadata column), the y axis is the share of the split's samples (0-1, so panels
    compare), and one legend sits below the panels."""
    import matplotlib  # lazy: heavy, and only the splits stage draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attributes = list(dict.fromkeys(report["attribute"]))
    splits = [s for s in ALL_SPLITS if s in set(report["split"])]
    splits += sorted(set(report["split"]) - set(splits))
    palette = plt.get_cmap("tab10")
    colours = {s: palette(i % 10) for i, s in enumerate(splits)}
    cols = min(2, max(1, len(attributes)))  # narrow: Dagster's metadata column
    rows = max(1, -(-len(attributes) // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.9 * rows + 0.6), squeeze=False, layout="constrained"
    )
    width = 0.8 / max(1, len(splits))
    for ax, attribute in zip(axes.flat, attributes, strict=False):
        part = report.loc[report["attribute"] == attribute]
        values = sorted({str(v) for v in part["value"]})
        for i, split in enumerate(splits):
            rows_of = part.loc[part["split"] == split]
            share = dict(zip(rows_of["value"].astype(str), rows_of["proportion"], strict=True))
            heights = [float(share.get(v, 0.0)) for v in values]
            xs = [x + (i - (len(splits) - 1) / 2) * width for x in range(len(values))]
            ax.bar(xs, heights, width=width, color=colours[split], label=split)
        ax.set_title(attribute)
        ax.set_xticks(range(len(values)))
        long = max((len(v) for v in values), default=0) > 6 or len(values) > 4
        ax.set_xticklabels(values, rotation=30 if long else 0, ha="right" if long else "center")
        ax.set_ylim(0, 1)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("share of the split's samples")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(attributes) :]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in splits]
    fig.legend(handles, splits, title="split", loc="outside lower center", ncols=len(splits) or 1)
    fig.suptitle("Stratum balance per split", fontsize="large")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=85, metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def png_markdown(png: Path, alt: str) -> str:
    """A PNG inlined as a markdown image (a data URL: Dagster's UI shows it without a server)."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def train_fingerprint(assigned: pd.DataFrame) -> str:
    """What a generator trained on this split may have seen: the real train rows (ids, files,
    labels, masks), independent of their order. Synthetic samples made from another train split
    are stale."""
    real = pd.Series(True, index=assigned.index)
    if "synthetic" in assigned.columns:
        real = ~assigned["synthetic"].fillna(False).astype(bool)
    train = assigned.loc[(assigned["split"] == TRAIN) & real]
    cols = [c for c in ("sample_id", "nifti_sha256", "label", "mask_path") if c in train.columns]
    rows = train[cols].astype(str).sort_values("sample_id").to_numpy().tolist()
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()
