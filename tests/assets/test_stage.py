"""assets/stage.py: the one bridge from a stage's result to Dagster metadata and checks."""

# no `from __future__ import annotations`: Dagster reads the context annotation of the assets below
import dagster as dg
import pytest

from assets.stage import checked, materialized, metadata_value, to_metadata
from medcurate.stage import JsonValue, Markdown, Outcome, PathValue, UrlValue


def _outcome() -> Outcome:
    return Outcome(
        "normalize",
        "batch-1",
        counts={"volumes": 3},
        values={
            "card": Markdown("# card"),
            "table": PathValue("/h/volumes/volumes.parquet"),
            "project": UrlValue("http://127.0.0.1:8080/projects/1"),
            "by_modality": JsonValue({"CT": 2, "MR": 1}),
            "ratio": 0.5,
            "name": "plain",
        },
    )


def test_markers_become_their_metadata_values() -> None:
    md = to_metadata(_outcome().metadata())
    assert isinstance(md["card"], dg.MarkdownMetadataValue) and md["card"].value == "# card"
    assert isinstance(md["table"], dg.PathMetadataValue)
    assert md["table"].value == "/h/volumes/volumes.parquet"
    assert isinstance(md["project"], dg.UrlMetadataValue)
    assert isinstance(md["by_modality"], dg.JsonMetadataValue)
    assert md["by_modality"].value == {"CT": 2, "MR": 1}
    assert (md["volumes"], md["ratio"], md["name"]) == (3, 0.5, "plain")  # Dagster wraps these
    assert metadata_value(7) == 7


def test_materialized_logs_the_summary_and_adds_extra_metadata() -> None:
    @dg.asset
    def volumes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return materialized(context, _outcome(), rows=Markdown("| 3 |"))

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([volumes], instance=instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    md = event.materialization.metadata
    assert isinstance(md["volumes"], dg.IntMetadataValue) and md["volumes"].value == 3
    assert isinstance(md["table"], dg.PathMetadataValue)
    assert isinstance(md["by_modality"], dg.JsonMetadataValue)
    assert isinstance(md["rows"], dg.MarkdownMetadataValue) and md["rows"].value == "| 3 |"
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert _outcome().summary_line() in logs


@pytest.mark.parametrize("problems", [[], ["2 files unaccounted for"]])
def test_checked_passes_without_problems_and_blocks_with_them(problems: list[str]) -> None:
    @dg.asset
    def table() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    @dg.asset(deps=[table])
    def downstream() -> None:
        return None

    @dg.asset_check(asset=table, blocking=True)
    def table_accounting() -> dg.AssetCheckResult:
        return checked(problems, metadata={"rows": 3})

    result = dg.materialize(
        [table, downstream, table_accounting],
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed is (not problems)
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["problems"].value == (problems or ["none"])
    assert evaluation.metadata["rows"].value == 3
    ran = {e.asset_key for e in result.get_asset_materialization_events()}
    assert (dg.AssetKey("downstream") in ran) is (not problems)  # a failed ERROR check blocks


def test_checked_with_a_warning_severity() -> None:
    res = checked(["low agreement"], severity=dg.AssetCheckSeverity.WARN)
    assert not res.passed and res.severity == dg.AssetCheckSeverity.WARN
