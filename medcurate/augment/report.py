"""The augmentation report: did the synthetic samples help? Attached to the release's card.

It pulls the release through :func:`medcurate.datasets.load` like the evaluation does, trains the
evaluation classifier on real-only and on real+synthetic train data for several seeds (paired, same
validation and test), and states the verdict with its figures. The quality and privacy figures of
the synthetic samples (from ``synthetic_samples``) and their pictures go into the same section.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate import datasets
from medcurate.augment import figures
from medcurate.augment.utility import UtilityResult, compare
from medcurate.config import Zones
from medcurate.evaluate.config import preset
from medcurate.evaluate.plots import png_data_uri
from medcurate.evaluate.run import stage_cache
from medcurate.io import atomic_write_bytes
from medcurate.stage import Markdown, PathValue
from medcurate.store.reports import SECTION, attach_report

KIND = "augmentation"


@dataclass(frozen=True)
class AugmentationSettings:
    dataset: str
    version: str = "latest"
    store: str = ""
    preset: str = "small"
    seeds: tuple[int, ...] = (0, 1)
    attach: bool = True


@dataclass
class AugmentationResult:
    ref: str
    version_id: str
    n_synthetic: int
    utility: UtilityResult | None = field(repr=False)
    folder: Path
    attached: bool
    note: str = ""

    @property
    def problems(self) -> list[str]:
        return []

    def statement(self) -> str:
        return self.utility.statement() if self.utility is not None else self.note

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "version_id": self.version_id,
            "synthetic_in_train": self.n_synthetic,
            "verdict": self.utility.verdict if self.utility is not None else "not measured",
            "statement": self.statement(),
            "report": PathValue.of(self.folder / "augmentation.md"),
        }
        if self.utility is not None:
            r = self.utility.overall("auc")
            md["auc_real"] = _round(r["real"])
            md["auc_real_plus_synthetic"] = _round(r["augmented"])
            md["auc_difference"] = _round(r["difference"])
            plot = self.folder / "paired.png"
            md["paired"] = Markdown(f"![paired AUC per seed]({png_data_uri(plot)})")
        return md

    def summary_line(self) -> str:
        return f"augmentation {self.ref} ({self.version_id}): {self.statement()}"


def _round(v: float) -> float | None:
    return None if math.isnan(float(v)) else round(float(v), 4)


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(cell(v) for v in r) + " |" for r in df[cols].itertuples(index=False)
    ]
    return "\n".join(lines)


def _synthetic_figures(zones: Zones) -> tuple[str, dict[str, bytes]]:
    """The quality and privacy section of ``synthetic_samples`` and its pictures, if present."""
    report = zones.synthetic_report
    files: dict[str, bytes] = {}
    lines: list[str] = []
    q_path, p_path = report / "quality.json", report / "privacy.json"
    if q_path.exists():
        q = pd.DataFrame(json.loads(q_path.read_text()))
        lines += [
            "Quality of the generated lesion patches against real train lesion patches, beside "
            "the same figures for two halves of the real patches (patients split apart):",
            "",
            _table(q.fillna(float("nan")), ["metric", "synthetic", "reference"]),
            "",
        ]
    if p_path.exists():
        p = json.loads(p_path.read_text())
        lines += [
            f"Privacy: {p['dropped']} of {p['generated']} generated patches "
            f"({p['dropped_share']:.0%}) were closer to a training record than real patients "
            f"come to each other (quantile {p['quantile']}) and were dropped before use.",
            "",
        ]
    for name in ("grid.png", "nearest.png"):
        if (report / name).exists():
            files[f"synthetic-{name}"] = (report / name).read_bytes()
    if files:
        lines += [f"![{n}]({n})" for n in sorted(files)] + [""]
    return "\n".join(lines), files


def run_augmentation_report(zones: Zones, settings: AugmentationSettings) -> AugmentationResult:
    ds = datasets.load(settings.dataset, settings.version, root=settings.store or None)
    train = ds.split("train")
    n_syn = int(train["synthetic"].astype(bool).sum())
    folder = zones.evaluation(ds.name, ds.version) / KIND
    folder.mkdir(parents=True, exist_ok=True)
    synth_md, files = _synthetic_figures(zones)
    utility: UtilityResult | None = None
    if n_syn == 0:
        note = f"{ds.info.ref} has no synthetic sample in train: nothing to compare."
    else:
        cfg = preset(settings.preset)
        utility = compare(ds, cfg, seeds=settings.seeds, cache=stage_cache(zones))
        figures.paired_plot(utility, folder / "paired.png")
        files["paired.png"] = (folder / "paired.png").read_bytes()
        note = utility.statement()
    section = _section(n_syn, note, utility, synth_md, files)
    files["augmentation.md"] = section.encode()
    files[SECTION] = section.encode()
    if utility is not None:
        files["paired.csv"] = utility.paired.to_csv(index=False, float_format="%.6g").encode()
        files["runs.csv"] = utility.runs.to_csv(index=False, float_format="%.6g").encode()
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    if settings.attach:
        attach_report(ds.store, ds.info, KIND, files)
    return AugmentationResult(
        ds.info.ref, ds.id, n_syn, utility, folder, settings.attach, note=note
    )


def _section(
    n_syn: int,
    statement: str,
    utility: UtilityResult | None,
    synth_md: str,
    files: dict[str, bytes],
) -> str:
    lines = [
        "## Augmentation",
        "",
        f"{n_syn} synthetic sample(s) in train (a class-conditional GAN trained on this "
        "version's train split only, lesions pasted into real normal train slices; never in "
        "validation or test).",
        "",
        f"**{statement}**",
        "",
    ]
    if utility is not None:
        p = utility.paired
        lines += [
            "Paired comparison on the real test split (the evaluation classifier, real-only vs "
            f"real+synthetic train, seeds {', '.join(map(str, utility.seeds))}; 95% CI of the "
            "difference by paired bootstrap; p across seeds, Holm-adjusted over subgroups):",
            "",
            _table(
                p,
                [
                    c
                    for c in (
                        "attribute",
                        "group",
                        "metric",
                        "real",
                        "augmented",
                        "difference",
                        "low",
                        "high",
                        "p_holm",
                    )
                    if c in p.columns
                ],
            ),
            "",
            "![paired AUC per seed](paired.png)" if "paired.png" in files else "",
            "",
        ]
    if synth_md:
        lines += ["### Synthetic samples: quality and privacy", "", synth_md]
    return "\n".join(lines).rstrip("\n") + "\n"
