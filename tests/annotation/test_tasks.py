from __future__ import annotations

import numpy as np
import pytest

from annotation.label_config import InvalidPrediction
from annotation.rle import rle_to_mask
from annotation.tasks import (
    build_task,
    check_sample_id,
    local_file_url,
    phi_hits,
    prediction,
    task_key,
)


@pytest.mark.parametrize(
    "bad", ["DOE^JOHN", "1.2.840.113619.2.55", "a/b", "", "x" * 65, "Jane Doe"]
)
def test_identifying_looking_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        check_sample_id(bad)
    assert bad not in str(err.value) or bad == ""


def test_task_shape() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:5] = True
    pred = prediction("proposal-v1", 0.42, choice="abnormal", mask=mask)
    task = build_task("S-0007", 3, "round-1/images/S-0007_k0003.png", [pred])
    assert task["data"] == {
        "image": "/data/local-files/?d=round-1/images/S-0007_k0003.png",
        "context": "/data/local-files/?d=round-1/images/S-0007_k0003.png",
        "orientation": "",
        "sample_id": "S-0007",
        "slice_k": 3,
        "task_key": "S-0007:k0003",
    }
    (p,) = task["predictions"]
    assert (p["model_version"], p["score"]) == ("proposal-v1", 0.42)
    choice, brush = p["result"]
    assert choice["value"] == {"choices": ["abnormal"]}
    assert (brush["original_height"], brush["original_width"]) == (6, 8)
    assert np.array_equal(rle_to_mask(brush["value"]["rle"], 6, 8), mask)


def test_empty_mask_sends_no_region_and_bad_values_fail() -> None:
    assert prediction("m", 0.1, choice="normal", mask=np.zeros((3, 3)))["result"][0]["type"] == (
        "choices"
    )
    assert len(prediction("m", 0.1, mask=np.zeros((3, 3)))["result"]) == 0
    with pytest.raises(ValueError):
        prediction("m", 0.5, choice="maybe")
    with pytest.raises(InvalidPrediction):
        prediction("m", 7.0, choice="normal")


def test_urls_and_keys() -> None:
    assert local_file_url("/round-2/a b.png") == "/data/local-files/?d=round-2/a%20b.png"
    with pytest.raises(ValueError):
        local_file_url("../restricted/x.png")
    assert task_key("S1", 12) == "S1:k0012"


def test_phi_hits() -> None:
    payload = {"data": {"sample_id": "S-1", "note": "seen by Dr. Smith"}}
    assert phi_hits(payload, ["SMITH", "Doe", ""]) == ["SMITH"]
    assert phi_hits(payload, ["Doe"]) == []
