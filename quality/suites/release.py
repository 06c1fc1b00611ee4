"""Suite of a published version: its manifest (the table), its documents and its objects.

The table is the version's verified manifest (:func:`load_release`); ``ctx.store`` and
``ctx.version`` (a :class:`~medcurate.store.publish.VersionInfo`) name the version, so the suite
can read ``dataset.json`` and ``card.md`` and verify objects through the store's own functions.

Expectations (names are the keys of ``quality.yaml``'s ``release`` section):

``contract_columns``, ``<column>_not_null``  the release manifest contract (ERROR)
``release_sample_id_unique``  one row per sample (ERROR)
``release_label_in_allowed_set``  labels are ``allowed_classes`` or ``unlabelled`` (ERROR)
``only_labelled_released_as_labelled``  a real sample carries a class only with the round it
    came from (``source_round``), and, with ``ctx.zones``, only when labels.parquet holds that
    class, settled (not pending adjudication); ``unlabelled`` rows carry no mask (ERROR)
``unlabelled_kept_out_of_labelled_lists``  no unlabelled sample in dataset.json's training,
    validation, test or external_test lists, nor in nnU-Net's labelsTr (ERROR)
``documents_verified``  version.json's documents and the manifest digest check out (ERROR)
``objects_verified``  every object the manifest lists is in the store and its bytes hash to its
    sha256 (the store's own verified fetch) (ERROR)
``card_counts_match``  the card's composition and per-split counts equal the manifest's (ERROR)
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.store.manifest import MONAI_KEYS, UNLABELLED, file_entries
from quality.contracts import RELEASE_MANIFEST
from quality.runner import CheckContext, GxSpec, Outcome, SuiteConfig
from quality.suites.splits import synthetic_in_train

DEFAULT_CLASSES: tuple[str, ...] = ("normal", "abnormal", "unreadable")
MAX_LISTED = 10
_COMPOSITION = re.compile(r"^(\d+) samples \(.*?\) from (\d+) pseudonymous patients", re.M)


def load_release(store: Any, ref: str) -> tuple[pd.DataFrame, Any]:
    """(verified manifest, VersionInfo) of ``NAME@vN`` (or ``NAME`` for the newest): what the
    release suite checks, with ``CheckContext(store=store, version=info)``."""
    from medcurate.store.publish import load_manifest, resolve

    info = resolve(store, ref)
    return load_manifest(store, info), info


def _has(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


def _flag(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), False).astype(bool)


def _ids(values: Any) -> list[str]:
    return sorted(str(v) for v in values)[:MAX_LISTED]


def _skipped(name: str, cfg: SuiteConfig, why: str) -> Outcome:
    return Outcome(name, cfg.sev(name), False, None, f"{name}: could not be checked ({why})")


class ReleaseSuite:
    table = "release"

    def expectations(self, df: pd.DataFrame, cfg: SuiteConfig) -> list[GxSpec]:
        import great_expectations.expectations as gxe

        classes = [*cfg.get("allowed_classes", list(DEFAULT_CLASSES)), UNLABELLED]
        return [
            *(GxSpec(n, e) for n, e in RELEASE_MANIFEST.gx_expectations()),
            GxSpec(
                "release_sample_id_unique", gxe.ExpectColumnValuesToBeUnique(column="sample_id")
            ),
            GxSpec(
                "release_label_in_allowed_set",
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            ),
        ]

    def extra_checks(self, df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> list[Outcome]:
        if RELEASE_MANIFEST.missing(df.columns):
            return []  # contract_columns already says which
        # the release holds the synthetic samples the split table never sees
        out = [_only_labelled(df, cfg, ctx), synthetic_in_train(df, cfg)]
        store, info = ctx.store, ctx.version
        if store is None or info is None:
            why = "no store and version in the check context"
            return out + [
                _skipped(n, cfg, why)
                for n in (
                    "unlabelled_kept_out_of_labelled_lists",
                    "documents_verified",
                    "objects_verified",
                    "card_counts_match",
                )
            ]
        docs, doc_outcome = _documents(store, info, cfg)
        out.append(_kept_out(df, docs.get("dataset.json"), cfg))
        out.append(doc_outcome)
        out.append(_objects(df, store, cfg))
        out.append(_card(df, docs.get("card.md"), cfg))
        return out


def _only_labelled(df: pd.DataFrame, cfg: SuiteConfig, ctx: CheckContext) -> Outcome:
    name = "only_labelled_released_as_labelled"
    real = df.loc[~_flag(df["synthetic"])]
    labelled = real.loc[real["label"].astype(object).ne(UNLABELLED) & real["label"].notna()]
    no_round = labelled.loc[~labelled["source_round"].map(_has).astype(bool)]
    unlabelled = df.loc[df["label"].astype(object).eq(UNLABELLED)]
    masked_unlabelled = unlabelled.loc[unlabelled["mask"].map(_has).astype(bool)]
    not_settled: list[str] = []
    checked_against = "manifest only"
    if ctx.zones is not None and ctx.zones.labels_table.is_file():
        labels = pd.read_parquet(ctx.zones.labels_table)
        pending = (
            _flag(labels["pending_adjudication"])
            if "pending_adjudication" in labels.columns
            else pd.Series(False, index=labels.index)
        )
        settled = dict(
            zip(
                labels.loc[~pending, "sample_id"].astype(str),
                labels.loc[~pending, "label"].astype(str),
                strict=True,
            )
        )
        for rec in labelled.to_dict("records"):
            if settled.get(str(rec["sample_id"])) != str(rec["label"]):
                not_settled.append(str(rec["sample_id"]))
        checked_against = "labels.parquet"
    bad = len(no_round) + len(masked_unlabelled) + len(not_settled)
    ok = not bad
    msg = (
        f"{name}: all {len(labelled)} labelled sample(s) carry a settled consensus label "
        f"(checked against {checked_against}); {len(unlabelled)} marked unlabelled"
        if ok
        else f"{name}: {len(no_round)} labelled sample(s) without a source round, "
        f"{len(not_settled)} whose label is not a settled consensus label, "
        f"{len(masked_unlabelled)} unlabelled sample(s) with a mask"
    )
    observed = {
        "labelled": len(labelled),
        "unlabelled": len(unlabelled),
        "without_source_round": len(no_round),
        "not_settled": len(not_settled),
        "unlabelled_with_mask": len(masked_unlabelled),
        "examples": _ids([*no_round["sample_id"], *not_settled, *masked_unlabelled["sample_id"]]),
    }
    return Outcome(name, cfg.sev(name), ok, observed, msg)


def _documents(store: Any, info: Any, cfg: SuiteConfig) -> tuple[dict[str, bytes], Outcome]:
    """Every document of version.json, read through the store's verification (hash against
    version.json; the manifest also against its digest and the signature when a key is set)."""
    from medcurate.store.publish import load_manifest, read_version_file

    name = "documents_verified"
    docs: dict[str, bytes] = {}
    failed: list[str] = []
    for doc in sorted(info.files):
        try:
            docs[doc] = read_version_file(store, info, doc)
        except Exception as exc:  # TamperedObjectError, StoreError, a missing file
            failed.append(f"{doc} ({type(exc).__name__})")
    try:
        load_manifest(store, info)
    except Exception as exc:
        failed.append(f"manifest digest or signature ({type(exc).__name__})")
    for needed in ("dataset.json", "card.md"):
        if needed not in info.files:
            failed.append(f"{needed} (not in version.json)")
    ok = not failed
    msg = (
        f"{name}: {len(docs)} document(s) of {info.id} match version.json"
        if ok
        else f"{name}: {len(failed)} document(s) of {info.id} fail verification: "
        + ", ".join(failed[:5])
    )
    return docs, Outcome(name, cfg.sev(name), ok, {"documents": len(docs), "failed": failed}, msg)


def _kept_out(df: pd.DataFrame, dataset_json: bytes | None, cfg: SuiteConfig) -> Outcome:
    from medcurate.store.pull import nnunet_plan

    name = "unlabelled_kept_out_of_labelled_lists"
    if dataset_json is None:
        return _skipped(name, cfg, "dataset.json unreadable")
    unlabelled = set(df.loc[df["label"].astype(object).eq(UNLABELLED), "sample_id"].astype(str))
    doc = json.loads(dataset_json)
    in_lists: list[str] = []
    for key in MONAI_KEYS.values():
        for item in doc.get(key) or []:
            if str(item.get("sample_id")) in unlabelled or item.get("class") == UNLABELLED:
                in_lists.append(str(item.get("sample_id")))
    plan, _ = nnunet_plan(df)
    in_labels_tr = []
    for rel, _, _ in plan:
        if rel.startswith("labelsTr/") or rel.startswith("imagesTr/"):
            stem = Path(rel).name.split(".")[0].removesuffix("_0000")
            if stem in unlabelled:
                in_labels_tr.append(stem)
    ok = not in_lists and not in_labels_tr
    msg = (
        f"{name}: {len(unlabelled)} unlabelled sample(s), none in dataset.json's labelled lists "
        "or nnU-Net's imagesTr/labelsTr"
        if ok
        else f"{name}: {len(set(in_lists))} unlabelled sample(s) in dataset.json's labelled "
        f"lists, {len(set(in_labels_tr))} in nnU-Net's imagesTr/labelsTr"
    )
    observed = {
        "unlabelled": len(unlabelled),
        "in_datalist": len(set(in_lists)),
        "in_nnunet_tr": len(set(in_labels_tr)),
        "examples": _ids(set(in_lists) | set(in_labels_tr)),
    }
    return Outcome(name, cfg.sev(name), ok, observed, msg)


def _objects(df: pd.DataFrame, store: Any, cfg: SuiteConfig) -> Outcome:
    """Each listed object through the store's verified fetch (into a throwaway folder, one at a
    time): missing, wrong-sized and wrongly-hashed objects are counted."""
    name = "objects_verified"
    entries = file_entries(df)
    shas = sorted({(sha, size) for _, sha, size in entries})
    missing: list[str] = []
    corrupt: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medcurate-verify-") as tmp:
        target = Path(tmp) / "object"
        for sha, size in shas:
            if not store.has_object(sha):
                missing.append(sha[:12])
                continue
            try:
                n = store.fetch(sha, target)
            except Exception:  # TamperedObjectError: the bytes do not hash to the address
                corrupt.append(sha[:12])
                continue
            finally:
                if target.exists():
                    target.unlink()
            if size and n != size:
                corrupt.append(sha[:12])
    ok = not missing and not corrupt
    msg = (
        f"{name}: all {len(shas)} object(s) exist and match their sha256"
        if ok
        else f"{name}: {len(missing)} object(s) missing, {len(corrupt)} not matching their "
        f"sha256 or size (of {len(shas)})"
    )
    observed = {
        "objects": len(shas),
        "missing": len(missing),
        "corrupt": len(corrupt),
        "examples": sorted(missing + corrupt)[:MAX_LISTED],
    }
    return Outcome(name, cfg.sev(name), ok, observed, msg)


def card_counts(card: str) -> dict[str, Any]:
    """The counts a card states: total samples and patients (Composition line) and, per split,
    every number column of the counts table (samples, patients, synthetic, with mask,
    label=...)."""
    out: dict[str, Any] = {"samples": None, "patients": None, "splits": {}}
    m = _COMPOSITION.search(card)
    if m:
        out["samples"], out["patients"] = int(m.group(1)), int(m.group(2))
    lines = card.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] != ["split", "samples"] or i + 1 >= len(lines):
            continue
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            vals = [c.strip() for c in row.strip().strip("|").split("|")]
            out["splits"][vals[0]] = {
                k: int(v) for k, v in zip(cells[1:], vals[1:], strict=False) if v.isdigit()
            }
        break
    return out


def manifest_counts(df: pd.DataFrame) -> dict[str, Any]:
    """The same counts computed from the manifest."""
    syn = _flag(df["synthetic"])
    out: dict[str, Any] = {
        "samples": len(df),
        "patients": int(df.loc[~syn, "patient"].nunique()),
        "splits": {},
    }
    for split in sorted(set(df["split"].astype(str))):
        part = df.loc[df["split"].astype(str) == split]
        psyn = _flag(part["synthetic"])
        row = {
            "samples": len(part),
            "patients": int(part.loc[~psyn, "patient"].nunique()),
            "synthetic": int(psyn.sum()),
            "with mask": int(part["mask"].map(_has).sum()),
        }
        for label, n in part["label"].value_counts().items():
            row[f"label={label}"] = int(n)
        out["splits"][split] = row
    return out


def _card(df: pd.DataFrame, card: bytes | None, cfg: SuiteConfig) -> Outcome:
    name = "card_counts_match"
    if card is None:
        return _skipped(name, cfg, "card.md unreadable")
    stated, actual = card_counts(card.decode("utf-8", "replace")), manifest_counts(df)
    diffs: list[str] = []
    for key in ("samples", "patients"):
        if stated[key] != actual[key]:
            diffs.append(f"{key}: card {stated[key]}, manifest {actual[key]}")
    for split in sorted(set(stated["splits"]) | set(actual["splits"])):
        s, a = stated["splits"].get(split, {}), actual["splits"].get(split, {})
        for col in sorted(set(s) | set(a)):
            if s.get(col, 0) != a.get(col, 0):
                diffs.append(f"{split} {col}: card {s.get(col, 0)}, manifest {a.get(col, 0)}")
    ok = not diffs
    msg = (
        f"{name}: the card's counts ({actual['samples']} samples, "
        f"{len(actual['splits'])} splits) equal the manifest's"
        if ok
        else f"{name}: {len(diffs)} count(s) differ between card and manifest: "
        + "; ".join(diffs[:3])
    )
    return Outcome(name, cfg.sev(name), ok, {"differences": diffs[:MAX_LISTED]}, msg)


SUITE = ReleaseSuite()
