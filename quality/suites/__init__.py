"""The suites, one per table: table name -> suite object (:class:`quality.runner.Suite`).

Each table's suite lives in ``quality/suites/<table>.py``; :func:`get_suite` imports it on first
use (a suite module imports pandas; great_expectations only inside ``expectations``). A module
names its suite as ``SUITE`` or defines one class whose ``table`` is the module's table.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quality.runner import Suite

#: every table with a suite, in pipeline order
TABLES: tuple[str, ...] = (
    "catalog", "deid", "volumes", "annotations", "labels", "splits", "release",
)  # fmt: skip

_CACHE: dict[str, Suite] = {}


class UnknownTableError(KeyError):
    """No suite is registered for that table name."""


def get_suite(table: str) -> Suite:
    """The suite of ``table`` (one instance per process)."""
    if table not in TABLES:
        raise UnknownTableError(f"no quality suite for table {table!r}; known: {', '.join(TABLES)}")
    if table not in _CACHE:
        module = importlib.import_module(f"quality.suites.{table}")
        suite: Any = getattr(module, "SUITE", None)
        if suite is None:
            found = [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if cls.__module__ == module.__name__
                and getattr(cls, "table", None) == table
                and hasattr(cls, "expectations")
            ]
            if len(found) != 1:
                raise UnknownTableError(
                    f"quality.suites.{table} defines {len(found)} suites for {table!r} "
                    "(expected one, or a module-level SUITE)"
                )
            suite = found[0]()
        _CACHE[table] = suite
    return _CACHE[table]


def all_suites() -> dict[str, Suite]:
    """Every table's suite, in pipeline order."""
    return {t: get_suite(t) for t in TABLES}
