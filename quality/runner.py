"""Run one table's expectation suite: great-expectations for what GX expresses, plain checks for
the rest, one PHI-free :class:`SuiteResult` out.

A suite (``quality/suites/<table>.py``) gives a list of :class:`GxSpec` (a GX expectation with our
stable name) and may add ``extra_checks`` (files and hashes, accounting, image integrity, drift).
Severity and thresholds come from one file, ``quality/data/quality.yaml`` (:func:`load_config`).

GX runs in one ephemeral context per process (:func:`gx_context`), so its import and set-up are
paid once per run, not per suite: a pandas data source, then per suite run a dataframe asset, a
whole-dataframe batch definition, an ``ExpectationSuite``, a ``ValidationDefinition`` and a
``Checkpoint``. Each expectation carries our name in its ``meta``, and GX's results are mapped
back by it. Observed values keep counts and fractions; unexpected values only from columns whose
values are pseudonymous ids or codes (:data:`SAFE_VALUE_COLUMNS`), never free text.

Nothing here imports great_expectations at module level (3-10 s); ``medcurate --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd
import yaml

from medcurate.config import Zones
from medcurate.stage import Markdown, PathValue

Severity = Literal["ERROR", "WARN"]
SEVERITIES: tuple[Severity, ...] = ("ERROR", "WARN")
TABLES = ("catalog", "deid", "volumes", "annotations", "labels", "splits", "release")  # order
DEFAULT_CONFIG = Path(__file__).parent / "data" / "quality.yaml"
META_KEY = "medcurate_expectation"  # our name, carried in each GX expectation's meta
MAX_VALUES = 10  # unexpected values shown per expectation, at most
TABLE_READABLE = "table_readable"  # the outcome of a table that exists but cannot be read

#: columns whose values are pseudonymous ids, codes or small vocabularies: their unexpected values
#: may be shown (as at most MAX_VALUES of them). Values of every other column are withheld: a
#: catalog column may hold a name, a description may hold free text.
SAFE_VALUE_COLUMNS = frozenset(
    {
        "sample_id", "batch", "round", "round_number", "source_round", "split", "fold",
        "modality", "site", "sex", "age_band", "label", "class", "reason", "status",
        "annotator", "task_id", "orientation", "dtype", "kind", "synthetic", "labelled",
        "patient_identity_removed", "verified", "deid_method", "image_sha256", "label_sha256",
        "nifti_sha256", "sha256", "mask_sha256",
    }
)  # fmt: skip
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.:+\-]{0,80}$")


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Outcome:
    """One expectation's result, PHI-free."""

    expectation: str  # stable name, e.g. "modality_in_allowed_set"
    severity: Severity
    success: bool
    observed: Any  # a small JSON-able observed value (count, fraction, list of <=10 ids)
    message: str  # names the expectation; no patient data, no source paths


