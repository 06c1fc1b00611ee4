"""The release stages as plain functions: curate samples, split them, release a version.

Each reads its inputs from the zones, writes its outputs there (or to the store) and returns a
StageResult of PHI-free counts and tables; ``assets/release.py`` wraps each in a few lines. The
split check (:func:`check_splits`) is the gate a release passes: a patient in two splits stops it.

    volumes.parquet + labels.parquet --run_curate--> curated/samples.parquet
      --run_splits (previous release fixes assigned patients)--> curated/splits.parquet
      --check_splits--> --run_release--> releases/<dataset>/<vN>/
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.config import Zones
from medcurate.io import atomic_write_bytes, atomic_write_parquet
from medcurate.services.figures import figure_url, image_markdown
from medcurate.splits import (
    DEFAULT_STRATA,
    TRAIN,
    SplitConfig,
    assign_splits,
    balance_markdown,
    balance_plot,
    balance_report,
    leak_problems,
    markdown_table,
    max_deviation,
    png_markdown,
    split_counts,
    train_fingerprint,
)
from medcurate.stage import Markdown, PathValue
from medcurate.store.card import lineage
from medcurate.store.manifest import ManifestError, curate_samples
from medcurate.store.objects import STORE_ENV, ObjectStore
from medcurate.store.publish import PublishResult, latest_version, load_manifest
from medcurate.store.release import release_dataset
from medcurate.store.reports import full_card

DEFAULT_DATASET = "medcurate-demo"


class MissingTableError(ManifestError):
    """A table a stage reads is not there yet: its upstream stage has not run."""


@dataclass(frozen=True)
class ReleaseSettings:
    """What to publish as: the dataset name and the card's motivation text."""

    dataset: str = DEFAULT_DATASET
    description: str = ""


def release_store(zones: Zones, url: str = "") -> ObjectStore:
    """The store a release goes to: ``url`` (any fsspec URL), else $MEDCURATE_STORE, else the
    home's ``releases/`` zone: the same order readers use (:func:`open_store`), so what the
    release writes is what the evaluation and ``medcurate datasets`` read.
    StoreUnavailableError when the URL's protocol is unknown."""
    return ObjectStore(url or os.environ.get(STORE_ENV) or zones.releases)


def _require(path: Path, upstream: str) -> Path:
    if not path.exists():
        raise MissingTableError(f"{path} is missing: materialize {upstream} first")
    return path


def _counts_markdown(values: pd.Series) -> Markdown:
    """``value | samples`` rows of a column's value counts, sorted by value."""
    return Markdown(
        markdown_table(values.value_counts().sort_index().rename("samples").reset_index())
    )


# --------------------------------------------------------------------------- curate


@dataclass
class CurateResult:
    """``curated/samples.parquet``: one row per volume, with its label or ``unlabelled``."""

    samples: pd.DataFrame = field(repr=False)
    labels_available: bool
    path: Path
    problems: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "samples": len(self.samples),
            "patients": int(self.samples["patient"].nunique()),
            "labels": _counts_markdown(self.samples["label"]),
            "labels_available": self.labels_available,
            "path": PathValue.of(self.path),
        }

    def summary_line(self) -> str:
        labels = self.samples["label"].value_counts().sort_index()
        per_label = ", ".join(f"{k} {v}" for k, v in labels.items()) or "none"
        source = "" if self.labels_available else " (no labels.parquet yet)"
        return (
            f"curate: {len(self.samples)} samples of {self.samples['patient'].nunique()} "
            f"patients; labels {per_label}{source}"
        )


def run_curate(zones: Zones) -> CurateResult:
    """volumes.parquet joined with labels.parquet (when there is one) into samples.parquet."""
    volumes = pd.read_parquet(_require(zones.volumes_table, "series_volumes"))
    has_labels = zones.labels_table.exists()
    labels = pd.read_parquet(zones.labels_table) if has_labels else None
    samples = curate_samples(volumes, labels)
    atomic_write_parquet(samples, zones.samples_table)
    return CurateResult(samples, has_labels, zones.samples_table)


# --------------------------------------------------------------------------- splits


