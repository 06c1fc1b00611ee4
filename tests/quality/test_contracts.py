"""The table contracts: one source of truth, equal to the writers' own schemas."""

from __future__ import annotations

import pandas as pd
import pytest

from annotation.adjudication import LABEL_COLUMNS as WRITER_LABEL_COLUMNS
from annotation.export import ANNOTATION_COLUMNS as WRITER_ANNOTATION_COLUMNS
from medcurate.deid.run import MANIFEST_COLUMNS as DEID_COLUMNS
from medcurate.ingest import CATALOG_SCHEMA
from medcurate.normalize.run import VOLUME_COLUMNS
from medcurate.store.manifest import MANIFEST_COLUMNS, SAMPLE_COLUMNS
from quality import contracts
from quality.contracts import CONTRACT_COLUMNS, CONTRACTS, contract, not_null_name


def test_copied_annotation_columns_match_the_writers() -> None:
    assert list(contracts.LABEL_COLUMNS) == list(WRITER_LABEL_COLUMNS)
    assert list(contracts.ANNOTATION_COLUMNS) == list(WRITER_ANNOTATION_COLUMNS)


@pytest.mark.parametrize(
    ("table", "writer"),
    [
        ("catalog", list(CATALOG_SCHEMA.names)),
        ("deid", list(DEID_COLUMNS)),
        ("volumes", list(VOLUME_COLUMNS)),
        ("labels", list(WRITER_LABEL_COLUMNS)),
        ("annotations", list(WRITER_ANNOTATION_COLUMNS)),
        ("samples", list(SAMPLE_COLUMNS)),
        ("release_manifest", list(MANIFEST_COLUMNS)),
    ],
)
def test_contract_columns_are_the_writers(table: str, writer: list[str]) -> None:
    c = contract(table)
    assert list(c.columns) == writer
    assert set(c.required) <= set(c.columns)


def test_unknown_table_names_the_known() -> None:
    with pytest.raises(KeyError, match="catalog"):
        contract("nope")


def test_missing_lists_absent_columns_in_order() -> None:
    c = CONTRACTS["catalog"]
    present = [x for x in c.columns if x not in ("sha256", "modality")]
    assert c.missing(present) == ["sha256", "modality"]
    assert c.missing(pd.DataFrame(columns=list(c.columns)).columns) == []


def test_gx_expectations_name_the_contract_and_required_columns() -> None:
    names = [n for n, _ in CONTRACTS["catalog"].gx_expectations()]
    assert names == [CONTRACT_COLUMNS] + [
        not_null_name(c) for c in ("batch", "relpath", "sha256", "status")
    ]
