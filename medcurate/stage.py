"""The stage contract: what every stage of the chain returns, without knowing about Dagster.

Each stage is a plain function ``run_<stage>(zones, key, config, clients) -> StageResult`` in its
room; a check is a plain function returning a list of problems. One helper in ``assets/stage.py``
turns either into Dagster's ``MaterializeResult`` / ``AssetCheckResult``, so an asset is a few lines
(like MONAI's dictionary wrappers over array transforms).

Metadata values stay plain Python here; the few that Dagster shows specially are tagged with the
small marker types below (the domain never imports dagster).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class Markdown(str):
    """A metadata value shown as rendered markdown (tables, inline images, the dataset card)."""

    __slots__ = ()


class PathValue(str):
    """A metadata value that is a local path (Dagster shows it as a copyable path)."""

    __slots__ = ()

    @classmethod
    def of(cls, path: Path | str) -> PathValue:
        return cls(str(path))


class UrlValue(str):
    """A metadata value that is a link (e.g. a Label Studio project)."""

    __slots__ = ()


class JsonValue(dict):  # type: ignore[type-arg]
    """A metadata value shown as JSON (nested counts)."""


@runtime_checkable
class StageResult(Protocol):
    """What a stage did, PHI-free: safe for logs, Dagster metadata and the console."""

    @property
    def problems(self) -> list[str]: ...

    def metadata(self) -> Mapping[str, Any]: ...

    def summary_line(self) -> str: ...


@dataclass
class Outcome:
    """A ready-made StageResult for stages whose result is a few counts and values."""

    stage: str
    key: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    problem_list: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.problem_list

    def metadata(self) -> dict[str, Any]:
        return {**self.counts, **self.values}

    def summary_line(self) -> str:
        where = f"{self.stage} {self.key}".strip()
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "nothing to report"
        tail = f"; {len(self.problem_list)} problem(s)" if self.problem_list else ""
        return f"{where}: {counts}{tail}"