@dataclass
class SuiteResult:
    """One suite run over one table (satisfies :class:`medcurate.stage.StageResult`)."""

    table: str
    outcomes: list[Outcome]
    docs: Path | None = None  # the Data Docs page of this run
    rows: int | None = None  # rows of the table checked
    key: str = ""  # the partition (batch, round) when the table is one partition's rows
    materialized: bool = True  # False: the table does not exist yet (nothing checked)

    @property
    def problems(self) -> list[str]:
        """Messages of failed ERROR outcomes (empty: the gate passes)."""
        return [o.message for o in self.outcomes if not o.success and o.severity == "ERROR"]

    @property
    def warnings(self) -> list[str]:
        """Messages of failed WARN outcomes (reported, never blocking)."""
        return [o.message for o in self.outcomes if not o.success and o.severity == "WARN"]

    @property
    def passed(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return {
            "expectations": len(self.outcomes),
            "passed": sum(o.success for o in self.outcomes),
            "failed_errors": len(self.problems),
            "failed_warnings": len(self.warnings),
        }

    def markdown(self) -> str:
        """A markdown table of every expectation with its observed value."""
        lines = [
            "| expectation | severity | result | observed |",
            "|---|---|---|---|",
        ]
        for o in self.outcomes:
            result = "pass" if o.success else "**FAIL**"
            lines.append(
                f"| {o.expectation} | {o.severity} | {result} | {_md_cell(format_observed(o))} |"
            )
        return "\n".join(lines)

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {"table": self.table, **self.counts()}
        if not self.materialized:
            md["state"] = "not materialized"
        if self.rows is not None:
            md["rows"] = self.rows
        md["expectations_table"] = Markdown(self.markdown())
        if self.docs is not None:
            md["data_docs"] = PathValue.of(self.docs)
        if self.problems:
            md["problems"] = self.problems
        if self.warnings:
            md["warnings"] = self.warnings
        return md

    def summary_line(self) -> str:
        c = self.counts()
        where = f"{self.table} {self.key}".strip()
        if not self.materialized:
            return f"quality {where}: not materialized (nothing to check)"
        rows = f"{self.rows} rows, " if self.rows is not None else ""
        state = (
            "FAILED" if self.problems else ("passed with warnings" if self.warnings else "passed")
        )
        line = (
            f"quality {where}: {state}; {rows}{c['passed']}/{c['expectations']} expectations "
            f"passed, {c['failed_errors']} error(s), {c['failed_warnings']} warning(s)"
        )
        failed = [o.expectation for o in self.outcomes if not o.success]
        if failed:
            line += " [" + ", ".join(failed[:8]) + (" ..." if len(failed) > 8 else "") + "]"
        return line


@dataclass(frozen=True)
class GxSpec:
    """One GX expectation with our name (also its key in quality.yaml)."""

    name: str
    expectation: Any  # a gx.expectations.Expectation instance
    #: show up to MAX_VALUES unexpected values: None decides by column (SAFE_VALUE_COLUMNS),
    #: True when the suite knows the column holds ids or codes only, False never
    show_values: bool | None = None


@dataclass(frozen=True)
class SuiteConfig:
    """One table's section of quality.yaml."""

    severity: dict[str, Severity] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def sev(self, name: str) -> Severity:
        """The configured severity of expectation ``name`` (ERROR unless configured)."""
        return self.severity.get(name, "ERROR")

    def get(self, key: str, default: Any = None) -> Any:
        """A parameter (threshold, allowed set, range, tolerance), ``default`` when absent."""
        return self.params.get(key, default)


@dataclass(frozen=True)
class CheckContext:
    """What ``extra_checks`` may read besides the table."""

    zones: Zones | None = None
    planted_phi: list[str] = field(default_factory=list)  # tests: the generator's planted PHI
    key: str = ""  # the partition (batch or round) the table holds, "" for all
    store: Any = None  # release suite: the ObjectStore of the release (medcurate.store)
    version: Any = None  # release suite: the VersionInfo of the release checked


class Suite(Protocol):
    """One per table, in ``quality/suites/<table>.py``."""

    table: str

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]: ...

    def extra_checks(
        self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext
    ) -> list[Outcome]: ...


# --------------------------------------------------------------------------- config


class QualityConfigError(ValueError):
    """quality.yaml is malformed (names the table and key, never a value of the data)."""


def load_config(path: Path | None = None) -> dict[str, SuiteConfig]:
    """Every table's :class:`SuiteConfig` from ``path`` (default ``quality/data/quality.yaml``).
    Tables absent from the file get the defaults (every expectation ERROR, no params)."""
    path = DEFAULT_CONFIG if path is None else Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise QualityConfigError(f"{path.name}: expected a mapping of table -> section")
    out: dict[str, SuiteConfig] = {}
    for table, section in raw.items():
        section = section or {}
        if not isinstance(section, dict):
            raise QualityConfigError(f"{path.name}: section {table!r} is not a mapping")
        unknown = set(section) - {"severity", "params"}
        if unknown:
            raise QualityConfigError(
                f"{path.name}: section {table!r} has unknown keys {sorted(unknown)} "
                "(expected severity:, params:)"
            )
        sev = section.get("severity") or {}
        params = section.get("params") or {}
        if not isinstance(sev, dict) or not isinstance(params, dict):
            raise QualityConfigError(f"{path.name}: {table}.severity/params must be mappings")
        for name, level in sev.items():
            if level not in SEVERITIES:
                raise QualityConfigError(
                    f"{path.name}: {table}.severity.{name} is {level!r}; expected ERROR or WARN"
                )
        out[str(table)] = SuiteConfig(severity=dict(sev), params=dict(params))
    for table in TABLES:
        out.setdefault(table, SuiteConfig())
    return out


