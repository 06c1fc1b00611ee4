"""What changed between two versions: samples added, removed, relabelled, moved, re-imaged."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medcurate.store.objects import ObjectStore
from medcurate.store.publish import load_manifest, resolve


@dataclass(frozen=True)
class ManifestDiff:
    """Sample-level differences from ``a`` to ``b`` (each a small DataFrame)."""

    a: str
    b: str
    added: pd.DataFrame  # sample_id, split, label
    removed: pd.DataFrame  # sample_id, split, label
    relabelled: pd.DataFrame  # sample_id, label_a, label_b
    moved: pd.DataFrame  # sample_id, split_a, split_b
    changed_files: pd.DataFrame  # sample_id, what ("image", "mask")
    label_counts: pd.DataFrame  # label, a, b, delta

    @property
    def unchanged(self) -> bool:
        return not any(
            len(x)
            for x in (self.added, self.removed, self.relabelled, self.moved, self.changed_files)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "added": sorted(self.added["sample_id"]),
            "removed": sorted(self.removed["sample_id"]),
            "relabelled": self.relabelled.to_dict("records"),
            "moved": self.moved.to_dict("records"),
            "changed_files": self.changed_files.to_dict("records"),
            "label_counts": self.label_counts.to_dict("records"),
        }

    def format(self, limit: int = 20) -> str:
        """Human-readable text for the CLI."""
        lines = [
            f"{self.a} -> {self.b}: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.relabelled)} relabelled, {len(self.moved)} moved split, "
            f"{len(self.changed_files)} file(s) changed"
        ]

        def block(title: str, df: pd.DataFrame, fmt: str) -> None:
            if df.empty:
                return
            lines.append(f"{title}:")
            for rec in df.head(limit).to_dict("records"):
                lines.append("  " + fmt.format(**{str(k): v for k, v in rec.items()}))
            if len(df) > limit:
                lines.append(f"  ... and {len(df) - limit} more")

        block("added", self.added, "+ {sample_id} ({split}, {label})")
        block("removed", self.removed, "- {sample_id} ({split}, {label})")
        block("relabelled", self.relabelled, "~ {sample_id}: {label_a} -> {label_b}")
        block("moved split", self.moved, "> {sample_id}: {split_a} -> {split_b}")
        block("files changed", self.changed_files, "* {sample_id}: {what}")
        if not self.label_counts.empty:
            lines.append("label counts:")
            for r in self.label_counts.to_dict("records"):
                lines.append(f"  {r['label']}: {r['a']} -> {r['b']} ({r['delta']:+d})")
        return "\n".join(lines)


def diff_manifests(
    a: pd.DataFrame, b: pd.DataFrame, name_a: str = "a", name_b: str = "b"
) -> ManifestDiff:
    ia, ib = a.set_index("sample_id"), b.set_index("sample_id")
    added_ids = sorted(set(ib.index) - set(ia.index))
    removed_ids = sorted(set(ia.index) - set(ib.index))
    common = sorted(set(ia.index) & set(ib.index))
    ca, cb = ia.loc[common], ib.loc[common]

    def rows(df: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
        return df.loc[ids, ["split", "label"]].reset_index()

    relabel = ca["label"].astype(str) != cb["label"].astype(str)
    relabelled = pd.DataFrame(
        {
            "sample_id": [str(s) for s in ca.index[relabel]],
            "label_a": ca.loc[relabel, "label"].astype(str).to_list(),
            "label_b": cb.loc[relabel, "label"].astype(str).to_list(),
        }
    )
    move = ca["split"].astype(str) != cb["split"].astype(str)
    moved = pd.DataFrame(
        {
            "sample_id": [str(s) for s in ca.index[move]],
            "split_a": ca.loc[move, "split"].astype(str).to_list(),
            "split_b": cb.loc[move, "split"].astype(str).to_list(),
        }
    )
    changed: list[dict[str, str]] = []
    for kind in ("image", "mask"):
        col = f"{kind}_sha256"
        sa, sb = ca[col].fillna(""), cb[col].fillna("")
        for sid in ca.index[sa != sb]:
            changed.append({"sample_id": str(sid), "what": kind})
    changed_files = pd.DataFrame(changed, columns=["sample_id", "what"]).sort_values(
        ["sample_id", "what"], ignore_index=True
    )
    la, lb = a["label"].value_counts(), b["label"].value_counts()
    labels = sorted(set(la.index) | set(lb.index))
    label_counts = pd.DataFrame(
        {
            "label": labels,
            "a": [int(la.get(x, 0)) for x in labels],
            "b": [int(lb.get(x, 0)) for x in labels],
        }
    )
    label_counts["delta"] = label_counts["b"] - label_counts["a"]
    return ManifestDiff(
        a=name_a,
        b=name_b,
        added=rows(ib, added_ids),
        removed=rows(ia, removed_ids),
        relabelled=relabelled,
        moved=moved,
        changed_files=changed_files,
        label_counts=label_counts,
    )


def diff_versions(store: ObjectStore, ref_a: str, ref_b: str) -> ManifestDiff:
    """Diff two versions of a store (their manifests are verified while loading)."""
    ia, ib = resolve(store, ref_a), resolve(store, ref_b)
    return diff_manifests(load_manifest(store, ia), load_manifest(store, ib), ia.ref, ib.ref)
