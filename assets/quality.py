"""Quality gates as blocking asset checks: one per table, each running the table's suite
(:mod:`quality.suites`) through :func:`quality.runner.check_table`.

An ERROR failure fails the check with severity ERROR: being blocking, it stops every downstream
asset (nothing built on a bad table; no release of an unfit dataset). Only WARN failures fail it
with severity WARN, which is reported and blocks nothing. Each check's metadata has a markdown
table of every expectation with its observed value and a link to the run's Data Docs page.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from assets.partitions import batch_partitions, round_partitions
from assets.resources import MedcurateHome
from assets.stage import to_metadata
from medcurate.config import Zones
from quality.runner import SuiteResult, check_table

#: (table, asset it guards, partitions of that asset)
GATES: tuple[tuple[str, str, dg.PartitionsDefinition | None], ...] = (
    ("catalog", "raw_instances", batch_partitions),
    ("deid", "deid_instances", batch_partitions),
    ("volumes", "series_volumes", batch_partitions),
    ("annotations", "annotations", round_partitions),
    ("labels", "consensus_labels", None),
    ("splits", "dataset_splits", None),
    ("release", "dataset_release", None),
)

Runner = Callable[[Zones, str, str, "QualityCheckConfig"], SuiteResult]


class QualityCheckConfig(dg.Config):
    """Where the release check finds the release (set them as dataset_release's config is)."""

    dataset: str = ""  # default medcurate-demo
    store: str = ""  # fsspec URL of the release store; default MEDCURATE_STORE or releases/


def _run_table(zones: Zones, table: str, key: str, config: QualityCheckConfig) -> SuiteResult:
    return check_table(zones, table, key, store_url=config.store, dataset=config.dataset)


def check_result(result: SuiteResult) -> dg.AssetCheckResult:
    """ERROR failures: failed, severity ERROR (blocks downstream); WARN failures only: failed,
    severity WARN (reported); else passed."""
    if result.problems:
        passed, severity = False, dg.AssetCheckSeverity.ERROR
    elif result.warnings:
        passed, severity = False, dg.AssetCheckSeverity.WARN
    else:
        passed, severity = True, dg.AssetCheckSeverity.ERROR
    md: dict[str, Any] = to_metadata(result.metadata())
    if result.docs is not None:
        md["data_docs_url"] = dg.MetadataValue.url(result.docs.resolve().as_uri())
    md["summary"] = result.summary_line()
    return dg.AssetCheckResult(passed=passed, severity=severity, metadata=md)


def quality_check(
    table: str,
    asset: str | dg.AssetKey | dg.AssetsDefinition,
    partitions_def: dg.PartitionsDefinition | None = None,
    name: str | None = None,
    run: Runner = _run_table,
) -> dg.AssetChecksDefinition:
    """A blocking asset check that runs ``table``'s suite for ``asset`` (per partition when
    ``partitions_def`` is given). ``run`` is the suite runner (tests give a tiny one)."""
    target = dg.AssetKey(asset) if isinstance(asset, str) else asset

    @dg.asset_check(
        asset=target,
        name=name or f"{table}_quality",
        blocking=True,
        partitions_def=partitions_def,
        description=f"great-expectations gate on the {table} table (quality/suites/{table}.py, "
        "severity and thresholds in quality/data/quality.yaml): ERROR failures stop every "
        "downstream asset, WARN failures are reported.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, config: QualityCheckConfig, home: MedcurateHome
    ) -> dg.AssetCheckResult:
        key = context.partition_key if partitions_def is not None else ""
        result = run(home.zones(), table, key, config)
        context.log.info(result.summary_line())
        return check_result(result)

    return _check


catalog_quality = quality_check("catalog", "raw_instances", batch_partitions)
deid_quality = quality_check("deid", "deid_instances", batch_partitions)
volumes_quality = quality_check("volumes", "series_volumes", batch_partitions)
annotations_quality = quality_check("annotations", "annotations", round_partitions)
labels_quality = quality_check("labels", "consensus_labels")
splits_quality = quality_check("splits", "dataset_splits")
release_quality = quality_check("release", "dataset_release")

QUALITY_CHECKS = [
    catalog_quality,
    deid_quality,
    volumes_quality,
    annotations_quality,
    labels_quality,
    splits_quality,
    release_quality,
]