def config_for(table: str, path: Path | None = None) -> SuiteConfig:
    return load_config(path).get(table, SuiteConfig())


# --------------------------------------------------------------------------- GX, once per process

_GX_LOCK = threading.RLock()
_GX: dict[str, Any] = {}
_GX_CREATED = 0
_RUNS = 0


def gx_context() -> tuple[Any, Any]:
    """The process's ephemeral GX context and its pandas data source (created on first use)."""
    global _GX_CREATED
    with _GX_LOCK:
        if not _GX:
            os.environ["GX_ANALYTICS_ENABLED"] = "false"
            import great_expectations as gx  # heavy: 3-10 s, paid once per process
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            # an older or newer GX without the setting: progress bars are harmless
            with contextlib.suppress(Exception):
                context.variables.progress_bars = ProgressBarsConfig(globally=False)
            _GX["context"] = context
            _GX["source"] = context.data_sources.add_pandas("medcurate")
            _GX["gx"] = gx
            _GX_CREATED += 1
        return _GX["context"], _GX["source"]


def gx_contexts_created() -> int:
    """How many GX contexts this process has created (1 after any number of suites)."""
    return _GX_CREATED


def _run_gx(table: str, specs: list[GxSpec], df: pd.DataFrame) -> dict[str, Any]:
    """Validate ``df`` against ``specs``; our expectation name -> GX's ExpectationValidationResult
    (absent when GX returned none for it)."""
    global _RUNS
    with _GX_LOCK:
        context, source = gx_context()
        gx = _GX["gx"]
        _RUNS += 1
        name = f"{table}-{_RUNS}"  # unique per run: a table may be checked many times per process
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for spec in specs:
            exp = spec.expectation
            meta = {**(getattr(exp, "meta", None) or {}), META_KEY: spec.name}
            suite.add_expectation(exp.copy(update={"meta": meta, "id": None}, deep=True))
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=suite, name=name)
        )
        cp = context.checkpoints.add(gx.Checkpoint(name=name, validation_definitions=[vd]))
        try:
            run = cp.run(batch_parameters={"dataframe": df})
            out: dict[str, Any] = {}
            for vr in run.run_results.values():
                for er in vr.results:
                    meta = er.expectation_config.meta or {}
                    if META_KEY in meta:
                        out[str(meta[META_KEY])] = er
            return out
        finally:  # keep the ephemeral context small over a long process
            for remove in (
                lambda: context.checkpoints.delete(name),
                lambda: context.validation_definitions.delete(name),
                lambda: context.suites.delete(name),
                lambda: source.delete_asset(name),
            ):
                with contextlib.suppress(Exception):
                    remove()


# --------------------------------------------------------------------------- observed values