@dataclass
class SplitsResult:
    """``curated/splits.parquet`` and its balance report; ``problems`` is the leak test."""

    assigned: pd.DataFrame = field(repr=False)
    report: pd.DataFrame = field(repr=False)
    previous_version: str
    path: Path
    plot: Path
    problems: list[str] = field(default_factory=list)
    plot_markdown: str = ""  # ``![balance](URL)`` of the figures server, when it can serve it

    def metadata(self) -> dict[str, Any]:
        return {
            "counts": Markdown(markdown_table(split_counts(self.assigned))),
            "balance": Markdown(balance_markdown(self.report)),
            "max_deviation": max_deviation(self.report),
            "previous_version": self.previous_version,
            "path": PathValue.of(self.path),
            # short, so Dagster shows the picture inline (served by `make ui`)
            "balance_plot": Markdown(self.plot_markdown),
            # the same picture inside the metadata: behind "[Show Markdown]", needs no server
            "balance_plot_embedded": Markdown(png_markdown(self.plot, "balance")),
        }

    def summary_line(self) -> str:
        per_split = self.assigned["split"].value_counts().sort_index()
        counts = ", ".join(f"{k} {v}" for k, v in per_split.items()) or "no samples"
        tail = f"; {'; '.join(self.problems)}" if self.problems else ""
        return (
            f"splits: {counts} (previous release {self.previous_version}, largest stratum "
            f"deviation {max_deviation(self.report):.3f}){tail}"
        )


def run_splits(
    zones: Zones, config: SplitConfig, store: ObjectStore, dataset: str = DEFAULT_DATASET
) -> SplitsResult:
    """Patient-level stratified splits of samples.parquet; patients of the newest release of
    ``dataset`` keep their split and fold. StoreError when that release cannot be read
    (unsigned under a store key, forged, or the store cannot be opened)."""
    samples = pd.read_parquet(_require(zones.samples_table, "curated_samples"))
    info = latest_version(store, dataset)
    previous = load_manifest(store, info) if info is not None else None
    assigned = assign_splits(samples, config, previous)
    atomic_write_parquet(assigned, zones.splits_table)
    report = balance_report(assigned, config.strata)
    plot = balance_plot(report, zones.balance_plot)
    return SplitsResult(
        assigned,
        report,
        previous_version=info.id if info is not None else "none",
        path=zones.splits_table,
        plot=plot,
        problems=leak_problems(assigned),
        plot_markdown=image_markdown(zones, figure_copy(zones, plot), "balance"),
    )


def figure_copy(zones: Zones, png: Path) -> Path:
    """``curated/figures/<stem>-<sha256[:12]>.png``: a name per content, so each
    materialization's link keeps showing the picture it was made with (``balance.png`` itself is
    rewritten by the next run). The same picture gives the same name and bytes."""
    data = png.read_bytes()
    out = zones.curated / "figures" / f"{png.stem}-{hashlib.sha256(data).hexdigest()[:12]}.png"
    if not out.exists():
        atomic_write_bytes(out, data)
    return out


def check_splits(zones: Zones) -> list[str]:
    """The patient-leak test of splits.parquet: empty when every patient sits in one split
    (counts only: the check's metadata never lists pseudonyms)."""
    if not zones.splits_table.exists():
        return [f"{zones.splits_table.name} is missing: materialize dataset_splits first"]
    return leak_problems(pd.read_parquet(zones.splits_table))


# --------------------------------------------------------------------------- release


#: Dagster 1.13 shows a markdown metadata entry inline only below this many characters
INLINE_MARKDOWN_LIMIT = 1000


