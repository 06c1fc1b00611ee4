"""``deid_instances``: one batch de-identified to PS3.15 Annex E, checked by the verifier.

Thin on purpose: the stage is :func:`medcurate.deid.run_deid` (it picks the batch's catalogued
files and says where outputs, quarantine and crosswalk go), its check
:func:`medcurate.deid.check_deid`. The blocking check fails the batch when the independent verifier
found anything or a catalogued file is unaccounted for.
"""

import dagster as dg

from assets.partitions import batch_partitions
from assets.resources import DeidSecrets, MedcurateHome
from assets.stage import checked, materialized
from medcurate.deid import deid_books, run_deid


class DeidRunConfig(dg.Config):
    """Run-time knobs (the profile's options come from the environment: Policy.from_env)."""

    #: worker processes (forked); 0: one per CPU for a batch big enough to repay them (outputs
    #: are the same for any number)
    workers: int = 0


@dg.asset(
    partitions_def=batch_partitions,
    deps=[dg.AssetKey("raw_instances")],
    group_name="deid",
    kinds={"dicom", "parquet"},
    description=(
        "The batch's catalogued instances de-identified (PS3.15 Basic Profile; Retain Patient "
        "Characteristics, Retain Longitudinal Modified Dates, Clean Descriptors, Retain Safe "
        "Private) under deid/<patient>/<study>/<series>/<sop>.dcm, with deid/manifests/<batch>"
        ".parquet. Burned-in risks and verifier hits are quarantined under restricted/."
    ),
)
def deid_instances(
    context: dg.AssetExecutionContext,
    home: MedcurateHome,
    secrets: DeidSecrets,
    config: DeidRunConfig,
) -> dg.MaterializeResult:
    salt = secrets.salt()  # raises before any file is touched when the salt is missing
    result = run_deid(home.zones(), context.partition_key, salt, workers=config.workers)
    return materialized(context, result)


@dg.asset_check(
    asset=deid_instances,
    blocking=True,
    partitions_def=batch_partitions,
    description="The independent verifier found no removed value in any output's bytes or path, "
    "and every catalogued file is either written or quarantined with a reason.",
)
def deid_instances_verified(
    context: dg.AssetCheckExecutionContext, home: MedcurateHome
) -> dg.AssetCheckResult:
    books = deid_books(home.zones(), context.partition_key)  # check_deid's problems, with counts
    return checked(books.problems, books.metadata())
