"""Consensus of several annotators: majority vote for classes, STAPLE or majority for masks.

STAPLE (Warfield et al. 2004, SimpleITK's ``STAPLEImageFilter``) weighs each rater by an
estimated sensitivity and specificity instead of counting votes; it also returns those
estimates, which can flag a weak annotator. Majority vote is the simple, explainable fallback.
Thresholds decide when a consensus is too weak to accept and the sample goes to adjudication.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ClassVote:
    """The winning class (None on a tie or too weak a majority) and its share of the votes."""

    label: Hashable | None
    support: float
    accepted: bool


def majority_class(labels: Sequence[Hashable], min_support: float = 0.5) -> ClassVote:
    """Majority vote: the most frequent label if it is unique and its share exceeds
    ``min_support`` (strictly: with 0.5, two of four is not a majority)."""
    if not labels:
        return ClassVote(None, 0.0, False)
    ranked = Counter(labels).most_common()
    top, votes = ranked[0]
    support = votes / len(labels)
    if len(ranked) > 1 and ranked[1][1] == votes:
        return ClassVote(None, support, False)
    accepted = support > min_support
    return ClassVote(top if accepted else None, support, accepted)


def _stack(masks: Sequence[NDArray[np.generic]]) -> NDArray[np.bool_]:
    if not masks:
        raise ValueError("no masks to combine")
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(m) != 0 for m in masks])


def majority_mask(
    masks: Sequence[NDArray[np.generic]], threshold: float = 0.5
) -> NDArray[np.uint8]:
    """Voxels marked by more than ``threshold`` of the raters (ties are background)."""
    stack = _stack(masks)
    return (stack.mean(axis=0) > threshold).astype(np.uint8)


@dataclass(frozen=True)
class StapleResult:
    mask: NDArray[np.uint8]
    probability: NDArray[np.float64]
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]


def staple(
    masks: Sequence[NDArray[np.generic]], threshold: float = 0.5, max_iterations: int = 100
) -> StapleResult:
    """STAPLE consensus of binary masks (2D or 3D): the probability map, its thresholded mask
    (> ``threshold``), and each rater's estimated sensitivity and specificity."""
    import SimpleITK as sitk

    stack = _stack(masks)
    if not stack.any():  # STAPLE is undefined without any foreground: everyone says "none"
        n = len(masks)
        zeros = np.zeros(stack.shape[1:])
        return StapleResult(zeros.astype(np.uint8), zeros, (1.0,) * n, (1.0,) * n)
    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1.0)
    flt.SetMaximumIterations(max_iterations)
    prob = sitk.GetArrayFromImage(flt.Execute(images)).astype(np.float64)
    return StapleResult(
        (prob > threshold).astype(np.uint8),
        prob,
        tuple(float(s) for s in flt.GetSensitivity()),
        tuple(float(s) for s in flt.GetSpecificity()),
    )
