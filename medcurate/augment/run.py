"""The augmentation stages: train the GAN, make checked synthetic samples.

``run_gan_model`` trains the class-conditional GAN on image+mask patches of the TRAIN split only
(lesion-centred patches are class 1, normal tissue class 0) and stores the checkpoint with its
config, the fingerprint of the train rows it saw and its losses. ``run_synthetic_samples``
generates lesion patches, measures their quality against real lesion patches, drops those closer
to a training record than real patients come to each other (memorization), pastes the survivors
into real normal train slices and writes them as train-only samples for the next release.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcurate.augment import figures
from medcurate.augment.gan import (
    GanConfig,
    TrainedGan,
    generate,
    load_checkpoint,
    save_checkpoint,
    train_gan,
)
from medcurate.augment.patches import (
    CT_SOFT_TISSUE,
    PatchSet,
    dihedral,
    extract_patches,
    training_rows,
)
from medcurate.augment.privacy import nearest_records, privacy_filter, real_reference
from medcurate.augment.quality import quality_report, train_encoder
from medcurate.augment.synthesize import background_slices, write_synthetic
from medcurate.config import Zones
from medcurate.io import atomic_write_bytes, atomic_write_parquet
from medcurate.splits import train_fingerprint
from medcurate.stage import Markdown, PathValue
from medcurate.store.manifest import SAMPLE_COLUMNS

TRAIN = "train"
#: iterations of the small preset's GAN from scratch (a warm start makes a share of them).
#: 200 was tried: on the demo's 32 volumes its samples were noise (MS-SSIM to real 0.004 vs 0.22
#: at 675 iterations, coverage 0.00 vs 0.20); 600 keeps the old budget on the demo's patches and
#: stops a larger cohort from growing it.
SMALL_STEPS = 600
#: a warm start makes at least this share of a from-scratch run's iterations
MIN_WARM_SHARE = 0.1


class AugmentError(RuntimeError):
    """Augmentation cannot run as asked (no train lesions, a stale generator)."""


@dataclass(frozen=True)
class AugmentConfig:
    modality: str = "CT"  # one modality per generator: intensities of CT and MR do not mix
    patch: int = 32
    lesion_slices_per_sample: int = 8
    normal_per_sample: int = 8
    gan: GanConfig = field(default_factory=lambda: GanConfig.small(channels=2))
    min_synthetic: int = 8  # rebalancing asks for at least this many
    max_synthetic: int = 64
    oversample: float = 2.0  # candidates generated per sample wanted, before the privacy filter
    privacy_quantile: float = 0.05
    max_dropped_share: float = 0.5  # more dropped than this fails the blocking check
    encoder_epochs: int = 6
    dihedral: bool = True  # train the GAN on the 8 rotations/reflections of each patch
    ct_window: tuple[float, float] = CT_SOFT_TISSUE  # CT patches on the soft-tissue window
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "gan"}
        return {**d, "gan": self.gan.to_dict()}


def augment_preset(name: str, seed: int = 0) -> AugmentConfig:
    """``small``: this CPU, seconds to a minute (demo, tests); ``full``: a GPU."""
    if name == "small":
        # two-time-scale rates (D 4e-4, G 1e-4): with equal or G-favoured rates the generator
        # collapsed onto one noisy patch on the demo's hundred CT patches (diversity 0.93-0.98).
        # A fixed budget of SMALL_STEPS iterations rather than 25 epochs: the demo's 109 patches
        # (872 views) made 675 iterations, 31 s, and a larger cohort more still. One thread:
        # two on a busy 2-core machine (make test's two workers) ran 15x slower per iteration.
        gan = GanConfig.small(
            channels=2, seed=seed, lr_g=1e-4, lr_d=4e-4, epochs=25, max_steps=SMALL_STEPS
        )
        return AugmentConfig(gan=gan, seed=seed)
    if name == "full":
        return AugmentConfig(
            patch=64,
            lesion_slices_per_sample=32,
            normal_per_sample=32,
            gan=GanConfig.full(channels=2, seed=seed),
            max_synthetic=2000,
            encoder_epochs=20,
            seed=seed,
        )
    raise AugmentError(f"unknown augmentation preset {name!r}: small or full")


def _splits(zones: Zones) -> pd.DataFrame:
    if not zones.splits_table.exists():
        raise AugmentError("splits.parquet is missing: materialize dataset_splits first")
    return pd.read_parquet(zones.splits_table)


def _patch_key(splits: pd.DataFrame, cfg: AugmentConfig) -> str:
    """What decides the patches: the train rows and the patch settings (not the GAN's)."""
    d = cfg.to_dict()
    fields = ("modality", "patch", "lesion_slices_per_sample", "normal_per_sample", "ct_window")
    key = json.dumps([train_fingerprint(splits), {k: d[k] for k in fields}, cfg.seed], default=list)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _patches(zones: Zones, splits: pd.DataFrame, cfg: AugmentConfig) -> PatchSet:
    """The train patches, read from ``gan/patches-<key>.npz`` when gan_model already cut them
    from the same rows with the same settings (synthetic_samples then reads no volume)."""
    path = zones.gan_models / f"patches-{_patch_key(splits, cfg)}.npz"
    if path.is_file():
        try:
            return _checked(_load_patches(path), cfg)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: cut the patches again
    ps = _extract(zones, splits, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("patches-*.npz"):  # one train split's patches at a time
        old.unlink()
    _save_patches(ps, path)
    return _checked(ps, cfg)


def _save_patches(ps: PatchSet, path: Path) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        images=ps.images,
        labels=ps.labels,
        patients=ps.patients.astype(str),
        sample_ids=ps.sample_ids.astype(str),
        positions=ps.positions,
        skipped=np.asarray(ps.skipped, dtype=str),
    )
    atomic_write_bytes(path, buf.getvalue())


def _load_patches(path: Path) -> PatchSet:
    with np.load(path, allow_pickle=False) as d:
        return PatchSet(
            images=d["images"],
            labels=d["labels"],
            patients=d["patients"].astype(object),
            sample_ids=d["sample_ids"].astype(object),
            positions=d["positions"],
            skipped=tuple(str(x) for x in d["skipped"]),
        )


def _extract(zones: Zones, splits: pd.DataFrame, cfg: AugmentConfig) -> PatchSet:
    rows = training_rows(splits, modality=cfg.modality)
    ps = extract_patches(
        rows,
        zones.volumes,
        zones.labels,
        size=cfg.patch,
        lesion_slices_per_sample=cfg.lesion_slices_per_sample,
        normal_per_sample=cfg.normal_per_sample,
        seed=cfg.seed,
        ct_window=cfg.ct_window,
    )
    return ps


def _checked(ps: PatchSet, cfg: AugmentConfig) -> PatchSet:
    n_lesion = int((ps.labels == 1).sum())
    if n_lesion == 0 or n_lesion == len(ps):
        raise AugmentError(
            f"the train split has {n_lesion} lesion patch(es) of {len(ps)} in {cfg.modality}: a "
            "conditional GAN needs both lesion and normal patches"
        )
    return ps


# --------------------------------------------------------------------------- gan_model


@dataclass
class GanModelResult:
    checkpoint_id: str
    path: Path
    n_patches: int
    n_lesion: int
    patients: int
    history: list[dict[str, float]] = field(repr=False)
    seconds: float = 0.0
    skipped: str = ""  # why nothing was trained
    problems: list[str] = field(default_factory=list)
    parent: str = ""  # the checkpoint a warm start began from
    reused: bool = False  # the last checkpoint was trained on this very split and config

    def metadata(self) -> dict[str, Any]:
        if self.skipped:
            return {"checkpoint_id": "none", "skipped": self.skipped}
        last = self.history[-1]
        return {
            "checkpoint_id": self.checkpoint_id,
            "patches": self.n_patches,
            "lesion_patches": self.n_lesion,
            "patients": self.patients,
            "epochs": len(self.history),
            "seconds_per_iteration": round(
                float(np.mean([h.get("seconds_per_iteration", 0.0) for h in self.history])), 4
            ),
            "warm_start_from": self.parent or "none",
            "reused": self.reused,
            "d_loss": round(float(last["d_loss"]), 4),
            "g_loss": round(float(last["g_loss"]), 4),
            "seconds": round(self.seconds, 1),
            "checkpoint": PathValue.of(self.path),
        }

    def summary_line(self) -> str:
        if self.skipped:
            return f"gan_model: nothing trained ({self.skipped})"
        how = (
            "the generator of this train split and config, reused"
            if self.reused
            else f"{len(self.history)} epochs"
            + (f" (warm start from {self.parent})" if self.parent else "")
        )
        return (
            f"gan_model {self.checkpoint_id}: {how} on {self.n_patches} train "
            f"patches ({self.n_lesion} with a lesion) of {self.patients} patients"
        )


def run_gan_model(zones: Zones, cfg: AugmentConfig) -> GanModelResult:
    """Train on the train split's patches; when it has no lesion (or no normal) patch of the
    modality, say so and train nothing: the release then goes without synthetic samples."""
    t0 = time.perf_counter()
    splits = _splits(zones)
    zones.gan_models.mkdir(parents=True, exist_ok=True)
    fingerprint = train_fingerprint(splits)
    try:
        ps = _patches(zones, splits, cfg)
    except AugmentError as exc:
        latest = {"skipped": str(exc), "train_fingerprint": fingerprint}
        atomic_write_bytes(zones.gan_models / "latest.json", _json(latest))
        return GanModelResult("none", zones.gan_models, 0, 0, 0, [], 0.0, skipped=str(exc))
    gcfg = replace(cfg.gan, size=cfg.patch, channels=2, seed=cfg.seed)
    seen = dihedral(ps) if cfg.dihedral else ps
    samples = sorted({*map(str, ps.sample_ids.tolist()), *ps.skipped})
    found = _previous(zones, cfg, fingerprint, samples)
    if isinstance(found, GanModelResult):
        found.patients = len(set(ps.patients.tolist()))
        found.seconds = time.perf_counter() - t0
        return found
    parent = None
    if found is not None:
        parent, share = found
        full = gcfg.total_steps(len(seen))
        gcfg = replace(gcfg, max_steps=max(1, math.ceil(full * max(share, MIN_WARM_SHARE))))
    trained = train_gan(seen.images, seen.labels, gcfg, init=parent)
    ckpt = trained.checkpoint_id()
    path = zones.gan_models / f"{ckpt}.pt"
    extra: dict[str, Any] = {
        "train_fingerprint": fingerprint,
        "augment_config": cfg.to_dict(),
        "patches": len(ps),
        "lesion_patches": int((ps.labels == 1).sum()),
        "final_losses": {k: float(trained.history[-1][k]) for k in ("d_loss", "g_loss")},
        "train_samples": samples,
        "parent": trained.parent,
        "steps": gcfg.total_steps(len(seen)),
    }
    save_checkpoint(trained, path, extra)
    latest = {"checkpoint_id": ckpt, "file": path.name, **extra}
    atomic_write_bytes(zones.gan_models / "latest.json", _json(latest))
    return GanModelResult(
        ckpt,
        path,
        len(ps),
        int((ps.labels == 1).sum()),
        len(set(ps.patients.tolist())),
        trained.history,
        time.perf_counter() - t0,
        parent=trained.parent,
    )


def _previous(
    zones: Zones, cfg: AugmentConfig, fingerprint: str, samples: list[str]
) -> GanModelResult | tuple[TrainedGan, float] | None:
    """What the last generator offers this run, if its augmentation config is this one:

    - trained on this very train split: the run is done (the same result, nothing trained);
    - trained on a subset of this split's samples (a new batch arrived; patients never leave
      train, see :mod:`medcurate.splits`): a warm start, with the share of new samples;
    - otherwise (another config, or a sample it saw is no longer a train row): None, so the
      generator trains from scratch and has never seen a held-out patient.
    """
    latest_path = zones.gan_models / "latest.json"
    if not latest_path.is_file():
        return None
    try:
        latest = json.loads(latest_path.read_text())
        path = zones.gan_models / str(latest["file"])
        same_cfg = latest["augment_config"] == json.loads(_json(cfg.to_dict()))
        seen = set(latest["train_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same_cfg or not path.is_file() or not seen <= set(samples):
        return None
    try:
        trained, _ = load_checkpoint(path)
    except (OSError, ValueError, RuntimeError, KeyError):
        return None
    if latest["train_fingerprint"] == fingerprint:
        return GanModelResult(
            str(latest["checkpoint_id"]),
            path,
            int(latest["patches"]),
            int(latest["lesion_patches"]),
            0,
            trained.history,
            parent=trained.parent,
            reused=True,
        )
    return trained, 1.0 - len(seen) / len(samples)


def _json(obj: Any) -> bytes:
    return (json.dumps(_clean(obj), sort_keys=True, indent=2) + "\n").encode()


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --------------------------------------------------------------------------- synthetic_samples


@dataclass
class SyntheticResult:
    checkpoint_id: str
    wanted: int
    generated: int
    dropped: int
    written: int
    skipped_empty: int
    quality: pd.DataFrame = field(repr=False)
    privacy: dict[str, Any] = field(repr=False)
    grid: Path | None = None
    nearest: Path | None = None
    problems: list[str] = field(default_factory=list)
    note: str = ""  # why nothing was generated

    @property
    def warnings(self) -> list[str]:
        """What the quality figures say against their real-vs-real yardstick."""
        q = {
            r["metric"]: (_float(r["synthetic"]), _float(r["reference"]))
            for r in self.quality.to_dict("records")
        }
        out = []
        if "diversity" in q and q["diversity"][0] > q["diversity"][1] + 0.2:
            out.append(
                f"mode collapse suspected: synthetic samples resemble each other (diversity "
                f"{q['diversity'][0]:.2f}) far more than real ones do ({q['diversity'][1]:.2f})"
            )
        if "coverage" in q and q["coverage"][1] > 0.5 and q["coverage"][0] < 0.5 * q["coverage"][1]:
            out.append(
                f"synthetic samples cover little of the real distribution (coverage "
                f"{q['coverage'][0]:.2f} vs {q['coverage'][1]:.2f} real vs real)"
            )
        return out

    @property
    def dropped_share(self) -> float:
        return self.dropped / self.generated if self.generated else 0.0

    def metadata(self) -> dict[str, Any]:
        if self.note:
            return {"checkpoint_id": "none", "written": 0, "skipped": self.note}
        md: dict[str, Any] = {
            "checkpoint_id": self.checkpoint_id,
            "wanted": self.wanted,
            "generated": self.generated,
            "dropped_too_close": self.dropped,
            "dropped_share": round(self.dropped_share, 4),
            "written": self.written,
            "quality": Markdown(_quality_markdown(self.quality)),
            "quality_warnings": "; ".join(self.warnings) or "none",
        }
        for rec in self.quality.to_dict("records"):
            value = _float(rec["synthetic"])
            if not math.isnan(value):
                md[f"quality_{rec['metric']}"] = round(value, 4)
        if self.grid is not None and self.nearest is not None:
            md["samples"] = Markdown(
                f"![real vs synthetic]({figures_uri(self.grid)})\n\n"
                f"![nearest training record]({figures_uri(self.nearest)})"
            )
        return md

    def summary_line(self) -> str:
        if self.note:
            return f"synthetic_samples: none ({self.note})"
        tail = f"; {'; '.join(self.problems)}" if self.problems else ""
        return (
            f"synthetic_samples from {self.checkpoint_id}: {self.written} written of "
            f"{self.generated} generated ({self.dropped} dropped as too close to a training "
            f"record, {self.skipped_empty} without a lesion){tail}"
        )


def figures_uri(path: Path) -> str:
    from medcurate.evaluate.plots import png_data_uri

    return png_data_uri(path)


def _quality_markdown(q: pd.DataFrame) -> str:
    lines = ["| metric | synthetic | real vs real |", "|---|---|---|"]
    for rec in q.to_dict("records"):
        syn, ref = _float(rec["synthetic"]), _float(rec["reference"])
        cells = ["n/a" if math.isnan(v) else f"{v:.3f}" for v in (syn, ref)]
        lines.append(f"| {rec['metric']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def wanted_count(splits: pd.DataFrame, cfg: AugmentConfig) -> int:
    """Enough abnormal samples to balance the train split's classes, within the configured
    floor and cap."""
    train = splits.loc[(splits["split"] == TRAIN) & ~splits["synthetic"].fillna(False).astype(bool)]
    gap = int((train["label"] == "normal").sum() - (train["label"] == "abnormal").sum())
    return int(min(cfg.max_synthetic, max(cfg.min_synthetic, gap)))


def run_synthetic_samples(zones: Zones, cfg: AugmentConfig) -> SyntheticResult:
    splits = _splits(zones)
    latest_path = zones.gan_models / "latest.json"
    if not latest_path.exists():
        raise AugmentError("no generator yet: materialize gan_model first")
    latest = json.loads(latest_path.read_text())
    if latest["train_fingerprint"] != train_fingerprint(splits):
        raise AugmentError(
            "gan_model was trained on another train split than splits.parquet holds now: "
            "materialize gan_model again"
        )
    if "skipped" in latest:
        atomic_write_parquet(
            pd.DataFrame(columns=[*SAMPLE_COLUMNS, "split", "fold"]), zones.synthetic_table
        )
        empty = pd.DataFrame(columns=["metric", "synthetic", "reference"])
        return SyntheticResult("none", 0, 0, 0, 0, 0, empty, {}, note=latest["skipped"])
    trained, _ = load_checkpoint(zones.gan_models / latest["file"])
    ckpt = str(latest["checkpoint_id"])
    ps = _patches(zones, splits, cfg)
    wanted = wanted_count(splits, cfg)
    n_gen = math.ceil(wanted * cfg.oversample)
    synth = generate(trained, n_gen, label=1, seed=cfg.seed)

    real_img = ps.images[:, :1]
    views = dihedral(ps) if cfg.dihedral else ps
    encoder = train_encoder(
        views.images[:, :1], views.labels, seed=cfg.seed, epochs=cfg.encoder_epochs
    )
    lesion = ps.labels == 1
    quality = quality_report(
        real_img[lesion],
        synth[:, :1],
        ps.labels[lesion],
        np.ones(len(synth), dtype=np.int64),
        encoder=encoder,
        seed=cfg.seed,
        real_groups=ps.patients[lesion],
    ).table()

    train_feat = encoder.features(real_img)
    synth_feat = encoder.features(synth[:, :1])
    nearest = nearest_records(
        synth[:, :1], real_img, ps.patients, synth_features=synth_feat, train_features=train_feat
    )
    reference = real_reference(real_img, ps.patients, features=train_feat)
    kept = privacy_filter(nearest, reference, quantile=cfg.privacy_quantile)

    out = zones.synthetic
    for sub in ("samples", "masks"):  # the previous generation's files go; the table is rewritten
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    survivors = synth[kept.keep][:wanted]
    normal_rows = training_rows(splits, modality=cfg.modality)
    normal_rows = normal_rows.loc[normal_rows["label"] == "normal"]
    backgrounds = background_slices(normal_rows, zones.volumes, ct_window=cfg.ct_window)
    written = write_synthetic(survivors, backgrounds, out, ckpt, cfg.seed)
    rows = written.rows.assign(split=TRAIN, fold=-1, train_fingerprint=train_fingerprint(splits))
    atomic_write_parquet(rows, zones.synthetic_table)

    report = zones.synthetic_report
    report.mkdir(parents=True, exist_ok=True)
    privacy = {
        "quantile": cfg.privacy_quantile,
        "thresholds": kept.thresholds,
        "generated": n_gen,
        "dropped": len(kept.dropped),
        "dropped_share": kept.dropped_share,
        "reasons": kept.reasons,
    }
    atomic_write_bytes(report / "privacy.json", _json(privacy))
    atomic_write_bytes(report / "quality.json", _json(quality.to_dict("records")))
    grid = figures.sample_grid(ps.images[lesion], synth, report / "grid.png", title=f"{ckpt}")
    show = np.arange(min(8, len(synth)))
    near = nearest.iloc[show]
    captions = [
        f"NCC {r.ncc_max:.2f}, {r.ncc_patient}" + (" (dropped)" if not kept.keep[i] else "")
        for i, r in zip(show, near.itertuples(index=False), strict=True)
    ]
    nearest_png = figures.nearest_grid(
        synth[show], ps.images[near["ncc_train_index"].to_numpy()], captions, report / "nearest.png"
    )
    problems = check_synthetic_rows(rows)
    if kept.dropped_share > cfg.max_dropped_share:
        problems.append(
            f"{kept.dropped_share:.0%} of generated samples were too close to a training record "
            f"(limit {cfg.max_dropped_share:.0%}): the generator memorizes; train it on more data "
            "or for fewer epochs"
        )
    return SyntheticResult(
        ckpt,
        wanted,
        n_gen,
        len(kept.dropped),
        len(rows),
        written.skipped_empty,
        quality,
        privacy,
        grid,
        nearest_png,
        problems,
    )


def check_synthetic_rows(rows: pd.DataFrame) -> list[str]:
    """Synthetic samples may only ever be in train (never validation, test or external)."""
    syn = rows.loc[rows["synthetic"].fillna(False).astype(bool)]
    outside = syn.loc[syn["split"].astype(str) != TRAIN]
    if outside.empty:
        return []
    where = ", ".join(sorted(set(outside["split"].astype(str))))
    return [f"{len(outside)} synthetic sample(s) outside train (in {where})"]


def check_synthetic(zones: Zones, max_dropped_share: float = 0.5) -> list[str]:
    """The blocking gate of synthetic_samples: train only, memorization within the limit."""
    if not zones.synthetic_table.exists():
        return [f"{zones.synthetic_table.name} is missing: materialize synthetic_samples first"]
    problems = check_synthetic_rows(pd.read_parquet(zones.synthetic_table))
    privacy_path = zones.synthetic_report / "privacy.json"
    if privacy_path.exists():
        share = float(json.loads(privacy_path.read_text())["dropped_share"])
        if share > max_dropped_share:
            problems.append(
                f"{share:.0%} of generated samples were too close to a training record "
                f"(limit {max_dropped_share:.0%})"
            )
    return problems
