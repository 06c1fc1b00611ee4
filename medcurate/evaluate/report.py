"""The evaluation as people read it: ``evaluation.md``, the dataset card's sections, model cards.

Headings follow the Hugging Face dataset card ("Evaluation"; "Bias, Risks and Limitations") and
model card conventions. Only deterministic values go in: no timings, no run ids, no dates.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from medcurate.evaluate.baseline import Evaluation
from medcurate.evaluate.metrics import Estimate

METRIC_NAMES = {
    "auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
}
PLOTS = {"roc": "roc.png", "forest": "forest.png", "calibration": "calibration.png"}


def fmt(e: Estimate | None, digits: int = 2) -> str:
    if e is None or math.isnan(e.value):
        return "n/a"
    if math.isnan(e.low):
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} ({e.low:.{digits}f}–{e.high:.{digits}f})"


def _num(v: Any, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if math.isnan(f) else f"{f:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def metrics_table(ev: Evaluation) -> str:
    rows = [[name, fmt(ev.metrics.get(key))] for key, name in METRIC_NAMES.items()]
    rows.append(["Brier score", _num(ev.brier, 3)])
    if ev.dice:
        rows.append(
            ["Dice (segmentation, mean over test samples with a mask)", fmt(ev.dice["dice"])]
        )
    if ev.lesions:
        rows.append(
            [
                "Lesion-wise detection sensitivity",
                f"{_num(ev.lesions['sensitivity'])} ({int(ev.lesions['detected'])}/"
                f"{int(ev.lesions['true_lesions'])} lesions)",
            ]
        )
    return _table(["metric (test)", "value (95% CI)"], rows)


def _ci(row: pd.Series, metric: str) -> str:
    v, lo, hi = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if v is None or pd.isna(v):
        return "n/a"
    if lo is None or pd.isna(lo):
        return f"{v:.2f}"
    return f"{v:.2f} ({lo:.2f}–{hi:.2f})"


def subgroup_markdown(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [
                str(r["attribute"]),
                str(r["group"]),
                str(int(r["n"])),
                str(int(r["n_pos"])),
                _num(r["prevalence"]),
                _ci(r, "sensitivity"),
                _ci(r, "specificity"),
                _ci(r, "fnr"),
                _ci(r, "auc"),
            ]
        )
    header = ["attribute", "group", "n", "abnormal", "prevalence"]
    header += ["sensitivity", "specificity", "FNR", "AUC"]
    return _table(header, rows)


def gaps_markdown(gaps: pd.DataFrame) -> str:
    rows = []
    for _, r in gaps.iterrows():
        rows.append(
            [
                str(r["attribute"]),
                str(r["metric"]),
                _num(r["difference"]),
                _num(r["ratio"]),
                f"{r['worst_group']} ({_num(r['worst_value'])})",
            ]
        )
    return _table(["attribute", "metric", "difference", "ratio", "worst group"], rows)


def counts_markdown(counts: pd.DataFrame) -> str:
    cols = list(counts.columns)
    return _table(cols, [[str(v) for v in r] for r in counts.itertuples(index=False)])


def cases_markdown(ev: Evaluation) -> str:
    rows = [
        [
            c.kind,
            c.sample_id,
            str(c.position),
            _num(c.score),
            _num(c.share),
            _num(c.area, 3),
            f"gradcam-{i + 1}.png",
        ]
        for i, c in enumerate(ev.cases)
    ]
    head = ["case", "sample", "slice", "p(abnormal)", "occlusion in mask", "mask area", "image"]
    return _table(head, rows)


def _saliency_line(ev: Evaluation) -> str:
    s = ev.saliency
    if "share_in_mask" not in s:
        return "No test slice carries a lesion mask, so saliency could not be located."
    return (
        f"Over {int(s['lesion_slices'])} test slices with a lesion (the mask covers "
        f"{s['mask_area']:.1%} of a slice on average), {s['share_in_mask']:.0%} of the occlusion "
        f"sensitivity lies inside the lesion mask and its peak falls on the lesion in "
        f"{s['pointing_hit_rate']:.0%} of them; for Grad-CAM (MONAI, layer3) the figures are "
        f"{s['gradcam_share_in_mask']:.0%} and {s['gradcam_pointing_hit_rate']:.0%}. A model "
        "that looks elsewhere shows a share near the mask's area."
    )


def evaluation_markdown(ev: Evaluation, ref: str, version_id: str, signature: str) -> str:
    cfg = ev.config
    c = cfg.classifier
    lines = [
        f"# Baseline evaluation of {ref} ({version_id})",
        "",
        f"Pulled through `medcurate.datasets.load` ({signature}). Seed {cfg.seed}; all intervals "
        f"are 95% stratified bootstrap intervals ({cfg.n_resamples} resamples). Samples are "
        "volumes; a sample's score is the "
        f"{'maximum' if cfg.pool == 'max' else 'top-3 mean'} of its slices' probabilities.",
        "",
        "## Data",
        "",
        counts_markdown(ev.counts),
        "",
        "`excluded`: samples without a normal/abnormal label (unreadable, unlabelled, pending "
        "adjudication); synthetic samples are never evaluated.",
        "",
        "## Classifier",
        "",
        f"MONAI ResNet (2D, basic blocks, widths {list(c.widths)}) on {cfg.size}x{cfg.size} "
        f"axial slices, {c.epochs} epochs, class-weighted loss. Operating point "
        f"{ev.threshold:.3f}, chosen by {ev.threshold_note}.",
        "",
        metrics_table(ev),
        "",
        _small_n(ev),
        "",
        f"![ROC]({PLOTS['roc']}) ![Calibration]({PLOTS['calibration']})",
        "",
        "## Subgroups",
        "",
        "Per group of the test split (pairwise intersections with at least "
        f"{cfg.min_subgroup_n} samples). A group with one class has no AUC and no sensitivity or "
        "specificity: `n/a`, with its n.",
        "",
        subgroup_markdown(ev.subgroups),
        "",
        f"![Sensitivity and specificity per subgroup]({PLOTS['forest']})",
        "",
        "Largest gaps across groups (fairlearn `MetricFrame`: difference = max - min, ratio = "
        "min / max):",
        "",
        gaps_markdown(ev.gaps),
        "",
        _flags_text(ev),
        "",
        "## Explanations",
        "",
        _saliency_line(ev),
        "",
        cases_markdown(ev) if ev.cases else "No test case to explain.",
        "",
    ]
    if ev.segmenter is not None:
        lines += [
            "## Segmentation",
            "",
            f"MONAI UNet (2D, channels {list(cfg.segmenter.channels)}), {cfg.segmenter.epochs} "
            f"epochs; Dice on the {cfg.size}x{cfg.size} slice grid per test sample with a mask, "
            "lesions as 3D connected components.",
            "",
            _table(
                ["sample", "Dice"],
                [[k, _num(v)] for k, v in ev.dice_per_sample.items()],
            ),
            "",
        ]
    return "\n".join(lines)


def _flags_text(ev: Evaluation) -> str:
    if not ev.flags:
        return f"No gap exceeds the tolerance of {ev.config.gap_tolerance:.2f}."
    head = f"Gaps over the tolerance of {ev.config.gap_tolerance:.2f}:"
    return "\n".join([head, "", *[f"- {f}" for f in ev.flags]])


def _small_n(ev: Evaluation) -> str:
    """A percentile bootstrap on a handful of samples collapses (every resample of 2 positives
    above 2 negatives has AUC 1): say so where the numbers are read."""
    n_pos = int(ev.test_scores["y_true"].sum())
    n_neg = len(ev.test_scores) - n_pos
    if min(n_pos, n_neg) >= 10:
        return ""
    return (
        f"**Too few test samples to judge:** {n_pos} abnormal and {n_neg} normal. With fewer than "
        "10 of a class the bootstrap intervals understate the uncertainty (they can collapse to "
        "a point); read the figures as a check that the pipeline runs, not as performance."
    )


def card_section(ev: Evaluation, version_id: str) -> str:
    """What the dataset card gains: "Evaluation" and "Bias, Risks and Limitations"."""
    n_test = int(ev.counts.loc[ev.counts["split"] == "test", "samples"].iloc[0])
    small = [
        f"{r['attribute']}={r['group']} (n={int(r['n'])})"
        for _, r in ev.subgroups.iterrows()
        if r["attribute"] != "overall" and int(r["n"]) < ev.config.min_subgroup_n
    ]
    prevalence = ", ".join(
        f"{r['group']} {r['prevalence']:.0%}"
        for _, r in ev.subgroups.iterrows()
        if r["attribute"] in ("sex", "site") and not pd.isna(r["prevalence"])
    )
    lines = [
        "## Evaluation",
        "",
        f"Baselines trained on this version's train split, operating point chosen by "
        f"{ev.threshold_note}, measured once on its {n_test} test samples "
        f"(`medcurate evaluate` on {version_id}; the full report, plots and model cards are "
        "attached to the version as its `evaluation` report).",
        "",
        metrics_table(ev),
        "",
        _small_n(ev),
        "",
        _saliency_line(ev),
        "",
        "## Bias, Risks and Limitations",
        "",
        "Per-subgroup results of the baseline classifier on test:",
        "",
        subgroup_markdown(ev.subgroups),
        "",
        _flags_text(ev),
        "",
        f"Prevalence differs between groups ({prevalence or 'n/a'}); part of any gap can come "
        "from that rather than from the images (Glocker et al. 2023).",
        "",
        _small_n(ev),
        "",
        f"With {n_test} test samples every interval is wide"
        + (f", and these groups are too small to judge: {', '.join(small)}" if small else "")
        + ". These baselines test whether the data can be learnt from; they are not clinical "
        "models.",
        "",
    ]
    return "\n".join(lines)


def model_card(
    kind: str, ref: str, version_id: str, config: dict[str, Any], metrics: dict[str, Any]
) -> str:
    """A model card for one baseline: data version, config, seed, metrics (markdown + JSON)."""
    body = {
        "data": {"dataset": ref, "version_id": version_id},
        "config": config,
        "metrics": metrics,
    }
    return "\n".join(
        [
            f"# Model card: {kind} baseline on {ref}",
            "",
            f"Trained by `medcurate evaluate` on the train split of {version_id} only; "
            "evaluated once on its test split. For research on the dataset, not for clinical use.",
            "",
            "```json",
            json.dumps(body, sort_keys=True, indent=2, default=str),
            "```",
            "",
        ]
    )