def _plain(v: Any) -> Any:
    """A JSON-able scalar (numpy scalars -> Python; NaN/inf -> text)."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            v = v.item()
        except Exception:
            v = str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)


def _safe_value(v: Any) -> bool:
    v = _plain(v)
    return not isinstance(v, str) or bool(_SAFE_TEXT.match(v))


def scrub_observed(
    result: Mapping[str, Any], column: str | None, show_values: bool | None = None
) -> dict[str, Any]:
    """GX's ``result`` reduced to counts and fractions, plus at most MAX_VALUES unexpected
    values when the column holds ids or codes only (``show_values``, else SAFE_VALUE_COLUMNS)."""
    show = (column in SAFE_VALUE_COLUMNS) if show_values is None else show_values
    out: dict[str, Any] = {}
    for k in ("element_count", "unexpected_count", "unexpected_percent", "missing_count"):
        if k in result and result[k] is not None:
            v = _plain(result[k])
            out[k] = round(v, 4) if isinstance(v, float) else v
    if "observed_value" in result:
        ov = result["observed_value"]
        if isinstance(ov, list | tuple):
            # table-level lists (column names) are schema, not data; a column's list is data
            if column is None or (show and all(_safe_value(x) for x in ov)):
                out["observed_value"] = [_plain(x) for x in list(ov)[:MAX_VALUES]]
            else:
                out["observed_value"] = f"{len(ov)} value(s) withheld"
        else:
            v = _plain(ov)
            if isinstance(v, str) and not (column is None or show) and not _safe_value(v):
                v = "value withheld"
            out["observed_value"] = round(v, 6) if isinstance(v, float) else v
    values = result.get("partial_unexpected_list")
    if values and show:
        kept = [_plain(x) for x in values if _safe_value(x)]
        out["unexpected_values"] = kept[:MAX_VALUES]
    return out


def format_observed(o: Outcome) -> str:
    """An observed value as one short line of text (pages, markdown, console)."""
    v = o.observed
    if isinstance(v, dict):
        parts = []
        for k, x in v.items():
            if isinstance(x, list):
                x = "[" + ", ".join(str(i) for i in x) + "]"
            parts.append(f"{k}={x}")
        text = ", ".join(parts)
    elif isinstance(v, list):
        text = "[" + ", ".join(str(i) for i in v[:MAX_VALUES]) + "]"
    else:
        text = "" if v is None else str(v)
    return text if len(text) <= 300 else text[:297] + "..."


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _gx_message(name: str, success: bool, observed: dict[str, Any], raised: bool) -> str:
    if raised:
        return f"{name}: could not be evaluated (the expectation raised an error; check columns)"
    if success:
        return f"{name}: passed"
    n, total = observed.get("unexpected_count"), observed.get("element_count")
    if n is not None:
        pct = observed.get("unexpected_percent")
        share = f" ({pct:.1f}%)" if isinstance(pct, int | float) else ""
        of = f" of {total}" if total is not None else ""
        return f"{name}: failed, {n}{of} row(s) unexpected{share}"
    if "observed_value" in observed:
        return f"{name}: failed (observed {observed['observed_value']})"
    return f"{name}: failed"


def _raised(info: Any) -> bool:
    """GX's exception_info says an error was raised (flat, or keyed by metric)."""
    if not isinstance(info, Mapping):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, Mapping) and v.get("raised_exception") for v in info.values())


def _gx_outcomes(specs: list[GxSpec], results: dict[str, Any], cfg: SuiteConfig) -> list[Outcome]:
    out = []
    for spec in specs:
        er = results.get(spec.name)
        sev = cfg.sev(spec.name)
        if er is None:
            out.append(Outcome(spec.name, sev, False, None, f"{spec.name}: GX returned no result"))
            continue
        column = getattr(spec.expectation, "column", None)
        raised = _raised(er.exception_info)
        observed = scrub_observed(er.result or {}, column, spec.show_values)
        success = bool(er.success) and not raised
        out.append(Outcome(spec.name, sev, success, observed or None,
                           _gx_message(spec.name, success, observed, raised)))  # fmt: skip
    return out


# --------------------------------------------------------------------------- run


def _guarded(table: str, step: str, fn: Callable[[], Any]) -> tuple[Any, Outcome | None]:
    """``fn()``, or one failed ERROR outcome naming the exception class (never its message: it
    may quote a value of the table)."""
    try:
        return fn(), None
    except Exception as exc:
        name = f"{step}_raised"
        msg = f"{name}: the {table} suite's {step} raised {type(exc).__name__}"
        return None, Outcome(name, "ERROR", False, type(exc).__name__, msg)


