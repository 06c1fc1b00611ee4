"""The evaluation stage: pull a version, evaluate it, write the report, attach it to the card.

Used by the ``baseline_evaluation`` asset and by ``medcurate evaluate NAME@vN``. The report's
files are deterministic for a version, preset and seed; timings go to the stage's metadata and
``timings.json`` in the working folder only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurate import datasets
from medcurate.config import Zones
from medcurate.evaluate import classifier as clf
from medcurate.evaluate import explain, plots
from medcurate.evaluate import segmenter as seg
from medcurate.evaluate.baseline import Evaluation, evaluate
from medcurate.evaluate.config import EvaluationConfig, preset
from medcurate.evaluate.report import (
    card_section,
    evaluation_markdown,
    fmt,
    model_card,
    subgroup_markdown,
)
from medcurate.io import atomic_write_bytes
from medcurate.stage import Markdown, PathValue
from medcurate.store.reports import SECTION, attach_report

KIND = "evaluation"


@dataclass(frozen=True)
class EvaluateSettings:
    dataset: str
    version: str = "latest"
    store: str = ""  # fsspec URL or folder; default $MEDCURATE_STORE, else MEDCURATE_HOME/releases
    preset: str = "small"
    seed: int = 0
    attach: bool = True  # attach the report to the version (its dataset card)
    config: EvaluationConfig | None = None  # overrides preset and seed when given


@dataclass
class EvaluationResult:
    """What ``run_evaluation`` did: the version, the figures, where the report went."""

    ref: str
    version_id: str
    evaluation: Evaluation = field(repr=False)
    folder: Path
    attached: bool
    roc_uri: str = field(default="", repr=False)
    forest_uri: str = field(default="", repr=False)

    @property
    def problems(self) -> list[str]:
        """Subgroup gaps over the tolerance (what the WARN check reports)."""
        return list(self.evaluation.flags)

    def metadata(self) -> dict[str, Any]:
        ev = self.evaluation
        m = ev.metrics
        md: dict[str, Any] = {
            "version_id": self.version_id,
            "test_samples": int(ev.counts.loc[ev.counts["split"] == "test", "samples"].iloc[0]),
            "threshold": round(ev.threshold, 4),
            "auc": _value(m["auc"].value),
            "auc_95ci": fmt(m["auc"]),
            "sensitivity_95ci": fmt(m["sensitivity"]),
            "specificity_95ci": fmt(m["specificity"]),
            "saliency_share_in_mask": _value(ev.saliency.get("share_in_mask", math.nan)),
            "classifier_seconds_per_epoch": round(ev.timings["classifier_epoch_s"], 2),
            "classifier_epochs": len(ev.classifier.history),
            "classifier_warm_start_from": ev.classifier.parent or "none",
            "seconds": round(ev.timings["total_s"], 1),
            "subgroup_gaps_flagged": len(ev.flags),
            "report": PathValue.of(self.folder / "evaluation.md"),
            "results": Markdown(
                f"![ROC]({self.roc_uri})\n\n![Subgroups]({self.forest_uri})\n\n"
                + subgroup_markdown(ev.subgroups)
            ),
        }
        if ev.dice:
            md["dice_95ci"] = fmt(ev.dice["dice"])
        if ev.segmenter is not None:
            md["segmenter_epochs"] = len(ev.segmenter.history)
            md["segmenter_warm_start_from"] = ev.segmenter.parent or "none"
        return md

    def summary_line(self) -> str:
        ev = self.evaluation
        where = "attached to its card" if self.attached else "not attached"
        dice = f", Dice {fmt(ev.dice['dice'])}" if ev.dice else ""
        return (
            f"evaluation {self.ref} ({self.version_id}): AUC {fmt(ev.metrics['auc'])}, "
            f"sensitivity {fmt(ev.metrics['sensitivity'])}, specificity "
            f"{fmt(ev.metrics['specificity'])} at {ev.threshold:.3f}{dice}; "
            f"{len(ev.flags)} subgroup gap(s) flagged; report {where}"
        )


def _value(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 4)


def stage_cache(zones: Zones) -> Path:
    """Where the evaluation and the augmentation report keep the slices and classifiers they
    share (``cache/evaluation`` under the home: derived data, safe to delete)."""
    return zones.home / "cache" / "evaluation"


def run_evaluation(zones: Zones, settings: EvaluateSettings) -> EvaluationResult:
    """Pull ``settings.dataset@version`` through the public API and evaluate it."""
    ds = datasets.load(settings.dataset, settings.version, root=settings.store or None)
    cfg = settings.config or preset(settings.preset, seed=settings.seed)
    ev = evaluate(ds, cfg, cache=stage_cache(zones))
    folder = zones.evaluation(ds.name, ds.version)
    files = write_report(ev, folder, ds.info.ref, ds.id, ds.signature)
    atomic_write_bytes(
        folder / "timings.json", (json.dumps(ev.timings, indent=2, sort_keys=True) + "\n").encode()
    )
    if settings.attach:
        attach_report(ds.store, ds.info, KIND, files)
    return EvaluationResult(
        ds.info.ref,
        ds.id,
        ev,
        folder,
        settings.attach,
        roc_uri=plots.png_data_uri(folder / "roc.png"),
        forest_uri=plots.png_data_uri(folder / "forest.png"),
    )


def write_report(
    ev: Evaluation, folder: Path, ref: str, version_id: str, signature: str
) -> dict[str, bytes]:
    """Write the report's files into ``folder``; returns them (name -> bytes) for attaching."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # a re-run with fewer cases leaves no stale picture behind
        if old.is_file():
            old.unlink()
    plots.roc_plot(ev.roc, folder / "roc.png", title=f"ROC on test, {version_id}")
    plots.forest_plot(ev.subgroups, folder / "forest.png")
    y = ev.test_scores["y_true"].to_numpy()
    p = ev.test_scores["score"].to_numpy()
    plots.calibration_plot(y, p, folder / "calibration.png")
    for i, c in enumerate(ev.cases):
        title = f"{c.kind}, p={c.score:.2f}: {c.sample_id} slice {c.position} (occlusion)"
        explain.overlay_png(
            c.image, c.cam, c.mask if c.mask.any() else None, folder / f"gradcam-{i + 1}.png", title
        )
    clf.save_model(ev.classifier, folder / "classifier.pt")
    clf_metrics: dict[str, Any] = {k: _estimate_dict(v) for k, v in ev.metrics.items()}
    clf_metrics["threshold"] = ev.threshold
    texts = {
        "evaluation.md": evaluation_markdown(ev, ref, version_id, signature),
        SECTION: card_section(ev, version_id),
        "classifier.model-card.md": model_card(
            "classifier",
            ref,
            version_id,
            {**ev.config.classifier.to_dict(), "size": ev.config.size, **_lineage(ev.classifier)},
            _clean(clf_metrics),
        ),
        "metrics.json": json.dumps(_clean(_metrics_doc(ev, version_id)), sort_keys=True, indent=2)
        + "\n",
        "subgroups.csv": ev.subgroups.to_csv(index=False, float_format="%.6g"),
        "test-scores.csv": ev.test_scores.to_csv(index=False, float_format="%.6g"),
    }
    if ev.segmenter is not None:
        seg.save_model(ev.segmenter, folder / "segmenter.pt")
        texts["segmenter.model-card.md"] = model_card(
            "segmentation",
            ref,
            version_id,
            {**ev.config.segmenter.to_dict(), **_lineage(ev.segmenter)},
            _clean({"dice": _estimate_dict(ev.dice["dice"]), **ev.lesions}),
        )
    for name, text in texts.items():
        atomic_write_bytes(folder / name, text.encode())
    keep = {"timings.json"}
    return {
        f.name: f.read_bytes()
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name not in keep and not f.name.startswith(".")
    }


def _lineage(trained: Any) -> dict[str, Any]:
    """What the model card says of a warm start: the parent model and the epochs trained."""
    return {"warm_start_from": trained.parent or "none", "epochs_trained": len(trained.history)}


def _estimate_dict(e: Any) -> dict[str, Any]:
    return dict(vars(e))


def _clean(obj: Any) -> Any:
    """NaN (undefined) as JSON null, recursively."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _metrics_doc(ev: Evaluation, version_id: str) -> dict[str, Any]:
    return {
        "version_id": version_id,
        "config": ev.config.to_dict(),
        "threshold": ev.threshold,
        "threshold_rule": ev.threshold_note,
        "test": {k: _estimate_dict(v) for k, v in ev.metrics.items()},
        "brier": ev.brier,
        "dice": {k: _estimate_dict(v) for k, v in ev.dice.items()},
        "lesions": ev.lesions,
        "saliency": ev.saliency,
        "flags": ev.flags,
    }
