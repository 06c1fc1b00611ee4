"""The de-identified manifest (``deid/manifests/<batch>.parquet``): its contract, no value that
looks like PHI, PatientIdentityRemoved YES and the verifier passed on every row.

PHI scans look at every text cell of the table and report counts and column names only, never a
value. The scans:

- ``no_person_names``: a DICOM person name (``Last^First``) or a whole value ``Last, First`` (not
  when both words are Clean Descriptors terms, e.g. ``Head, Neck``);
- ``no_birth_dates``: an 8-digit date ``YYYYMMDD`` (years 1900-2099) in any column but the shifted
  ``study_date`` (UID and hash columns are not dates);
- ``uids_new_root``: every instance UID column (``uid_columns``) holds a ``2.25.`` UID;
- ``no_planted_phi``: none of ``ctx.planted_phi`` (the generator's ``phi.json`` list) appears as
  a whole value or a whole token (case-insensitive; strings shorter than ``planted_min_chars`` are
  matched whole only).

``patient_identity_removed`` and ``verifier_passed``: the manifest's columns of the same names
(``patient_identity_removed`` = "YES", ``verified`` = true) when it has them. The manifest of
today has neither; then, given the zones, each row's output file is read: PatientIdentityRemoved
from its header, and its sha256 against the row's (a row is written only for bytes the verifier
passed, so intact bytes are verified bytes). Without both, the outcome fails as not evaluated.

Config (``deid`` in quality.yaml, ``params``): ``uid_columns``, ``uid_root`` ("2.25."),
``planted_min_chars`` (6), ``date_exempt_columns`` (["study_date"]), ``profile`` (the expected
``profile`` text; default the policy's own).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from quality.contracts import DEID_MANIFEST
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig

NO_NAMES = "no_person_names"
NO_BIRTH_DATES = "no_birth_dates"
UIDS_NEW_ROOT = "uids_new_root"
NO_PLANTED_PHI = "no_planted_phi"
PROFILE_STATED = "profile_stated"
IDENTITY_REMOVED = "patient_identity_removed"
VERIFIER_PASSED = "verifier_passed"

UID_COLUMNS = ("study_uid", "series_uid", "sop_uid", "frame_of_reference_uid")
HASH_COLUMNS = ("sha256", "source_sha256")
UID_ROOT = "2.25."
PLANTED_MIN_CHARS = 6
MAX_LISTED = 10

_PN = re.compile(r"(?:^|[^A-Za-z])[A-Z][A-Za-z'-]+\^[A-Z]")
_LAST_FIRST = re.compile(r"^\s*([A-Z][A-Za-z'-]+),\s*([A-Z][A-Za-z'-]+)\s*$")
_DATE8 = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")


class DeidSuite:
    table = "deid"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        specs = [GxSpec(n, e) for n, e in DEID_MANIFEST.gx_expectations()]
        specs.append(
            GxSpec(
                PROFILE_STATED,
                gxe.ExpectColumnValuesToBeInSet(column="profile", value_set=[_profile(cfg)]),
                show_values=False,
            )
        )
        if "patient_identity_removed" in df.columns:
            specs.append(
                GxSpec(
                    IDENTITY_REMOVED,
                    gxe.ExpectColumnValuesToBeInSet(
                        column="patient_identity_removed", value_set=["YES"], mostly=1.0
                    ),
                )
            )
            specs.append(
                GxSpec(
                    f"{IDENTITY_REMOVED}_not_null",
                    gxe.ExpectColumnValuesToNotBeNull(column="patient_identity_removed"),
                )
            )
        if "verified" in df.columns:
            specs.append(
                GxSpec(
                    VERIFIER_PASSED,
                    gxe.ExpectColumnValuesToBeInSet(column="verified", value_set=[True]),
                )
            )
            specs.append(
                GxSpec(
                    f"{VERIFIER_PASSED}_not_null",
                    gxe.ExpectColumnValuesToNotBeNull(column="verified"),
                )
            )
        return specs

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        uid_cols = [c for c in cfg.get("uid_columns", list(UID_COLUMNS)) if c in df.columns]
        exempt = set(cfg.get("date_exempt_columns", ["study_date"])) | set(uid_cols)
        text = _text_columns(df)
        out = [
            _scan(cfg, NO_NAMES, df, text, _looks_like_name, "value(s) that look like a name"),
            _scan(
                cfg,
                NO_BIRTH_DATES,
                df,
                [c for c in text if c not in exempt | set(HASH_COLUMNS)],
                lambda v: bool(_DATE8.search(v)),
                "8-digit date(s) outside study_date",
            ),
            _uid_roots(df, cfg, uid_cols),
        ]
        out.append(_planted(df, cfg, text, ctx.planted_phi))
        out += _files(df, cfg, ctx)
        return out


def _profile(cfg: SuiteConfig) -> str:
    configured = cfg.get("profile", None)
    if configured:
        return str(configured)
    from medcurate.deid.policy import DEFAULT_OPTIONS

    return DEFAULT_OPTIONS.profile_text()


def _text_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding text (object or string dtype)."""
    return [
        str(c)
        for c in df.columns
        if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])
    ]


def _values(s: pd.Series) -> Iterable[str]:
    return (str(v) for v in s.dropna().unique() if isinstance(v, str) and v)


def _looks_like_name(value: str) -> bool:
    if _PN.search(value):
        return True
    m = _LAST_FIRST.match(value)
    if not m:
        return False
    from medcurate.deid.clean import safe_terms

    terms = safe_terms()
    return not (m.group(1).upper() in terms and m.group(2).upper() in terms)


