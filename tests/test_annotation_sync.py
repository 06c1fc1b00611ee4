from __future__ import annotations

import numpy as np
import pytest

from annotation.sync import brush_masks, union_mask
from annotation.tasks import brush_result, choice_result


def test_union_of_brush_regions_ignores_other_controls() -> None:
    a = np.zeros((5, 6), dtype=bool)
    b = np.zeros((5, 6), dtype=bool)
    a[0, :2] = True
    b[4, 5] = True
    results = [choice_result("abnormal"), brush_result(a), brush_result(b)]
    masks = brush_masks(results)
    assert len(masks) == 2 and np.array_equal(masks[0], a)
    assert np.array_equal(union_mask(results, 5, 6), a | b)
    assert not union_mask([choice_result("normal")], 5, 6).any()


def test_bad_regions_fail_loudly() -> None:
    region = brush_result(np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="on a"):
        union_mask([region], 3, 3)
    region["value"]["format"] = "polygon"
    with pytest.raises(ValueError, match="not 'rle'"):
        brush_masks([region])
