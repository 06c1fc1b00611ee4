"""The Dagster code location: one Definitions wiring assets, checks, sensors and resources."""

from __future__ import annotations

import dagster as dg

from assets import annotation as annotation_assets
from assets import annotation_model as annotation_model_assets
from assets import augment as augment_assets
from assets import deid as deid_assets
from assets import evaluate as evaluate_assets
from assets import ingest
from assets import normalize as normalize_assets
from assets import pacs as pacs_assets
from assets import quality as quality_assets
from assets import release as release_assets
from assets.resources import DeidSecrets, LabelStudioResource, MedcurateHome, PacsResource
from pipelines.cluster import executor_for_profile
from pipelines.jobs import ALL_JOBS, PROFILE
from pipelines.sensors import inbox_sensor, pacs_sensor, round_sensor

ASSET_MODULES = [
    ingest,
    deid_assets,
    normalize_assets,
    release_assets,
    annotation_assets,
    annotation_model_assets,
    quality_assets,
    evaluate_assets,
    augment_assets,
    pacs_assets,
]

all_assets = dg.load_assets_from_modules(ASSET_MODULES)
all_checks = dg.load_asset_checks_from_modules(ASSET_MODULES)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=ALL_JOBS,
    sensors=[inbox_sensor, pacs_sensor, round_sensor],
    resources={
        "home": MedcurateHome(),
        "secrets": DeidSecrets(),
        "labelstudio": LabelStudioResource(),
        "pacs": PacsResource(server="clinical"),
        "research_pacs": PacsResource(server="research"),
    },
    executor=executor_for_profile(PROFILE),  # None: Dagster's default (local profile)
)


def resolved_job(name: str) -> dg.JobDefinition:
    """The code location's job ``name``, resolved: what a Celery worker reconstructs to run a
    step of a run launched with :func:`dagster.build_reconstructable_job` (the cluster demo)."""
    return defs.resolve_job_def(name)