def run_suite(
    suite: Suite,
    df: pd.DataFrame,
    cfg: SuiteConfig | None = None,
    ctx: CheckContext | None = None,
    docs_dir: Path | None = None,
) -> SuiteResult:
    """Run ``suite`` on ``df``: GX expectations first, then ``extra_checks``; write the Data Docs
    page (to ``docs_dir``, else ``ctx.zones.quality_docs`` when ``ctx`` has zones)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before a suite imports great_expectations
    table = suite.table
    cfg = config_for(table) if cfg is None else cfg
    ctx = CheckContext() if ctx is None else ctx
    outcomes: list[Outcome] = []

    specs, failed = _guarded(table, "expectations", lambda: list(suite.expectations(df, cfg)))
    if failed:
        outcomes.append(failed)
    elif specs:
        results, failed = _guarded(table, "gx_validation", lambda: _run_gx(table, specs, df))
        outcomes.extend(_gx_outcomes(specs, results, cfg) if failed is None else [failed])

    extra = getattr(suite, "extra_checks", None)
    if extra is not None:
        found, failed = _guarded(table, "extra_checks", lambda: list(extra(df, cfg, ctx)))
        if failed:
            outcomes.append(failed)
        else:
            for o in found:  # the config file wins over the suite's own choice
                if o.expectation in cfg.severity and cfg.severity[o.expectation] != o.severity:
                    o = Outcome(o.expectation, cfg.severity[o.expectation], o.success,
                                o.observed, o.message)  # fmt: skip
                outcomes.append(o)

    result = SuiteResult(table, outcomes, rows=len(df), key=ctx.key)
    if docs_dir is None and ctx.zones is not None:
        docs_dir = ctx.zones.quality_docs
    if docs_dir is not None:
        from quality.docs import write_docs

        result.docs = write_docs(result, Path(docs_dir))
    return result


def not_materialized(table: str, key: str = "") -> SuiteResult:
    """The result for a table that does not exist yet (nothing to check; not a failure)."""
    return SuiteResult(table, [], rows=None, key=key, materialized=False)


# --------------------------------------------------------------------------- the tables


def _concat(paths: list[Path]) -> pd.DataFrame | None:
    frames = [pd.read_parquet(p) for p in sorted(paths) if p.is_file()]
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _rows_of(df: pd.DataFrame | None, column: str, key: str) -> pd.DataFrame | None:
    if df is None or not key or column not in df.columns:
        return df
    return df[df[column] == key].reset_index(drop=True)


def read_table(
    zones: Zones, table: str, key: str = "", store_url: str = "", dataset: str = ""
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The table a suite checks, read from the zones (``key``: one batch or round, "" for all),
    or None when it is not materialized yet; with what its CheckContext needs besides (the
    release's store and version)."""
    extra: dict[str, Any] = {}
    if table == "catalog":
        paths = [zones.catalog_file(key)] if key else list(zones.catalog.glob("*.parquet"))
        return _concat(paths), extra
    if table == "deid":
        paths = [zones.deid_manifest(key)] if key else list(zones.deid_manifests.glob("*.parquet"))
        return _concat(paths), extra
    if table == "volumes":
        return _rows_of(_concat([zones.volumes_table]), "batch", key), extra
    if table == "annotations":
        if key:
            return _concat([zones.round_annotations(key)]), extra
        return _concat(list(zones.annotation.glob("round-*/annotations.parquet"))), extra
    if table == "labels":
        return _concat([zones.labels_table]), extra
    if table == "splits":
        return _concat([zones.splits_table]), extra
    if table == "release":
        from medcurate.store.objects import ObjectStore, open_store
        from medcurate.store.publish import latest_version, load_manifest
        from medcurate.store.run import DEFAULT_DATASET

        store: ObjectStore = open_store(store_url or None)
        if store_url == "" and not os.environ.get("MEDCURATE_STORE"):
            store = ObjectStore(zones.releases)
        info = latest_version(store, dataset or DEFAULT_DATASET)
        if info is None:
            return None, extra
        extra = {"store": store, "version": info}
        return load_manifest(store, info), extra
    raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")


def check_table(
    zones: Zones,
    table: str,
    key: str = "",
    config: Mapping[str, SuiteConfig] | None = None,
    store_url: str = "",
    dataset: str = "",
) -> SuiteResult:
    """The ``check_quality`` stage of one table: read it from the zones and run its suite
    (:func:`not_materialized` when the table does not exist yet). Data Docs go to
    ``zones.quality_docs``."""
    from quality.suites import get_suite

    try:
        df, extra = read_table(zones, table, key, store_url, dataset)
    except Exception as exc:  # a corrupt table or an unreadable (forged, unsigned) release
        msg = f"{TABLE_READABLE}: the {table} table could not be read ({type(exc).__name__})"
        return SuiteResult(table, [Outcome(TABLE_READABLE, "ERROR", False, type(exc).__name__,
                                           msg)], key=key)  # fmt: skip
    if df is None:
        return not_materialized(table, key)
    cfg = (config if config is not None else load_config()).get(table, SuiteConfig())
    ctx = CheckContext(zones=zones, key=key, **extra)
    return run_suite(get_suite(table), df, cfg, ctx, docs_dir=zones.quality_docs)
