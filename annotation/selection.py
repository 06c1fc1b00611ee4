"""Which samples go to the annotators in a round.

Round 1 has no model: a random seed set stratified by site and modality, so the first labels
cover the scanners the model will meet. Later rounds spend most of the budget where the model is
least sure (or where annotators disagreed) and the rest, the control group, at random: the
control group is what lets anyone measure whether active learning paid off, since its labels are
an unbiased sample of the pool. Everything is seeded and ties break by sample id, so the same
inputs give the same selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from annotation import rounds
from medcurate.config import Zones
from medcurate.io import sha256_text

REASONS = ("seed", "uncertainty", "disagreement", "control")
STRATA = ("site", "modality")
SELECTION_COLUMNS = ["sample_id", "reason"]


def _rng(seed: int, round_number: int, salt: str) -> np.random.Generator:
    digest = sha256_text(f"{seed}:{round_number}:{salt}")
    return np.random.default_rng(int(digest[:16], 16))  # the digest's first 8 bytes


def _shuffled(ids: list[str], rng: np.random.Generator) -> list[str]:
    ids = sorted(ids)
    return [ids[i] for i in rng.permutation(len(ids))]


def stratified_sample(
    pool: pd.DataFrame, n: int, rng: np.random.Generator, strata: tuple[str, ...] = STRATA
) -> list[str]:
    """``n`` sample ids spread over the strata in proportion to their size (largest remainder),
    random within a stratum."""
    if n <= 0 or pool.empty:
        return []
    cols = [c for c in strata if c in pool.columns]
    keys = pool[cols].astype(str).agg("|".join, axis=1) if cols else pd.Series("", pool.index)
    groups = {
        k: _shuffled(pool.loc[keys == k, "sample_id"].tolist(), rng) for k in sorted(set(keys))
    }
    n = min(n, len(pool))
    total = len(pool)
    quota = {k: len(v) * n / total for k, v in groups.items()}
    alloc = {k: int(np.floor(q)) for k, q in quota.items()}
    order = sorted(groups, key=lambda k: (-(quota[k] - alloc[k]), k))
    i = 0
    while sum(alloc.values()) < n:
        k = order[i % len(order)]
        if alloc[k] < len(groups[k]):
            alloc[k] += 1
        i += 1
    picked = [sid for k in sorted(groups) for sid in groups[k][: alloc[k]]]
    return _shuffled(picked, rng)


def select_for_round(
    volumes: pd.DataFrame,
    labelled: set[str],
    round_number: int,
    n: int,
    seed: int,
    scores: pd.DataFrame | None,
    control_fraction: float = 0.25,
) -> pd.DataFrame:
    """Up to ``n`` unlabelled samples for round ``round_number``: columns sample_id, reason.

    Round 1, or no ``scores``: a stratified random seed set (reason ``seed``). Later rounds:
    ``n - round(n * control_fraction)`` samples with the highest ``disagreement`` (if ``scores``
    has that column, e.g. from the annotators' agreement table) or else ``uncertainty``, then the
    control group drawn at random from the rest of the pool (reason ``control``). Samples in
    ``labelled`` are never picked; samples without a score can only be picked as controls.
    """
    if round_number < 1:
        raise ValueError(f"round numbers start at 1, got {round_number}")
    if not 0.0 <= control_fraction <= 1.0:
        raise ValueError(f"control_fraction must be within [0, 1], got {control_fraction}")
    if "sample_id" not in volumes.columns:
        raise ValueError("volumes has no sample_id column")
    pool = volumes.drop_duplicates("sample_id")
    if "status" in pool.columns:  # only volumes that were written are worth labelling
        pool = pool[pool["status"].fillna("ok") == "ok"]
    pool = pool[~pool["sample_id"].isin(labelled)].sort_values("sample_id", kind="stable")
    n = min(max(n, 0), len(pool))
    if n == 0:
        return pd.DataFrame({"sample_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    if round_number == 1 or scores is None or scores.empty:
        ids = stratified_sample(pool, n, _rng(seed, round_number, "seed"))
        return pd.DataFrame({"sample_id": ids, "reason": "seed"})
    key = "disagreement" if "disagreement" in scores.columns else "uncertainty"
    if key not in scores.columns:
        raise ValueError("scores needs an 'uncertainty' or a 'disagreement' column")
    n_control = round(n * control_fraction)
    ranked = (
        scores[["sample_id", key]]
        .dropna()
        .drop_duplicates("sample_id")
        .loc[lambda d: d["sample_id"].isin(set(pool["sample_id"]))]
        .sort_values([key, "sample_id"], ascending=[False, True], kind="stable")
    )
    active = ranked["sample_id"].tolist()[: n - n_control]
    rest = pool[~pool["sample_id"].isin(active)]
    control = _shuffled(rest["sample_id"].tolist(), _rng(seed, round_number, "control"))
    control = control[: n - len(active)]
    rows = [(s, key) for s in active] + [(s, "control") for s in control]
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def choose_round_samples(
    volumes: pd.DataFrame, z: Zones, round: str, n: int, seed: int
) -> tuple[list[str], str]:
    """The samples of a new round and how they were chosen (e.g. ``"control: 2, uncertainty: 6"``).

    Samples sent out in other rounds or already carrying a consensus label are never picked
    again; the round model's ``scores.parquet`` (if there) drives active learning.
    """
    labelled = set(rounds.previous_samples(z, round))
    if z.labels_table.exists():
        labelled |= set(
            pd.read_parquet(z.labels_table, columns=["sample_id"])["sample_id"].astype(str)
        )
    scores_file = z.round_scores(round)
    scores = pd.read_parquet(scores_file) if scores_file.exists() else None
    picked = select_for_round(volumes, labelled, rounds.round_number(round), n, seed, scores)
    reasons = picked["reason"].value_counts().sort_index()
    return sorted(picked["sample_id"].astype(str)), ", ".join(
        f"{k}: {v}" for k, v in reasons.items()
    )
