"""De-identification to DICOM PS3.15 Annex E (Basic Profile with Retain Patient Characteristics,
Retain Longitudinal Modified Dates, Clean Descriptors and Retain Safe Private), verified
independently. See ``run`` for the file-level contract and the stage (``run_deid``,
``check_deid``), ``shards`` for the stage spread over workers (``plan_deid``, ``deid_shard``,
``merge_deid``), and ``engine`` for the per-dataset one."""

from medcurate.deid.run import (
    DeidBooks,
    DeidResult,
    check_deid,
    deid_books,
    deidentify_files,
    deidentify_tree,
    read_deid_manifest,
    run_deid,
)
from medcurate.deid.shards import (
    DeidShardError,
    ShardSummary,
    deid_shard,
    merge_deid,
    plan_deid,
)

__all__ = [
    "DeidBooks",
    "DeidResult",
    "DeidShardError",
    "ShardSummary",
    "check_deid",
    "deid_books",
    "deid_shard",
    "deidentify_files",
    "deidentify_tree",
    "merge_deid",
    "plan_deid",
    "read_deid_manifest",
    "run_deid",
]
