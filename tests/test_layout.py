"""The direction of imports between the rooms (DESIGN.md "Rooms"), checked on the source.

``pipelines -> assets -> {annotation, quality, medcurate}``; ``annotation`` and ``quality`` may
import ``medcurate``; ``medcurate`` imports none of them. Only ``pipelines/`` and ``assets/``
import dagster, and ``pipelines/`` reaches the domain through ``assets/`` only.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and
``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
ROOMS = ("medcurate", "annotation", "quality", "assets", "pipelines")

#: what each room may not import (first-party rooms and dagster)
FORBIDDEN: dict[str, set[str]] = {
    "medcurate": {"annotation", "quality", "assets", "pipelines", "dagster"},
    "annotation": {"assets", "pipelines", "dagster"},
    "quality": {"assets", "pipelines", "dagster"},
    "assets": {"pipelines"},
    "pipelines": {"medcurate", "annotation", "quality"},
}

#: pipelines/ modules that still import the domain directly: module -> {imported module: reason}.
#: Keep this short; each entry is a step a later change should move behind assets/.
PIPELINES_EXCEPTIONS: dict[str, dict[str, str]] = {
    "pipelines/demo.py": {
        "medcurate.cli": "the demo types what a person would: init-home, synth, annotate-sim",
        "medcurate.config": "the demo's MEDCURATE_HOME (Zones) and its one-line ConfigError",
        "medcurate.perms": "writes the demo's salt file owner-only in restricted/",
        "medcurate.services.labelstudio": "starts the managed server on a free port, stops it",
    },
}


@dataclass(frozen=True)
class Import:
    module: str  # the source file, relative to the repository root
    line: int
    name: str  # what is imported, absolute (``from a.b import c`` gives ``a.b.c``)


def _source_files() -> list[Path]:
    return sorted(p for room in ROOMS for p in (ROOT / room).rglob("*.py"))


def imports_of(path: Path, text: str | None = None) -> list[Import]:
    """Every import in the file (or in ``text``, read as if it were that file), wherever it sits."""
    rel = path.relative_to(ROOT).as_posix()
    package = list(Path(rel).parts[:-1])  # a.py and __init__.py alike sit in their folder's package
    tree = ast.parse(path.read_text() if text is None else text, filename=rel)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found += [Import(rel, node.lineno, f"{name}.{a.name}".lstrip(".")) for a in node.names]
        elif _is_import_module_call(node):
            found.append(Import(rel, node.lineno, node.args[0].value))  # type: ignore[attr-defined]
    return found


def _is_import_module_call(node: ast.AST) -> bool:
    """``importlib.import_module("literal")`` or ``import_module("literal")``."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = node.args[0]
    return (
        name == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str)
    )


def _top(name: str) -> str:
    return name.split(".")[0]


def violations() -> list[str]:
    bad = []
    for path in _source_files():
        room = path.relative_to(ROOT).parts[0]
        for imp in imports_of(path):
            if _top(imp.name) not in FORBIDDEN[room]:
                continue
            allowed = PIPELINES_EXCEPTIONS.get(imp.module, {})
            if any(imp.name == a or imp.name.startswith(a + ".") for a in allowed):
                continue
            bad.append(f"{imp.module}:{imp.line} imports {imp.name}")
    return bad


def test_no_room_imports_a_floor_above_it_or_dagster_outside_its_place() -> None:
    assert violations() == []


def test_the_pipelines_exceptions_are_still_needed_and_few() -> None:
    """An exception nobody needs any more is removed from the list (it would hide a regression)."""
    used = {
        (imp.module, allowed)
        for path in _source_files()
        for imp in imports_of(path)
        for allowed in PIPELINES_EXCEPTIONS.get(imp.module, {})
        if imp.name == allowed or imp.name.startswith(allowed + ".")
    }
    listed = {(m, a) for m, names in PIPELINES_EXCEPTIONS.items() for a in names}
    assert listed - used == set()
    assert sum(len(v) for v in PIPELINES_EXCEPTIONS.values()) <= 4  # only ever lower it
    assert all(m.startswith("pipelines/") for m in PIPELINES_EXCEPTIONS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import annotation.simulate", ["annotation.simulate"]),
        (
            "def f():\n    from annotation.simulate import annotate_round",
            ["annotation.simulate.annotate_round"],
        ),
        ("if TYPE_CHECKING:\n    import dagster as dg", ["dagster"]),
        ("from medcurate import cli", ["medcurate.cli"]),
        ("from . import sync", ["annotation.sync"]),
        ("from .rounds import Api, Round", ["annotation.rounds.Api", "annotation.rounds.Round"]),
        ("from .. import cli", ["cli"]),
        ("importlib.import_module('quality.suites')", ["quality.suites"]),
    ],
)
def test_every_kind_of_import_is_seen(source: str, expected: list[str]) -> None:
    as_if = ROOT / "annotation" / "probe.py"  # never written: the text is parsed as if it sat here
    assert [i.name for i in imports_of(as_if, text=source)] == expected


def test_a_violation_is_reported_with_file_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "medcurate" / "cli.py"
    fake = [Import("medcurate/cli.py", 7, "annotation.simulate")]
    monkeypatch.setattr(f"{__name__}._source_files", lambda: [path])
    monkeypatch.setattr(f"{__name__}.imports_of", lambda p: fake)
    assert violations() == ["medcurate/cli.py:7 imports annotation.simulate"]