def _count_hits(df: pd.DataFrame, columns: Iterable[str], hit: Any) -> dict[str, int]:
    """Per column, the rows whose value ``hit`` flags (each distinct value is tested once)."""
    found: dict[str, int] = {}
    for c in columns:
        bad = {v for v in _values(df[c]) if hit(v)}
        if bad:
            found[c] = int(df[c].isin(bad).sum())
    return found


def _outcome(cfg: SuiteConfig, name: str, found: dict[str, int], what: str) -> Outcome:
    n = sum(found.values())
    observed = {"unexpected_count": n, "columns": sorted(found)[:MAX_LISTED]}
    if not n:
        return Outcome(name, cfg.sev(name), True, observed, f"{name}: passed")
    cols = ", ".join(sorted(found)[:MAX_LISTED])
    return Outcome(name, cfg.sev(name), False, observed, f"{name}: failed, {n} {what} in {cols}")


def _scan(
    cfg: SuiteConfig, name: str, df: pd.DataFrame, columns: list[str], hit: Any, what: str
) -> Outcome:
    return _outcome(cfg, name, _count_hits(df, columns, hit), what)


def _uid_roots(df: pd.DataFrame, cfg: SuiteConfig, uid_cols: list[str]) -> Outcome:
    root = str(cfg.get("uid_root", UID_ROOT))
    found: dict[str, int] = {}
    for c in uid_cols:
        s = df[c].dropna().astype(str)
        n = int((~s.str.startswith(root)).sum())
        if n:
            found[c] = n
    return _outcome(cfg, UIDS_NEW_ROOT, found, f"UID(s) not under the {root} root")


def _planted(df: pd.DataFrame, cfg: SuiteConfig, columns: list[str], planted: list[str]) -> Outcome:
    min_chars = int(cfg.get("planted_min_chars", PLANTED_MIN_CHARS))
    strings = {p.strip().casefold() for p in planted if p and p.strip()}
    if not strings:
        return Outcome(
            NO_PLANTED_PHI,
            cfg.sev(NO_PLANTED_PHI),
            True,
            {"planted": 0},
            f"{NO_PLANTED_PHI}: passed (no planted list given)",
        )
    long = sorted((s for s in strings if len(s) >= min_chars), key=len, reverse=True)
    token = (
        re.compile(r"(?<![0-9a-z])(?:" + "|".join(map(re.escape, long)) + r")(?![0-9a-z])")
        if long
        else None
    )

    def hit(v: str) -> bool:
        f = v.strip().casefold()
        return f in strings or bool(token is not None and token.search(f))

    found = _count_hits(df, columns, hit)
    out = _outcome(cfg, NO_PLANTED_PHI, found, "value(s) holding a planted PHI string")
    return Outcome(
        out.expectation,
        out.severity,
        out.success,
        {**out.observed, "planted": len(strings)},
        out.message,
    )


# --------------------------------------------------------------------------- the output files


def _files(df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
    """PatientIdentityRemoved and verified bytes from the files, where the table cannot say."""
    need_pir = "patient_identity_removed" not in df.columns
    need_ver = "verified" not in df.columns
    if not (need_pir or need_ver):
        return []
    out: list[Outcome] = []
    if ctx.zones is None or "path" not in df.columns:
        why = "the manifest has no {col} column and no zones were given to read the files"
        for name, col, need in (
            (IDENTITY_REMOVED, "patient_identity_removed", need_pir),
            (VERIFIER_PASSED, "verified", need_ver),
        ):
            if need:
                out.append(
                    Outcome(
                        name,
                        cfg.sev(name),
                        False,
                        {"evaluated": False},
                        f"{name}: not evaluated: " + why.format(col=col),
                    )
                )
        return out
    import pydicom

    from medcurate.io import sha256_file

    root = Path(ctx.zones.deid)
    missing = not_yes = unreadable = changed = 0
    sha = df["sha256"] if "sha256" in df.columns else pd.Series([None] * len(df), index=df.index)
    for rel, want in zip(df["path"], sha, strict=True):
        p = root / str(rel)
        if not p.is_file():
            missing += 1
            continue
        if need_pir:
            try:
                ds = pydicom.dcmread(
                    p, stop_before_pixels=True, specific_tags=["PatientIdentityRemoved"]
                )
                if str(ds.get("PatientIdentityRemoved", "")).strip().upper() != "YES":
                    not_yes += 1
            except Exception:
                unreadable += 1
        if need_ver and (not isinstance(want, str) or sha256_file(p) != want):
            changed += 1
    if need_pir:
        n = missing + not_yes + unreadable
        obs = {
            "unexpected_count": n,
            "missing": missing,
            "not_yes": not_yes,
            "unreadable": unreadable,
        }
        msg = (
            f"{IDENTITY_REMOVED}: passed (read from {len(df)} file header(s))"
            if not n
            else f"{IDENTITY_REMOVED}: failed, {n} row(s) whose file does not say "
            f"PatientIdentityRemoved YES ({not_yes} not YES, {missing} missing, "
            f"{unreadable} unreadable)"
        )
        out.append(Outcome(IDENTITY_REMOVED, cfg.sev(IDENTITY_REMOVED), not n, obs, msg))
    if need_ver:
        n = missing + changed
        obs = {"unexpected_count": n, "missing": missing, "changed": changed}
        msg = (
            f"{VERIFIER_PASSED}: passed ({len(df)} file(s) hold the bytes the verifier passed)"
            if not n
            else f"{VERIFIER_PASSED}: failed, {n} row(s) whose file is not the verified output "
            f"({changed} with another sha256, {missing} missing)"
        )
        out.append(Outcome(VERIFIER_PASSED, cfg.sev(VERIFIER_PASSED), not n, obs, msg))
    return out


SUITE = DeidSuite()
