"""Settings of the evaluation consumer: a small preset for this CPU (demo and tests), a full one.

The operating point is chosen on validation, never on test: Youden's J (sensitivity +
specificity - 1, maximal) by default, or the highest threshold that reaches a target sensitivity
(screening). Everything that changes a number is here, and goes into the model cards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from medcurate.evaluate import EvaluationError
from medcurate.evaluate.classifier import ClassifierConfig
from medcurate.evaluate.segmenter import SegmenterConfig

#: manifest columns a subgroup can be formed from (vendor is the manifest's ``manufacturer``)
ATTRIBUTES: tuple[str, ...] = ("sex", "age_band", "site", "manufacturer", "modality")


@dataclass(frozen=True)
class EvaluationConfig:
    size: int = 64  # slices are resized to size x size
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    segmentation: bool = True  # train and report the UNet too
    threshold_rule: str = "youden"  # or "sensitivity" (target_sensitivity on validation)
    target_sensitivity: float = 0.9
    pool: str = "max"  # slice probabilities -> sample score
    train_slices_per_sample: int = 0  # > 0: train on that many lesion-free slices per volume
    n_resamples: int = 2000  # stratified bootstrap resamples for every 95% interval
    seed: int = 0
    attributes: tuple[str, ...] = ATTRIBUTES
    min_subgroup_n: int = 5  # pairwise intersections need this many test samples
    gap_tolerance: float = 0.2  # a larger FNR or specificity gap across groups is flagged
    explain_cases: int = 3  # Grad-CAM overlays per kind (true positive, false negative, ...)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classifier"] = self.classifier.to_dict()
        d["segmenter"] = self.segmenter.to_dict()
        d["attributes"] = list(self.attributes)
        return d


def preset(name: str, seed: int = 0) -> EvaluationConfig:
    """``small`` (minutes on a 2-core CPU: the demo and CI) or ``full`` (a GPU, or patience)."""
    if name == "small":
        cfg = EvaluationConfig(
            size=48,
            classifier=ClassifierConfig(size=48, epochs=8, seed=seed, threads=2),
            segmenter=SegmenterConfig(epochs=10, seed=seed, threads=2),
            train_slices_per_sample=12,
        )
    elif name == "full":
        cfg = EvaluationConfig(
            size=128,
            classifier=ClassifierConfig(size=128, epochs=40, seed=seed, threads=8),
            segmenter=SegmenterConfig(
                epochs=60, seed=seed, threads=8, channels=(16, 32, 64, 128), strides=(2, 2, 2)
            ),
        )
    else:
        raise EvaluationError(f"unknown evaluation preset {name!r}: small or full")
    return replace(cfg, seed=seed)
