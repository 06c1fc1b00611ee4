"""A round's consensus per sample, its agreement, and adjudication of the samples that disagree.

Per slice (task): the class is the majority of the annotators' choices. Per sample: the lesion
mask is STAPLE (or majority) over the annotators' label maps on the annotated slices; the sample
is ``abnormal`` if any slice's consensus says so or the consensus mask is not empty,
``unreadable`` if most slices are, else ``normal``. Agreement: Fleiss' kappa (Cohen's for two
annotators) over a round's tasks and over each sample's slices; mean pairwise Dice per sample
(on the annotated slices) and its mean per round.

A sample goes to adjudication when a slice has no majority or its masks agree below
``min_dice``. The reviewer works in a separate project (``medcurate round-N adjudication``) and
sees every annotator's labels as pre-annotations (model_version = the annotator's pseudonym).
Whatever the reviewer submits for a slice replaces the consensus of that slice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from annotation.agreement import cohen_kappa, fleiss_kappa_from_ratings, mean_pairwise_dice
from annotation.client import LabelStudioClient
from annotation.consensus import majority_class, majority_mask, staple
from annotation.export import decode_export, pseudonyms, slice_sizes
from annotation.instructions import (
    ADJUDICATION_INSTRUCTION_HTML,
    dagster_asset_url,
    project_description,
    project_instruction,
)
from annotation.render import (
    AXIAL_RAS,
    SliceMapping,
    slice_pixels,
    volume_mask_slice,
    write_label_nifti,
)
from annotation.rounds import (
    existing_rounds,
    project_title,
    sample_mappings,
    slice_mapping,
    slice_task_data,
)
from annotation.tasks import build_task, prediction
from medcurate.config import Zones
from medcurate.io import (
    atomic_write_parquet,
    atomic_write_text,
    read_nifti,
    sha256_file,
    sha256_text,
)
from medcurate.stage import JsonValue, PathValue

NO_CHOICE = "none"  # a rating for an annotation without a class (kappa needs a category)


@dataclass(frozen=True)
class Thresholds:
    min_dice: float = 0.5  # mean pairwise Dice below this sends a sample to adjudication
    min_support: float = 0.5  # a slice's class needs more than this share of the votes
    method: str = "staple"  # or "majority"


@dataclass
class SampleConsensus:
    sample_id: str
    label: str
    slice_classes: dict[int, str | None]
    mask: NDArray[np.uint8]
    annotators: list[str]
    mean_dice: float | None
    class_support: float
    needs_adjudication: bool
    adjudicated_slices: list[int] = field(default_factory=list)
    kappa: float | None = None  # class agreement over the sample's slices

    @property
    def agreement(self) -> float:
        """One number per sample: mean pairwise Dice where masks were drawn, else class support."""
        return float(self.mean_dice) if self.mean_dice is not None else float(self.class_support)


def sample_label(slice_classes: Mapping[int, str | None], mask: NDArray[np.generic]) -> str:
    votes = [c for c in slice_classes.values() if c is not None]
    if np.any(mask) or "abnormal" in votes:
        return "abnormal"
    if votes and sum(c == "unreadable" for c in votes) * 2 > len(slice_classes):
        return "unreadable"
    return "normal"


def combine_masks(
    maps: Sequence[NDArray[np.generic]], slices: Sequence[int], method: str
) -> NDArray[np.uint8]:
    """Consensus of 3D maps computed on the annotated slices only (the rest stays empty)."""
    shape = maps[0].shape
    out = np.zeros(shape, dtype=np.uint8)
    if not slices:
        return out
    ks = sorted(slices)
    sub = [np.asarray(m)[:, :, ks] != 0 for m in maps]
    if len(sub) == 1:
        out[:, :, ks] = sub[0]
        return out
    if method == "staple":
        out[:, :, ks] = staple(sub).mask
    elif method == "majority":
        out[:, :, ks] = majority_mask(sub)
    else:
        raise ValueError(f"unknown mask consensus method {method!r}")
    return out


def sample_consensus(
    sample_id: str,
    rows: pd.DataFrame,
    maps: Mapping[str, NDArray[np.generic]],
    shape: tuple[int, int, int],
    thresholds: Thresholds = Thresholds(),
    decisions: Mapping[int, tuple[str | None, NDArray[np.bool_]]] | None = None,
    mapping: SliceMapping = AXIAL_RAS,
) -> SampleConsensus:
    """Consensus of one sample from its annotation rows (one per annotator per slice) and each
    annotator's 3D map; ``decisions`` (slice -> adjudicated class and 2D PNG-space mask, placed
    through ``mapping``, the one the slices were rendered with) win."""
    rows = rows[~rows["was_cancelled"].astype(bool)] if "was_cancelled" in rows else rows
    slices = sorted({int(k) for k in rows["slice_k"]})
    classes: dict[int, str | None] = {}
    supports = []
    for k in slices:
        votes = [
            str(c) if c is not None else NO_CHOICE for c in rows[rows["slice_k"] == k]["choice"]
        ]
        vote = majority_class(votes, thresholds.min_support)
        classes[k] = str(vote.label) if vote.label not in (None, NO_CHOICE) else None
        supports.append(vote.support)
    annotators = sorted(set(rows["annotator"].astype(str)))
    complete = [
        a
        for a in annotators
        if a in maps and set(rows[rows["annotator"] == a]["slice_k"].astype(int)) == set(slices)
    ]
    use = complete or [a for a in annotators if a in maps]
    stack = [np.asarray(maps[a]) for a in use]
    mask = combine_masks(stack, slices, thresholds.method) if stack else np.zeros(shape, np.uint8)
    drawn = any(np.any(m) for m in stack)
    mean_dice = (
        mean_pairwise_dice([m[:, :, slices] for m in stack]) if drawn and len(stack) > 1 else None
    )
    disagree = any(c is None for c in classes.values()) or (
        mean_dice is not None and mean_dice < thresholds.min_dice
    )
    adjudicated = []
    for k, (choice, m2d) in sorted((decisions or {}).items()):
        if k not in classes:
            continue
        classes[k] = choice
        view = slice_pixels(mask, k, mapping)  # a view: writes land on the mapped voxels
        if np.shape(m2d) != view.shape:
            raise ValueError(f"decision mask of slice {k} has shape {np.shape(m2d)}")
        view[...] = np.asarray(m2d) != 0
        adjudicated.append(k)
    label = sample_label(classes, mask)
    # "abnormal" with nothing drawn (a majority that called a clean slice abnormal) is a
    # disagreement too: a label must never say abnormal without its mask
    disagree = disagree or (label == "abnormal" and not np.any(mask))
    pending = disagree and set(adjudicated) != set(slices)
    return SampleConsensus(
        sample_id=sample_id,
        label=label,
        slice_classes=classes,
        mask=mask,
        annotators=annotators,
        mean_dice=mean_dice,
        class_support=float(np.mean(supports)) if supports else 0.0,
        needs_adjudication=pending,
        adjudicated_slices=adjudicated,
        kappa=round_kappa(rows),
    )


def round_kappa(rows: pd.DataFrame) -> float | None:
    """Class agreement of a round: Fleiss' kappa over tasks rated by the usual number of
    annotators (Cohen's when that number is two); None with fewer than two raters."""
    rows = rows[~rows["was_cancelled"].astype(bool)] if "was_cancelled" in rows else rows
    if rows.empty:
        return None
    per_task = {
        key: [str(c) if c is not None else NO_CHOICE for c in g.sort_values("annotator")["choice"]]
        for key, g in rows.groupby("task_key")
    }
    sizes = pd.Series([len(v) for v in per_task.values()])
    k = int(sizes.mode().max())
    items = [v for v in per_task.values() if len(v) == k]
    if k < 2 or not items:
        return None
    if k == 2:
        return cohen_kappa([v[0] for v in items], [v[1] for v in items])
    return fleiss_kappa_from_ratings(items)


# --------------------------------------------------------------------------- adjudication


def adjudication_tasks(
    slices: pd.DataFrame,
    rows: pd.DataFrame,
    maps: Mapping[tuple[str, str], NDArray[np.generic]],
    samples: Sequence[str],
) -> list[dict[str, Any]]:
    """Tasks for the reviewer: the same slice images, each annotator's labels as a prediction."""
    out = []
    wanted = set(samples)
    for s in slices.sort_values("task_key").to_dict("records"):
        sid, k = str(s["sample_id"]), int(s["slice_k"])
        if sid not in wanted:
            continue
        preds = []
        mine = rows[(rows["sample_id"] == sid) & (rows["slice_k"] == k)].sort_values("annotator")
        for r in mine.to_dict("records"):
            label = maps.get((sid, str(r["annotator"])))
            m = volume_mask_slice(label, k, slice_mapping(s)) if label is not None else None
            choice = r["choice"] if r["choice"] is not None else None
            preds.append(prediction(str(r["annotator"]), 1.0, choice=choice, mask=m))
        out.append(build_task(sid, k, str(s["image_relpath"]), preds, extra=slice_task_data(s)))
    return out


def adjudication_decisions(
    decoded_rows: Sequence[Mapping[str, Any]],
    masks: Mapping[tuple[str, str], Mapping[int, NDArray[np.bool_]]],
) -> dict[str, dict[int, tuple[str | None, NDArray[np.bool_]]]]:
    """Per sample, per slice: the reviewer's class and 2D mask (the latest reviewer's, by
    updated time, when several reviewed one slice)."""
    best: dict[tuple[str, int], Mapping[str, Any]] = {}
    for r in decoded_rows:
        if r.get("was_cancelled"):
            continue
        key = (str(r["sample_id"]), int(r["slice_k"]))
        prev = best.get(key)
        if prev is None or str(r["updated_at"]) > str(prev["updated_at"]):
            best[key] = r
    out: dict[str, dict[int, tuple[str | None, NDArray[np.bool_]]]] = {}
    for (sid, k), r in sorted(best.items()):
        mask = masks[(sid, str(r["annotator"]))][k]
        out.setdefault(sid, {})[k] = (r["choice"], mask)
    return out


# --------------------------------------------------------------------------- a round from disk


class RoundMaps(Mapping[tuple[str, str], NDArray[np.uint8]]):
    """The annotators' 3D maps of a round, keyed by (sample, annotator), read from disk when
    asked for. Only the last sample's maps are kept (callers go sample by sample), so a round's
    worth of full-size maps is never in memory at once (issue 16)."""

    def __init__(self, z: Zones, rows: pd.DataFrame, only: set[str] | None = None) -> None:
        with_mask = rows.dropna(subset=["mask_path"]).drop_duplicates(["sample_id", "annotator"])
        if only is not None:
            with_mask = with_mask[with_mask["sample_id"].astype(str).isin(only)]
        self.z = z
        self.paths = {
            (str(r["sample_id"]), str(r["annotator"])): str(r["mask_path"])
            for r in with_mask.to_dict("records")
        }
        self._sid: str | None = None
        self._cache: dict[tuple[str, str], NDArray[np.uint8]] = {}

    def __getitem__(self, key: tuple[str, str]) -> NDArray[np.uint8]:
        if key not in self._cache:
            path = self.paths[key]
            if key[0] != self._sid:
                self._sid, self._cache = key[0], {}
            label, _ = read_nifti(self.z.annotation_file(path))
            self._cache[key] = label.astype(np.uint8)
        return self._cache[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def of_sample(self, sid: str) -> dict[str, NDArray[np.uint8]]:
        """annotator -> map of one sample (read now; the previous sample's are dropped)."""
        return {a: self[(s, a)] for s, a in self.paths if s == sid}

    def release(self) -> None:
        self._sid, self._cache = None, {}


@dataclass
class RoundConsensus:
    round: str
    samples: list[SampleConsensus]
    kappa: float | None
    rows: pd.DataFrame
    slices: pd.DataFrame
    maps: Mapping[tuple[str, str], NDArray[np.uint8]]  # a RoundMaps: read when asked for
    references: dict[str, str]  # sample -> nifti_path (relative to the volumes root)

    @property
    def mean_dice(self) -> float | None:
        values = [s.mean_dice for s in self.samples if s.mean_dice is not None]
        return float(np.mean(values)) if values else None


def load_round(z: Zones, round: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(annotation rows, slices) of a round as the annotations asset wrote them."""
    return pd.read_parquet(z.round_annotations(round)), pd.read_parquet(z.round_slices(round))


def round_references(slices: pd.DataFrame) -> dict[str, str]:
    """sample -> nifti_path of its reference volume (relative to the volumes root)."""
    return {
        str(r["sample_id"]): str(r["nifti_path"])
        for r in slices.drop_duplicates("sample_id").to_dict("records")
    }


def iter_consensus(
    z: Zones,
    round: str,
    thresholds: Thresholds = Thresholds(),
    decisions: Mapping[str, Mapping[int, tuple[str | None, NDArray[np.bool_]]]] | None = None,
    only: set[str] | None = None,
    loaded: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Iterator[SampleConsensus]:
    """Consensus of a round's samples (those in ``only`` when given), one at a time in sample
    order: a sample's annotator maps are read, its consensus computed and yielded, and its maps
    dropped before the next sample's are read. Memory is one sample's, whatever the round."""
    rows, slices = loaded if loaded is not None else load_round(z, round)
    maps = RoundMaps(z, rows, only)
    shapes = {
        str(r["sample_id"]): tuple(int(x) for x in r["shape"])
        for r in slices.drop_duplicates("sample_id").to_dict("records")
    }
    mappings = sample_mappings(slices)
    for sid in sorted(shapes):
        if only is not None and sid not in only:
            continue
        mine = rows[rows["sample_id"] == sid]
        if mine.empty:
            continue
        per = maps.of_sample(sid)
        result = sample_consensus(
            sid,
            mine,
            per,
            shapes[sid],  # type: ignore[arg-type]
            thresholds,
            (decisions or {}).get(sid),
            mappings[sid],
        )
        del per
        maps.release()
        yield result
        del result  # the caller has written it: not held while the next sample is computed


def consensus_for_round(
    z: Zones,
    round: str,
    thresholds: Thresholds = Thresholds(),
    decisions: Mapping[str, Mapping[int, tuple[str | None, NDArray[np.bool_]]]] | None = None,
    only: set[str] | None = None,
    loaded: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> RoundConsensus:
    """Consensus of every sample of a round (of the samples in ``only`` when given: the others'
    maps are not even read), from annotations.parquet and the annotator maps. Every sample's
    mask is kept in the result: :func:`run_consensus` streams :func:`iter_consensus` instead."""
    rows, slices = loaded if loaded is not None else load_round(z, round)
    results = list(iter_consensus(z, round, thresholds, decisions, only, (rows, slices)))
    maps = RoundMaps(z, rows, only)
    return RoundConsensus(
        round, results, round_kappa(rows), rows, slices, maps, round_references(slices)
    )


# --------------------------------------------------------------------------- all rounds -> labels/

LABEL_COLUMNS = [
    "sample_id", "label", "mask_path", "source_round", "agreement", "mean_dice", "kappa",
    "class_support", "n_annotators", "annotated_slices", "adjudicated", "pending_adjudication",
]  # fmt: skip


def annotated_rounds(z: Zones) -> list[str]:
    """Rounds whose annotations were exported (annotations.parquet), in round order."""
    return [r for r in existing_rounds(z) if z.round_annotations(r).exists()]


def decisions_of(
    client: LabelStudioClient | None, z: Zones, round: str, salt: bytes
) -> dict[str, Any]:
    """The reviewer's labels of a round's adjudication project (empty when there is none)."""
    path = z.round_adjudication(round)
    if client is None or not path.exists():
        return {}
    info = json.loads(path.read_text())
    slices = pd.read_parquet(z.round_slices(round))
    exported = client.snapshot_export(int(info["project_id"]))
    decoded = decode_export(exported, round, pseudonyms(client, salt), slice_sizes(slices))
    return adjudication_decisions(decoded.rows, decoded.masks)


def send_to_adjudication(
    client: LabelStudioClient, z: Zones, rc: RoundConsensus, samples: list[str]
) -> int:
    """Put the samples that disagree into the round's adjudication project; returns how many
    tasks were imported (none for a sample already there)."""
    path = z.round_adjudication(rc.round)
    known = json.loads(path.read_text()) if path.exists() else {}
    back = dagster_asset_url("consensus_labels")
    pid, _ = client.ensure_project(
        project_title(rc.round, "adjudication"),
        1,
        z.round_dir(rc.round),
        known_id=known.get("project_id"),
        description=project_description(f"adjudication {rc.round}", back),
        instruction=project_instruction(back, ADJUDICATION_INSTRUCTION_HTML),
    )
    tasks = adjudication_tasks(rc.slices, rc.rows, rc.maps, samples)
    imported, _ = client.sync_tasks(pid, tasks)
    doc = {"project_id": pid, "samples": sorted(set(samples) | set(known.get("samples", [])))}
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return imported


@dataclass
class ConsensusResult:
    """What ``consensus_labels`` did, PHI-free: a StageResult."""

    samples: int
    rounds: dict[str, dict[str, Any]]  # per round: samples, kappa, mean_dice, pending, sent
    labels: dict[str, int]  # label -> samples
    kappa: float  # mean of the rounds' kappa (NaN when none has one)
    mean_dice: float  # mean of the rounds' mean Dice (NaN when none has one)
    pending_adjudication: int
    adjudicated: int  # samples with at least one adjudicated slice
    path: str  # labels/labels.parquet
    recomputed: int = 0  # (round, sample) consensus computed in this run
    reused: int = 0  # ... kept from the last run: their inputs had not changed

    @property
    def problems(self) -> list[str]:
        return []

    def metadata(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "rounds": JsonValue(self.rounds),
            "labels": JsonValue(self.labels),
            "kappa": self.kappa,
            "mean_dice": self.mean_dice,
            "pending_adjudication": self.pending_adjudication,
            "adjudicated_samples": self.adjudicated,
            "recomputed": self.recomputed,
            "reused": self.reused,
            "path": PathValue(self.path),
        }

    def summary_line(self) -> str:
        return (
            f"consensus: {self.samples} samples over {len(self.rounds)} rounds, "
            f"{self.pending_adjudication} pending adjudication"
        )


def _label_row(s: SampleConsensus, mask_path: str | None, source_round: str) -> dict[str, Any]:
    """One row of labels.parquet (the columns reach the release manifest: frozen)."""
    return {
        "sample_id": s.sample_id,
        "label": s.label,
        "mask_path": mask_path,
        "source_round": source_round,
        "agreement": round(s.agreement, 6),
        "mean_dice": None if s.mean_dice is None else round(s.mean_dice, 6),
        "kappa": None if s.kappa is None else round(float(s.kappa), 6),
        "class_support": round(s.class_support, 6),
        "n_annotators": len(s.annotators),
        "annotated_slices": sorted(s.slice_classes),
        "adjudicated": bool(s.adjudicated_slices),
        "pending_adjudication": s.needs_adjudication,
    }


def _round_row(
    rows: pd.DataFrame, samples: list[dict[str, Any]], pending: list[str], sent: int
) -> dict[str, Any]:
    """A round's line in the metadata, from its annotation rows and its samples' cache entries."""
    kappa = round_kappa(rows)
    dices = [float(s["mean_dice"]) for s in samples if s["mean_dice"] is not None]
    return {
        "samples": len(samples),
        "kappa": None if kappa is None else round(float(kappa), 4),
        "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
        "pending_adjudication": len(pending),
        "sent_to_adjudication": sent,
    }


#: bump when what a sample's consensus writes changes for the same inputs (its label row or
#: mask): every cached sample is then recomputed
CONSENSUS_VERSION = "1"


def _cache_path(z: Zones) -> Any:
    return z.labels / "consensus_cache.json"


def read_consensus_cache(z: Zones) -> dict[str, dict[str, Any]]:
    """``labels/consensus_cache.json``: per ``round/sample``, the content key of the inputs its
    label row was computed from, the row, and the sha256 of the mask it wrote (empty when the
    file is missing, unreadable or from another CONSENSUS_VERSION)."""
    try:
        doc = json.loads(_cache_path(z).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CONSENSUS_VERSION:
        return {}
    entries = doc.get("entries")
    return dict(entries) if isinstance(entries, dict) else {}


def _frame_digest(frame: pd.DataFrame) -> str:
    """Exact content of a table: its columns and every value (no float printing)."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
    return sha256_text("|".join(map(str, frame.columns)) + "|" + hashed.to_numpy().tobytes().hex())


def _decisions_digest(decided: Mapping[int, tuple[str | None, NDArray[np.bool_]]] | None) -> str:
    parts = []
    for k, (choice, m2d) in sorted((decided or {}).items()):
        m = np.asarray(m2d) != 0
        parts.append(f"{k}:{choice}:{m.shape}:{np.packbits(m).tobytes().hex()}")
    return sha256_text("\n".join(parts))


def sample_input_key(
    z: Zones,
    round: str,
    rows: pd.DataFrame,
    slices: pd.DataFrame,
    thresholds: Thresholds,
    decided: Mapping[int, tuple[str | None, NDArray[np.bool_]]] | None,
    volume_sha: str,
) -> str:
    """Content key of everything one sample's consensus reads: its annotation rows, the bytes
    of its annotators' maps, its slices (shape, mapping, reference volume), the adjudicated
    slices, the thresholds and :data:`CONSENSUS_VERSION`."""
    masks = sorted({str(p) for p in rows["mask_path"].dropna()})
    mask_shas = [f"{p}:{sha256_file(z.annotation_file(p))}" for p in masks]
    first = slices.iloc[0]
    shape = tuple(int(x) for x in first["shape"])
    doc = {
        "v": CONSENSUS_VERSION,
        "round": round,
        "thresholds": [thresholds.min_support, thresholds.min_dice, thresholds.method],
        "rows": _frame_digest(rows),
        "masks": mask_shas,
        "shape": shape,
        "mapping": slice_mapping(first.to_dict()).describe(),
        "reference": [str(first["nifti_path"]), volume_sha],
        "decisions": _decisions_digest(decided),
    }
    return sha256_text(json.dumps(doc, sort_keys=True, default=str))


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (a row holds np.float64 / np.bool_ from the arithmetic)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _volume_shas(z: Zones) -> dict[str, str]:
    """nifti_path -> nifti_sha256 of volumes.parquet (the consensus masks copy its header)."""
    if not z.volumes_table.exists():
        return {}
    v = pd.read_parquet(z.volumes_table)
    if "nifti_sha256" not in v.columns:
        return {}
    return {str(p): str(h) for p, h in zip(v["nifti_path"], v["nifti_sha256"], strict=True)}


def run_consensus(
    z: Zones, thresholds: Thresholds, client: LabelStudioClient | None, salt: bytes
) -> ConsensusResult:
    """The ``consensus_labels`` stage: consensus of all rounds into ``labels/labels.parquet``
    and ``labels/masks/`` (a later round wins for a sample seen twice). With ``client``, samples
    that disagree are sent to their round's adjudication project and the reviewer's labels are
    read back; without it (no Label Studio), consensus is computed from the exported files.

    Incremental: a sample whose inputs (:func:`sample_input_key`) are those of the last run
    keeps its label row from ``labels/consensus_cache.json`` and its mask file (checked by
    hash); only the others are recomputed and rewritten. A sample pending adjudication is always
    recomputed (its maps feed the adjudication tasks). The outputs are the bytes a run from
    scratch writes."""
    per_round: dict[str, dict[str, Any]] = {}
    final: dict[str, dict[str, Any]] = {}
    adjudicated = 0
    cache = read_consensus_cache(z)
    entries: dict[str, dict[str, Any]] = {}
    vol_sha = _volume_shas(z)
    rounds = annotated_rounds(z)
    loaded = {r: load_round(z, r) for r in rounds}
    winner: dict[str, str] = {}  # sample -> the last round that labelled it (its mask is kept)
    for r in rounds:
        rows, slices = loaded[r]
        for sid in sorted(
            set(slices["sample_id"].astype(str)) & set(rows["sample_id"].astype(str))
        ):
            winner[sid] = r
    recomputed = 0
    for r in rounds:
        rows, slices = loaded[r]
        decisions = decisions_of(client, z, r, salt)
        sids = sorted(set(slices["sample_id"].astype(str)) & set(rows["sample_id"].astype(str)))
        keys: dict[str, str] = {}
        cached: dict[str, dict[str, Any]] = {}
        for sid in sids:
            mine = rows[rows["sample_id"] == sid]
            sl = slices[slices["sample_id"] == sid]
            ref = vol_sha.get(str(sl.iloc[0]["nifti_path"]), "")
            keys[sid] = sample_input_key(z, r, mine, sl, thresholds, decisions.get(sid), ref)
            hit = cache.get(f"{r}/{sid}")
            if hit is None or hit.get("key") != keys[sid] or hit["row"]["pending_adjudication"]:
                continue
            target = z.label_masks / f"{sid}.nii.gz"
            if (
                winner[sid] == r
                and hit["row"]["mask_path"] is not None
                and (
                    not hit.get("mask_sha")
                    or not target.exists()
                    or sha256_file(target) != hit["mask_sha"]
                )
            ):
                continue  # the kept mask was never written, removed or overwritten: redo it
            cached[sid] = hit
        todo = set(sids) - set(cached)
        refs = round_references(slices)
        # one sample at a time: its maps read, its mask written, then both dropped; only the
        # label rows stay (the maps of samples sent to adjudication are read again there)
        for s in iter_consensus(z, r, thresholds, decisions, only=todo, loaded=(rows, slices)):
            recomputed += 1
            mask_path, mask_sha = None, ""
            if s.mask.any():
                target = z.label_masks / f"{s.sample_id}.nii.gz"
                mask_path = target.relative_to(z.labels).as_posix()  # "masks/<sample_id>.nii.gz"
                if winner[s.sample_id] == r:
                    write_label_nifti(s.mask, z.volume_file(refs[s.sample_id]), target)
                    mask_sha = sha256_file(target)
            cached[s.sample_id] = {
                "key": keys[s.sample_id],
                "row": _label_row(s, mask_path, r),
                "mean_dice": s.mean_dice,  # unrounded: the round's mean is taken over these
                "mask_sha": mask_sha,
            }
            del s  # before the next sample is computed
        results = [cached[sid] for sid in sids]
        pending = [sid for sid in sids if cached[sid]["row"]["pending_adjudication"]]
        sent = 0
        if client and pending:
            maps = RoundMaps(z, rows, set(pending))
            rc = RoundConsensus(r, [], round_kappa(rows), rows, slices, maps, refs)
            sent = send_to_adjudication(client, z, rc, pending)
        per_round[r] = _round_row(rows, results, pending, sent)
        for sid in sids:
            entries[f"{r}/{sid}"] = cached[sid]
            adjudicated += bool(cached[sid]["row"]["adjudicated"])
            final[sid] = cached[sid]["row"]
    for stale in sorted(z.label_masks.glob("*.nii.gz")) if z.label_masks.exists() else []:
        sid = stale.name[: -len(".nii.gz")]
        if sid not in final or final[sid]["mask_path"] is None:
            stale.unlink()
    table = pd.DataFrame([final[k] for k in sorted(final)], columns=LABEL_COLUMNS)
    atomic_write_parquet(table, z.labels_table)
    doc = {"version": CONSENSUS_VERSION, "entries": entries}
    atomic_write_text(_cache_path(z), json.dumps(doc, sort_keys=True, default=_plain) + "\n")
    kappas = [v["kappa"] for v in per_round.values() if v["kappa"] is not None]
    dices = [v["mean_dice"] for v in per_round.values() if v["mean_dice"] is not None]
    return ConsensusResult(
        samples=len(table),
        rounds=per_round,
        labels={str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()},
        kappa=float(np.mean(kappas)) if kappas else float("nan"),
        mean_dice=float(np.mean(dices)) if dices else float("nan"),
        pending_adjudication=int(table["pending_adjudication"].sum()) if len(table) else 0,
        adjudicated=adjudicated,
        path=str(z.labels_table),
        recomputed=recomputed,
        reused=len(entries) - recomputed,
    )