@dataclass
class ReleaseResult:
    """A published version (or the newest one, unchanged, when nothing changed)."""

    published: PublishResult
    splits: pd.Series = field(repr=False)  # the split column of the released samples
    problems: list[str] = field(default_factory=list)
    synthetic_note: str = ""
    labels: pd.Series = field(default_factory=pd.Series, repr=False)  # the released labels
    card: str = field(default="", repr=False)  # the full dataset card (card.md + reports)
    card_url: str = ""  # card.md through the figures server ('' for a remote store)
    plot_markdown: str = ""  # ``![balance](URL)`` of the released samples

    def metadata(self) -> dict[str, Any]:
        info = self.published.info
        return {
            "card_summary": Markdown(self.card_summary()),
            "version": info.version,
            "version_id": info.id,
            "manifest_digest": info.digest,
            "created": self.published.created,
            "samples": info.n_samples,
            "splits": _counts_markdown(self.splits),
            "balance_plot": Markdown(self.plot_markdown),
            "objects_written": self.published.objects_written,
            "bytes_written": self.published.bytes_written,
            "pull": f"medcurate datasets pull {info.ref} DEST",
            "synthetic": self.synthetic_note,
            "card": Markdown(self.card),
        }

    def card_summary(self) -> str:
        """What the release page shows first, inline (under Dagster's 1000-character limit):
        version, samples per split, labels, how to pull it and where the full card is."""
        info = self.published.info
        state = "published" if self.published.created else "unchanged (no new version)"
        per_split = _value_counts(self.splits)
        lines = [
            f"**{info.ref}** `{info.id}` {state}",
            "",
            f"- samples: {info.n_samples} ({per_split or 'none'})",
            f"- labels: {_value_counts(self.labels) or 'n/a'}",
            f"- synthetic: {self.synthetic_note or 'none'}",
            f"- pull: `medcurate datasets pull {info.ref} DEST`",
        ]
        if self.card_url:
            lines.append(f"- [dataset card]({self.card_url}) (also below, as `card`)")
        text = "\n".join(lines)
        if len(text) >= INLINE_MARKDOWN_LIMIT:  # many label values: keep the head inline
            text = text[: INLINE_MARKDOWN_LIMIT - 40].rsplit("\n", 1)[0] + "\n- (see `card`)"
        return text

    def summary_line(self) -> str:
        p = self.published
        what = "published" if p.created else "unchanged (no new version)"
        return (
            f"release {p.info.ref}: {p.info.id} {what}; {p.info.n_samples} samples, "
            f"{p.objects_written} objects ({p.bytes_written} B) written"
        )


def _value_counts(values: pd.Series) -> str:
    """``train 22 · validation 5 · test 5`` (splits in their usual order, else sorted)."""
    if values.empty:
        return ""
    counts = values.astype(str).value_counts()
    order = [v for v in ("train", "validation", "test", "external") if v in counts.index]
    order += sorted(set(counts.index) - set(order))
    return " · ".join(f"{v} {counts[v]}" for v in order)


def run_release(
    zones: Zones, config: ReleaseSettings, store: ObjectStore, run_id: str
) -> ReleaseResult:
    """Publish splits.parquet as ``<dataset>/<vN>/`` atomically (a no-op when the manifest
    digest equals the newest version's). ``run_id`` goes into the card's lineage only."""
    real = pd.read_parquet(_require(zones.splits_table, "dataset_splits"))
    synthetic, note = fresh_synthetic(zones, real)
    assigned = pd.concat([real, synthetic], ignore_index=True) if len(synthetic) else real
    published = release_dataset(
        store,
        config.dataset,
        assigned,
        volumes_root=zones.volumes,
        labels_root=zones.labels,
        synthetic_root=zones.synthetic,
        config={"dataset": config.dataset, "description": config.description},
        lineage=lineage(zones, run_id),
        description=config.description,
    )
    info = published.info
    card_url = ""
    if store.is_local and Path(store.root).resolve() == zones.releases.resolve():
        card_url = figure_url(zones, zones.releases / info.dataset / info.version / "card.md") or ""
    strata = [c for c in DEFAULT_STRATA if c in real.columns or c == "age_band"]
    plot = balance_plot(balance_report(real, strata), zones.curated / "release-balance.png")
    return ReleaseResult(
        published,
        assigned["split"],
        synthetic_note=note,
        labels=assigned["label"] if "label" in assigned else pd.Series(dtype=str),
        card=full_card(store, info),
        card_url=card_url,
        plot_markdown=image_markdown(zones, figure_copy(zones, plot), "balance"),
    )


def fresh_synthetic(zones: Zones, real: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The synthetic samples a release adds (train only), and a note saying which and why.

    Samples made by a generator trained on another train split are left out (stale); a
    synthetic row outside train stops the release before anything is written."""
    if not zones.synthetic_table.exists():
        return pd.DataFrame(), "none (synthetic_samples not materialized)"
    syn = pd.read_parquet(zones.synthetic_table)
    if syn.empty:
        return syn, "none generated"
    outside = syn.loc[syn["split"].astype(str) != TRAIN]
    if len(outside):
        raise ManifestError(
            f"{len(outside)} synthetic sample(s) are assigned outside train "
            f"({', '.join(sorted(set(outside['split'].astype(str))))}); synthetic samples may "
            "only ever be trained on"
        )
    current = train_fingerprint(real)
    if "train_fingerprint" not in syn.columns or (syn["train_fingerprint"] != current).any():
        return pd.DataFrame(), (
            "none: the synthetic samples were made from another train split (materialize "
            "gan_model and synthetic_samples again)"
        )
    return syn.drop(columns=["train_fingerprint"]), f"{len(syn)} synthetic sample(s) in train"
