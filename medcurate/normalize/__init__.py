"""Normalization: de-identified DICOM series -> NIfTI volumes with MONAI, and volumes.parquet.

``assembly`` turns instances into ordered stacks (or quarantine reasons), ``transforms`` holds the
MONAI chain, ``run`` drives a process pool and the tables, ``config`` reads the one settings file.
MONAI and torch are imported only where pixels are touched.
"""

from medcurate.normalize.run import (
    QUARANTINE_TABLE,
    VOLUMES_TABLE,
    NormalizeResult,
    normalize_batch,
    normalize_tree,
)

__all__ = [
    "QUARANTINE_TABLE",
    "VOLUMES_TABLE",
    "NormalizeResult",
    "normalize_batch",
    "normalize_tree",
]
