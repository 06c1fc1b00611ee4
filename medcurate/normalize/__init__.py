"""Normalization: de-identified DICOM series -> NIfTI volumes with MONAI, and volumes.parquet.

``assembly`` turns instances into ordered stacks (or quarantine reasons), ``transforms`` holds the
MONAI chain, ``run`` drives a process pool and the tables (the stage: ``run_normalize`` and
``check_normalize``), ``config`` reads the one settings file. MONAI and torch are imported only
where pixels are touched.
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

__all__ = [
    "QUARANTINE_TABLE",
    "VOLUMES_TABLE",
    "NormalizeResult",
    "check_normalize",
    "normalize_batch",
    "normalize_tree",
    "run_normalize",
]
