"""Assets: curated samples -> patient-level splits -> an immutable dataset release.

Thin: each reads its inputs, calls medcurate.splits / medcurate.store, writes its outputs and
returns PHI-free metadata (counts, balance tables, version id and digest).
"""

import base64

import dagster as dg
import pandas as pd

from assets.resources import MedcurateHome
from medcurate.config import Zones
from medcurate.hashing import sha256_file
from medcurate.splits import (
    SplitConfig,
    assign_splits,
    balance_markdown,
    balance_plot,
    balance_report,
    leaking_patients,
    markdown_table,
    max_deviation,
    split_counts,
)
from medcurate.store.card import code_version
from medcurate.store.manifest import curate_samples
from medcurate.store.objects import ObjectStore, StoreError
from medcurate.store.publish import list_versions, load_manifest
from medcurate.store.release import release_dataset

DEFAULT_DATASET = "medcurate-demo"


def _store(z: Zones, url: str) -> ObjectStore:
    return ObjectStore(url or z.releases)


class SplitsConfig(dg.Config):
    """Split settings; the previous release of ``dataset`` fixes already-assigned patients."""

    dataset: str = DEFAULT_DATASET
    store: str = ""  # fsspec URL of the release store; default MEDCURATE_HOME/releases
    train: float = 0.70
    validation: float = 0.15
    test: float = 0.15
    folds: int = 5
    seed: int = 0
    holdout_sites: list[str] = []  # noqa: RUF012 (dagster Config fields are pydantic)


class ReleaseConfig(dg.Config):
    dataset: str = DEFAULT_DATASET
    store: str = ""
    description: str = ""


@dg.asset(
    deps=[dg.AssetKey("series_volumes"), dg.AssetKey("consensus_labels")],
    group_name="release",
)
def curated_samples(context: dg.AssetExecutionContext, home: MedcurateHome) -> dg.MaterializeResult:
    """volumes.parquet joined with labels.parquet (samples without a label are 'unlabelled')."""
    z = home.zones()
    vol_path = z.volumes / "volumes.parquet"
    if not vol_path.exists():
        raise dg.Failure(f"{vol_path} is missing: materialize series_volumes first")
    volumes = pd.read_parquet(vol_path)
    lab_path = z.labels / "labels.parquet"
    labels = pd.read_parquet(lab_path) if lab_path.exists() else None
    samples = curate_samples(volumes, labels)
    out = z.curated / "samples.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    samples.to_parquet(out, index=False)
    counts = samples["label"].value_counts().sort_index()
    return dg.MaterializeResult(
        metadata={
            "samples": len(samples),
            "patients": int(samples["patient"].nunique()),
            "labels": dg.MetadataValue.md(markdown_table(counts.rename("samples").reset_index())),
            "labels_available": lab_path.exists(),
            "path": dg.MetadataValue.path(str(out)),
        }
    )


@dg.asset(deps=[curated_samples], group_name="release")
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitsConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Patient-level stratified splits; patients of the previous release keep their split."""
    z = home.zones()
    samples = pd.read_parquet(z.curated / "samples.parquet")
    try:  # unknown protocol, unsigned or forged previous version: one line, no traceback
        store = _store(z, config.store)
        versions = list_versions(store, config.dataset)
        previous = load_manifest(store, versions[-1]) if versions else None
    except StoreError as exc:
        raise dg.Failure(f"reading the previous release failed: {exc}") from None
    cfg = SplitConfig(
        ratios=(config.train, config.validation, config.test),
        folds=config.folds,
        seed=config.seed,
        holdout_sites=tuple(config.holdout_sites),
    )
    assigned = assign_splits(samples, cfg, previous)
    if leaking_patients(assigned):
        raise dg.Failure("split assignment put a patient in two splits")
    out = z.curated / "splits.parquet"
    assigned.to_parquet(out, index=False)
    report = balance_report(assigned, cfg.strata)
    metadata: dict[str, object] = {
        "counts": dg.MetadataValue.md(markdown_table(split_counts(assigned))),
        "balance": dg.MetadataValue.md(balance_markdown(report)),
        "max_deviation": max_deviation(report),
        "previous_version": versions[-1].id if versions else "none",
        "path": dg.MetadataValue.path(str(out)),
    }
    plot = balance_plot(report, z.curated / "balance.png")
    png = base64.b64encode(plot.read_bytes()).decode()
    metadata["balance_plot"] = dg.MetadataValue.md(f"![balance](data:image/png;base64,{png})")
    return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]


@dg.asset(deps=[dataset_splits], group_name="release")
def dataset_release(
    context: dg.AssetExecutionContext, config: ReleaseConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Publish ``releases/<dataset>/<vN>/`` atomically (a no-op when nothing changed)."""
    z = home.zones()
    assigned = pd.read_parquet(z.curated / "splits.parquet")
    upstream = {}
    for name, p in (
        ("volumes.parquet", z.volumes / "volumes.parquet"),
        ("labels.parquet", z.labels / "labels.parquet"),
        ("splits.parquet", z.curated / "splits.parquet"),
    ):
        if p.exists():
            upstream[name] = "sha256:" + sha256_file(p)
    lineage = {
        "code_version": code_version(),
        "dagster_run_id": context.run_id,
        "upstream": upstream,
    }
    try:
        res = release_dataset(
            _store(z, config.store),
            config.dataset,
            assigned,
            volumes_root=z.volumes,
            labels_root=z.labels,
            synthetic_root=z.synthetic,
            config={"dataset": config.dataset, "description": config.description},
            lineage=lineage,
            description=config.description,
        )
    except StoreError as exc:
        raise dg.Failure(f"publish failed: {exc}") from exc
    info = res.info
    splits = assigned["split"].value_counts().sort_index()
    return dg.MaterializeResult(
        metadata={
            "version": info.version,
            "version_id": info.id,
            "manifest_digest": info.digest,
            "created": res.created,
            "samples": info.n_samples,
            "splits": dg.MetadataValue.md(markdown_table(splits.rename("samples").reset_index())),
            "objects_written": res.objects_written,
            "bytes_written": res.bytes_written,
            "pull": f"medcurate datasets pull {info.ref} DEST",
        }
    )
