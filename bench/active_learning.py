"""Active learning vs random selection at equal label budgets, generator truth as the oracle.

    .venv/bin/python bench/active_learning.py [--patients 32] [--rounds 3] [--seed-set 12]
        [--per-round 8] [--repeats 2] [--work DIR]

A cohort is generated and normalized once (cached in --work), the truth masks are resampled into
each volume's grid, and a quarter of the patients is held out as the test set. Both strategies
start from the same stratified round-1 seed set; each later round trains the UNet on the labels
so far, then active learning labels the most uncertain pool samples (plus its random control
group, as in production) while the baseline labels a random draw of the same size. After every
round a model trained on the labels chosen is scored on the test set: pooled Dice over all test
voxels, and how many lesion-bearing volumes the labels contain. No Label Studio, no annotator
noise: the oracle is the truth. Numbers are printed as measured, whichever way they fall.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotation.model import (  # noqa: E402
    ModelConfig,
    TrainExample,
    predict,
    sample_scores,
    to_mask,
    train,
)
from annotation.selection import select_for_round  # noqa: E402
from medcurate.io import nifti_geometry, read_nifti, sha256_text, write_nifti  # noqa: E402


def prepare(work: Path, patients: int, seed: int) -> pd.DataFrame:
    """Generate, normalize and write oracle masks (cached). Returns the volumes table plus
    ``oracle`` (path of the truth mask in the volume's grid) and ``abnormal``."""
    from scipy import ndimage as ndi

    from medcurate.normalize import normalize_tree
    from medcurate.synth import generate_studies

    tag = work / f"cohort-p{patients}-s{seed}"
    studies, truth, vols, oracle = tag / "studies", tag / "truth", tag / "volumes", tag / "oracle"
    if not (vols / "volumes.parquet").exists():
        t0 = time.time()
        print(generate_studies(studies, patients=patients, seed=seed, truth=truth))
        print(normalize_tree(studies, vols).summary_line())
        print(f"cohort ready in {time.time() - t0:.0f} s")
    table = pd.read_parquet(vols / "volumes.parquet")
    table = table[table["status"] == "ok"]
    labels = pd.read_parquet(truth / "labels.parquet")[["series_uid", "mask_file"]]
    table = table.merge(labels, on="series_uid", how="inner").sort_values("sample_id")
    oracle.mkdir(parents=True, exist_ok=True)
    paths, abnormal = [], []
    for r in table.itertuples():
        out = oracle / f"{r.sample_id}.nii.gz"
        if not out.exists():
            shape, affine = nifti_geometry(vols / str(r.nifti_path))
            t, t_affine = read_nifti(truth / str(r.mask_file))
            m = np.linalg.inv(t_affine) @ affine
            g = ndi.affine_transform(
                (t > 0).astype(np.uint8), m[:3, :3], m[:3, 3], output_shape=shape[:3], order=0
            )
            write_nifti(out, g, affine, dtype="uint8")
        g_any = bool(_load(str(out)).any())
        paths.append(str(out))
        abnormal.append(g_any)
    table = table.assign(
        oracle=paths, abnormal=abnormal, path=[str(vols / p) for p in table["nifti_path"]]
    )
    return table.reset_index(drop=True)


def _load(path: str) -> np.ndarray:
    return read_nifti(path)[0]


def _examples(table: pd.DataFrame, ids: list[str]) -> list[TrainExample]:
    rows = table.set_index("sample_id").loc[sorted(ids)]
    out = []
    for sid, r in rows.iterrows():
        mask = _load(str(r["oracle"])).astype(np.uint8) if r["abnormal"] else None
        out.append(TrainExample(_load(str(r["path"])), str(r["modality"]), mask))
        del sid
    return out


def evaluate(model: Any, cfg: ModelConfig, test: pd.DataFrame) -> tuple[float, float]:
    """(pooled Dice over all test voxels, mean Dice over the test volumes with a lesion)."""
    inter = total = 0
    per = []
    for r in test.itertuples():
        pred = to_mask(predict(model, _load(str(r.path)), str(r.modality), cfg), cfg) > 0
        truth = _load(str(r.oracle)) > 0
        i, s = int((pred & truth).sum()), int(pred.sum() + truth.sum())
        inter, total = inter + i, total + s
        if r.abnormal:
            per.append(2 * i / s if s else 1.0)
    return (2 * inter / total if total else 1.0), float(np.mean(per)) if per else float("nan")


def score_pool(model: Any, cfg: ModelConfig, pool: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in pool.itertuples():
        unc, pab = sample_scores(
            predict(model, _load(str(r.path)), str(r.modality), cfg), cfg.threshold
        )
        rows.append({"sample_id": r.sample_id, "uncertainty": unc, "p_abnormal": pab})
    return pd.DataFrame(rows)


def run(
    table: pd.DataFrame,
    rounds: int,
    seed_set: int,
    per_round: int,
    repeat: int,
    cfg: ModelConfig,
) -> list[dict[str, Any]]:
    patients = sorted(table["patient"].unique())
    ranked = sorted(patients, key=lambda p: sha256_text(f"test:{p}"))
    test_patients = set(ranked[: max(1, len(patients) // 4)])
    test = table[table["patient"].isin(test_patients)]
    pool = table[~table["patient"].isin(test_patients)]
    seed = 100 + repeat
    model_cfg = ModelConfig(**{**cfg.__dict__, "seed": seed})
    first = select_for_round(pool, set(), 1, seed_set, seed, None)["sample_id"].tolist()
    labelled = {"active": set(first), "random": set(first)}
    results: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        for strategy in ("active", "random"):
            ids = sorted(labelled[strategy])
            res = None
            if rnd == 1 and strategy == "random":  # same seed set, same model: reuse the row
                results.append({**results[-1], "strategy": "random"})
            else:
                t0 = time.time()
                res = train(_examples(table, ids), model_cfg)
                pooled, per = evaluate(res.model, model_cfg, test)
                n_pos = int(table[table["sample_id"].isin(ids)]["abnormal"].sum())
                results.append(
                    dict(repeat=repeat, round_number=rnd, strategy=strategy, labels=len(ids),
                         lesion_volumes=n_pos, test_dice=round(pooled, 4),
                         test_dice_abnormal=round(per, 4), seconds=round(time.time() - t0, 1))
                )  # fmt: skip
                print(results[-1], flush=True)
            if rnd == rounds:
                continue
            unl = pool[~pool["sample_id"].isin(labelled[strategy])]
            if strategy == "active":
                assert res is not None
                scores = score_pool(res.model, model_cfg, unl)
                sel = select_for_round(pool, labelled[strategy], rnd + 1, per_round, seed, scores)
            else:
                sel = select_for_round(
                    pool, labelled[strategy], rnd + 1, per_round, seed,
                    pd.DataFrame({"sample_id": unl["sample_id"], "uncertainty": 0.0}),
                    control_fraction=1.0,
                )  # fmt: skip
            labelled[strategy] |= set(sel["sample_id"])
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=32)
    ap.add_argument("--seed", type=int, default=11, help="cohort generator seed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed-set", type=int, default=12, help="round-1 labels")
    ap.add_argument("--per-round", type=int, default=8, help="labels added per later round")
    ap.add_argument("--repeats", type=int, default=2, help="model/selection seeds")
    ap.add_argument("--epochs", type=int, default=ModelConfig.epochs)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medcurate-al-bench"))
    a = ap.parse_args(argv)
    t0 = time.time()
    table = prepare(a.work, a.patients, a.seed)
    print(
        f"cohort: {len(table)} volumes, {int(table['abnormal'].sum())} with a lesion, "
        f"{table['patient'].nunique()} patients"
    )
    cfg = ModelConfig(epochs=a.epochs)
    rows = []
    for rep in range(a.repeats):
        rows += run(table, a.rounds, a.seed_set, a.per_round, rep, cfg)
    df = pd.DataFrame(rows)
    summary = (
        df.groupby(["round_number", "strategy"])
        .agg(labels=("labels", "first"), lesion_volumes=("lesion_volumes", "mean"),
             test_dice=("test_dice", "mean"), test_dice_sd=("test_dice", "std"),
             test_dice_abnormal=("test_dice_abnormal", "mean"))
        .round(3)
        .reset_index()
    )  # fmt: skip
    print()
    print(f"active learning vs random, {a.repeats} repeat(s), test set = 1/4 of patients")
    print(summary.to_string(index=False))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
