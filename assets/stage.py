"""One bridge from the stage contract (:mod:`medcurate.stage`) to Dagster.

Assets call :func:`materialized` with a stage's result and checks call :func:`checked` with a
list of problems; metadata marker types become Dagster's MetadataValues here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from medcurate.stage import JsonValue, Markdown, PathValue, StageResult, UrlValue


def metadata_value(value: Any) -> Any:
    """A plain or tagged metadata value as Dagster shows it best."""
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(str(value))
    if isinstance(value, PathValue):
        return dg.MetadataValue.path(str(value))
    if isinstance(value, UrlValue):
        return dg.MetadataValue.url(str(value))
    if isinstance(value, JsonValue):
        return dg.MetadataValue.json(dict(value))
    return value


def to_metadata(md: Mapping[str, Any]) -> dict[str, Any]:
    return {k: metadata_value(v) for k, v in md.items()}


def materialized(
    context: dg.AssetExecutionContext, result: StageResult, **extra: Any
) -> dg.MaterializeResult:
    """Log the result's summary line and return its metadata (plus ``extra``) to Dagster."""
    context.log.info(result.summary_line())
    return dg.MaterializeResult(metadata=to_metadata({**result.metadata(), **extra}))


def checked(
    problems: list[str],
    metadata: Mapping[str, Any] | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    check_name: str | None = None,
) -> dg.AssetCheckResult:
    """A check passes when the stage's check function found no problem (``check_name`` when an
    asset returns the result of one of its own check specs)."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not problems,
        severity=severity,
        metadata=to_metadata({**(metadata or {}), "problems": problems or ["none"]}),
    )
