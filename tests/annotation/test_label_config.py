from __future__ import annotations

import numpy as np
import pytest

from annotation.label_config import (
    CHOICES,
    LABEL_CONFIG,
    InvalidPrediction,
    check_prediction,
    prediction_errors,
)
from annotation.rle import mask_to_rle


def _choice(value: str, from_name: str = "finding") -> dict[str, object]:
    return {
        "from_name": from_name,
        "to_name": "image",
        "type": "choices",
        "value": {"choices": [value]},
    }


def test_config_parses_and_names_the_controls() -> None:
    from label_studio_sdk.label_interface import LabelInterface

    li = LabelInterface(LABEL_CONFIG)
    names = {c.name for c in li.controls}
    assert names == {"finding", "lesion"}
    assert list(CHOICES) == ["normal", "abnormal", "unreadable"]


@pytest.mark.parametrize("choice", CHOICES)
def test_valid_choices_pass(choice: str) -> None:
    assert (
        prediction_errors({"model_version": "m", "score": 0.5, "result": [_choice(choice)]}) == []
    )


def test_valid_brush_passes() -> None:
    mask = np.zeros((8, 9), dtype=bool)
    mask[2:5, 3:6] = True
    region = {
        "from_name": "lesion",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": 9,
        "original_height": 8,
        "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["lesion"]},
    }
    check_prediction({"model_version": "m", "score": 0.9, "result": [region]})


@pytest.mark.parametrize(
    "pred",
    [
        {"model_version": "m", "score": 0.5, "result": [_choice("maybe")]},
        {"model_version": "m", "score": 0.5, "result": [_choice("normal", from_name="nope")]},
        {"model_version": "m", "score": 1.5, "result": []},
    ],
)
def test_mismatches_are_refused(pred: dict[str, object]) -> None:
    assert prediction_errors(pred)
    with pytest.raises(InvalidPrediction):
        check_prediction(pred)
