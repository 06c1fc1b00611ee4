"""Build ``iod-types.json``: per IOD, the PS3.3 types of the attributes de-identification may empty.

Run by hand when the vendored standard changes (never at run time; no network there):

    pip download --no-deps dicom-standard==0.1.0 -d /tmp/dstd
    python medcurate/data/build_iod_types.py /tmp/dstd/dicom_standard-0.1.0-py3-none-any.whl

The wheel (github.com/innolitics/dicom-standard, parsed from PS3.3's HTML) ships the module and
macro tables as JSON. Why a derived table and not the wheel as a dependency: the wheel is 2.5 MB
zipped and 55 MB unpacked, and de-identification needs only the types of the attributes whose
value it may remove or empty (compound codes X/Z, X/D, Z/D, X/Z/D, removals, failed cleaning).

Output: {"provenance": ..., "sop_classes": {SOP Class UID: IOD id},
"iods": {IOD id: {"paths": {path: type}, "text": {tag: type}, "text_nested": {tag: type}}}}: paths
for the attributes of Table E.1-1 an action may remove or empty; text (top level) and text_nested
(inside any sequence, strongest type anywhere) for other text attributes, which the engine's VR
rules may empty wherever they are. A path is the tags from the top-level dataset down, 8 lower-case
hex digits each, joined by ":" (as in the wheel's own paths); functional-group macros of enhanced
IODs appear under both the Shared (5200,9229) and Per-Frame (5200,9230) Functional Groups
Sequences. When modules of one IOD give one path different types, the strongest requirement wins
(1 > 1C > 2 > 2C > 3), so that the value chosen satisfies every module. Type 3 is left out (absent
means Type 3 or not in the IOD: both may be removed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

from pydicom.datadict import dictionary_VR

DATA = Path(__file__).resolve().parent
OUT = DATA / "iod-types.json"
ANNEX_E = DATA / "ps3.15-annex-e.json"
PREFIX = "dicom_standard-0.1.0.data/data/standard/"
RANK = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
SHARED_FG, PER_FRAME_FG = "52009229", "52009230"


def _load(zf: zipfile.ZipFile, name: str) -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads(zf.read(PREFIX + name))
    return data


def _merge(table: dict[str, str], path: str, kind: object) -> None:
    if not isinstance(kind, str) or kind not in RANK:
        return  # "None": the module table gives no type (normalized IODs, printer, ...)
    old = table.get(path)
    if old is None or RANK[kind] < RANK[old]:
        table[path] = kind


def _tag(part: str) -> str:
    """A path part as 8 hex digits; repeating groups (60xx overlays, 50xx curves) as their first."""
    return part.replace("xx", "00")


def _text_vr(tag: str) -> bool:
    try:
        return dictionary_VR(int(tag, 16)) in TEXT_VRS
    except (KeyError, ValueError):
        return False


def build(wheel: Path, date: str) -> dict[str, object]:
    """The compact table from the wheel's JSON (deterministic for one wheel and date)."""
    # rows whose action can remove or empty a value: X in the code, or Clean Descriptors' or
    # Retain Patient Characteristics' C (what fails cleaning is removed); U, D, Z, U* never do
    listed = {
        _tag(str(r["id"]))
        for r in json.loads(ANNEX_E.read_text(encoding="utf-8"))
        if r["basicProfile"] not in ("U", "D", "Z", "X/Z/U*")
        or "C" in (r.get("cleanDescOpt"), r.get("rtnPatCharsOpt"))
    }
    with zipfile.ZipFile(wheel) as zf:
        ciods = _load(zf, "ciods.json")
        sops = _load(zf, "sops.json")
        ciod_modules = _load(zf, "ciod_to_modules.json")
        module_attrs = _load(zf, "module_to_attributes.json")
        ciod_macros = _load(zf, "ciod_to_fg_macros.json")
        macro_attrs = _load(zf, "macro_to_attributes.json")
    # per module / macro: (path, type) of Annex E attributes, (tag, type) of other text ones
    by_unit: dict[tuple[str, str], tuple[list[tuple[str, object]], list[tuple[str, object]]]]
    by_unit = {}
    for unit, rows in (("module", module_attrs), ("macro", macro_attrs)):
        for r in rows:
            parts = [_tag(p) for p in str(r["path"]).split(":")[1:]]
            if not parts or r["type"] not in RANK or r["type"] == "3":
                continue
            paths, tags = by_unit.setdefault((unit, str(r[unit + "Id"])), ([], []))
            if parts[-1] in listed:
                paths.append((":".join(parts), r["type"]))
            elif _text_vr(parts[-1]):
                tags.append((parts[-1] if len(parts) == 1 else "*" + parts[-1], r["type"]))
    iod_paths: dict[str, dict[str, str]] = {}
    iod_tags: dict[str, dict[str, str]] = {}
    for r in ciod_modules:
        ciod = str(r["ciodId"])
        paths, tags = by_unit.get(("module", str(r["moduleId"])), ([], []))
        for path, kind in paths:
            _merge(iod_paths.setdefault(ciod, {}), path, kind)
        for tag, kind in tags:
            _merge(iod_tags.setdefault(ciod, {}), tag, kind)
    for r in ciod_macros:
        ciod = str(r["ciodId"])
        paths, tags = by_unit.get(("macro", str(r["macroId"])), ([], []))
        for path, kind in paths:
            for group in (SHARED_FG, PER_FRAME_FG):
                _merge(iod_paths.setdefault(ciod, {}), f"{group}:{path}", kind)
        for tag, kind in tags:  # inside the functional groups: nested
            _merge(iod_tags.setdefault(ciod, {}), "*" + tag.lstrip("*"), kind)
    id_by_name = {str(c["name"]): str(c["id"]) for c in ciods}
    sop_classes = {str(s["id"]): id_by_name[str(s["ciod"])] for s in sops}
    used = set(sop_classes.values())
    return {
        "provenance": {
            "source": wheel.name,
            "package": "dicom-standard 0.1.0 (PyPI; github.com/innolitics/dicom-standard)",
            "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "files": [
                "ciods.json",
                "sops.json",
                "ciod_to_modules.json",
                "module_to_attributes.json",
                "ciod_to_fg_macros.json",
                "macro_to_attributes.json",
            ],
            "built": date,
            "script": "medcurate/data/build_iod_types.py",
            "scope": "Type 1, 1C, 2, 2C only; paths: attributes of PS3.15 Table E.1-1 an"
            " action may remove or empty; text: other text attributes, by tag",
        },
        "sop_classes": dict(sorted(sop_classes.items())),
        "iods": {
            k: {
                "paths": dict(sorted(iod_paths.get(k, {}).items())),
                "text": {t: v for t, v in sorted(iod_tags.get(k, {}).items()) if t[0] != "*"},
                "text_nested": {
                    t[1:]: v for t, v in sorted(iod_tags.get(k, {}).items()) if t[0] == "*"
                },
            }
            for k in sorted(used)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--date", required=True, help="build date for the provenance (ISO)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = build(args.wheel, args.date)
    text = json.dumps(table, indent=0, separators=(",", ":"), sort_keys=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out.name}: {len(table['sop_classes'])} SOP classes, {len(text)} bytes")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
