"""Normalization: de-identified DICOM series -> NIfTI volumes with MONAI, and volumes.parquet.

``assembly`` turns instances into ordered stacks (or quarantine reasons), ``transforms`` holds the
MONAI chain, ``run`` drives a process pool and the tables (the stage: ``run_normalize`` and
``check_normalize``), ``shards`` cuts one batch over many workers (``normalize_shard`` per shard,
then ``merge_normalize``), ``config`` reads the one settings file. MONAI and torch are imported
only where pixels are touched.
"""

from medcurate.normalize.run import (
    QUARANTINE_TABLE,
    VOLUMES_TABLE,
    NormalizeResult,
    check_normalize,
    normalize_batch,
    normalize_tree,
    run_normalize,
)
from medcurate.normalize.shards import (
    MissingPartError,
    ShardMismatchError,
    ShardSummary,
    merge_normalize,
    normalize_shard,
)

__all__ = [
    "QUARANTINE_TABLE",
    "VOLUMES_TABLE",
    "MissingPartError",
    "NormalizeResult",
    "ShardMismatchError",
    "ShardSummary",
    "check_normalize",
    "merge_normalize",
    "normalize_batch",
    "normalize_shard",
    "normalize_tree",
    "run_normalize",
]
