"""Label Studio task dicts: pseudonymous ids, local-file image URLs, validated pre-annotations.

A task is one rendered slice. Its data carries the sample's pseudonym, the slice index and a
``task_key`` (``<sample_id>:k<k>``) that everything downstream keys on: on sqlite Label Studio
reuses task ids after deletes, so its ids are never trusted as identity.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from annotation.label_config import (
    BRUSH_LABELS,
    CHOICES,
    CONTEXT,
    FINDING,
    IMAGE,
    LABEL_CONFIG,
    LESION,
    ORIENTATION,
    check_prediction,
)
from annotation.rle import mask_to_rle

# Pseudonyms are short tokens: no spaces, carets, dots or slashes (names, UIDs and paths fail).
SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_sample_id(sample_id: str) -> str:
    """Refuse anything that does not look like a pseudonymous id (the value is not echoed)."""
    if not isinstance(sample_id, str) or not SAMPLE_ID_RE.match(sample_id):
        raise ValueError(
            "sample id is not a pseudonym token ([A-Za-z0-9_-], at most 64 characters)"
        )
    return sample_id


def task_key(sample_id: str, k: int) -> str:
    return f"{check_sample_id(sample_id)}:k{int(k):04d}"


def local_file_url(relpath: str) -> str:
    """The URL Label Studio serves a file under its local-files document root from."""
    rel = relpath.lstrip("/")
    if ".." in rel.split("/"):
        raise ValueError("relative image path must stay inside the document root")
    return "/data/local-files/?d=" + urllib.parse.quote(rel, safe="/")


def choice_result(choice: str) -> dict[str, Any]:
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")
    return {
        "from_name": FINDING,
        "to_name": IMAGE,
        "type": "choices",
        "value": {"choices": [choice]},
    }


def brush_result(mask: NDArray[np.generic], label: str = BRUSH_LABELS[0]) -> dict[str, Any]:
    """A brush region for a 2D PNG-space mask (rows x cols)."""
    height, width = mask.shape
    return {
        "from_name": LESION,
        "to_name": IMAGE,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]},
    }


def prediction(
    model_version: str,
    score: float,
    choice: str | None = None,
    mask: NDArray[np.generic] | None = None,
    config: str = LABEL_CONFIG,
) -> dict[str, Any]:
    """A pre-annotation (class and/or lesion mask), checked against the label config."""
    result: list[dict[str, Any]] = []
    if choice is not None:
        result.append(choice_result(choice))
    if mask is not None and np.any(mask):
        result.append(brush_result(mask))
    pred = {"model_version": str(model_version), "score": float(score), "result": result}
    check_prediction(pred, config)
    return pred


def build_task(
    sample_id: str,
    k: int,
    image_relpath: str,
    predictions: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One task for one rendered slice. ``extra`` must hold non-identifying values only (a
    round's tasks add the context strip, orientation markers, mapping and window: see
    :func:`annotation.rounds.slice_task_data`).

    Label Studio refuses tasks that lack a key its config names, so ``context`` (the neighbour
    strip, the image itself until ``extra`` names one) and ``orientation`` are always there.
    """
    image = local_file_url(image_relpath)
    data: dict[str, Any] = {
        IMAGE: image,
        CONTEXT: image,
        ORIENTATION: "",
        "sample_id": check_sample_id(sample_id),
        "slice_k": int(k),
        "task_key": task_key(sample_id, k),
    }
    if extra:
        data.update(extra)
    return {"data": data, "predictions": [dict(p) for p in predictions]}


def phi_hits(payload: object, phi_values: Iterable[str]) -> list[str]:
    """The PHI values (case-insensitive) found anywhere in a JSON-serialisable payload.

    Used to prove that nothing sent to (or exported from) Label Studio carries patient data.
    """
    text = json.dumps(payload, sort_keys=True, default=str).lower()
    return [v for v in phi_values if v and v.lower() in text]
