"""The table contracts: one place that says which columns each table has and which must be set.

Each contract points at the schema that lives beside the table's writer (the source of truth for
its column names, README "Words"): ``CATALOG_SCHEMA`` of :mod:`medcurate.ingest`, the deid
manifest's ``MANIFEST_COLUMNS`` (:mod:`medcurate.deid.run`), ``VOLUME_COLUMNS``
(:mod:`medcurate.normalize.run`) and the samples and release manifest columns
(:mod:`medcurate.store.manifest`).
The labels and annotations tables are written in ``annotation/``, which quality may not import:
their column lists are copied here and ``tests/quality/test_contracts.py`` proves they still match
the writers'.
"""

from __future__ import annotations

from dataclasses import dataclass

from medcurate.deid.run import MANIFEST_COLUMNS as _DEID_COLUMNS
from medcurate.ingest import CATALOG_SCHEMA
from medcurate.normalize.run import VOLUME_COLUMNS as _VOLUME_COLUMNS
from medcurate.store.manifest import MANIFEST_COLUMNS as _RELEASE_COLUMNS
from medcurate.store.manifest import SAMPLE_COLUMNS as _SAMPLE_COLUMNS

#: ``annotation.adjudication.LABEL_COLUMNS`` (labels/labels.parquet), copied: quality may not
#: import annotation; a test keeps the copy equal to the writer's.
LABEL_COLUMNS: tuple[str, ...] = (
    "sample_id", "label", "mask_path", "source_round", "agreement", "mean_dice", "kappa",
    "class_support", "n_annotators", "annotated_slices", "adjudicated", "pending_adjudication",
)  # fmt: skip

#: ``annotation.export.ANNOTATION_COLUMNS`` (annotation/round-N/annotations.parquet), copied.
ANNOTATION_COLUMNS: tuple[str, ...] = (
    "round", "task_key", "sample_id", "slice_k", "annotator", "choice", "has_mask",
    "mask_voxels", "mask_path", "lead_time", "created_at", "updated_at", "was_cancelled",
)  # fmt: skip


#: Our expectation names for the contract, shared by every suite.
CONTRACT_COLUMNS = "contract_columns"  # every contract column is present


def not_null_name(column: str) -> str:
    """The expectation name of "``column`` is never null"."""
    return f"{column}_not_null"


@dataclass(frozen=True)
class Contract:
    """One table's columns (all must be present) and those that may never be null."""

    table: str
    columns: tuple[str, ...]
    required: tuple[str, ...] = ()

    def missing(self, present: object) -> list[str]:
        """Contract columns absent from ``present`` (an iterable of column names), in order."""
        have = set(present)  # type: ignore[call-overload]
        return [c for c in self.columns if c not in have]

    def gx_expectations(self) -> list[tuple[str, object]]:
        """(our name, GX expectation) pairs: the contract's columns exist, the required ones are
        never null. GX is imported here, not at module level."""
        import great_expectations.expectations as gxe

        out: list[tuple[str, object]] = [
            (
                CONTRACT_COLUMNS,
                gxe.ExpectTableColumnsToMatchSet(column_set=list(self.columns), exact_match=False),
            )
        ]
        out += [
            (not_null_name(c), gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in self.required
        ]
        return out


CATALOG = Contract(
    "catalog",
    tuple(CATALOG_SCHEMA.names),
    required=("batch", "relpath", "sha256", "status"),
)
DEID_MANIFEST = Contract(
    "deid",
    tuple(_DEID_COLUMNS),
    required=("path", "patient", "study_uid", "series_uid", "sop_uid", "sha256", "profile"),
)
VOLUMES = Contract(
    "volumes",
    tuple(_VOLUME_COLUMNS),
    required=(
        "sample_id", "patient", "series_uid", "modality", "site", "out_shape", "out_spacing",
        "affine", "nifti_path", "nifti_sha256", "status",
    ),
)  # fmt: skip
LABELS = Contract("labels", LABEL_COLUMNS, required=("sample_id", "label"))
ANNOTATIONS = Contract(
    "annotations", ANNOTATION_COLUMNS, required=("round", "task_key", "sample_id", "annotator")
)
SAMPLES = Contract("samples", _SAMPLE_COLUMNS, required=("sample_id", "patient", "nifti_path"))
RELEASE_MANIFEST = Contract(
    "release_manifest", _RELEASE_COLUMNS, required=("sample_id", "patient", "split", "image")
)

CONTRACTS: dict[str, Contract] = {
    c.table: c
    for c in (CATALOG, DEID_MANIFEST, VOLUMES, LABELS, ANNOTATIONS, SAMPLES, RELEASE_MANIFEST)
}


def contract(table: str) -> Contract:
    """The contract of ``table`` (KeyError names the known tables)."""
    try:
        return CONTRACTS[table]
    except KeyError:
        raise KeyError(f"no contract for table {table!r}; known: {sorted(CONTRACTS)}") from None
