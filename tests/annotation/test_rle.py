from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from annotation.rle import mask_to_rle, rle_to_mask


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_round_trip_is_exact(mask: np.ndarray) -> None:
    back = rle_to_mask(mask_to_rle(mask), *mask.shape)
    assert back.dtype == np.bool_
    assert np.array_equal(back, mask)


def test_round_trip_realistic_slice() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :200]
    mask = (yy - 120) ** 2 + (xx - 80) ** 2 < 30**2
    mask ^= rng.random(mask.shape) < 0.01  # ragged boundary and speckle
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), 256, 200), mask)


def test_any_nonzero_is_foreground() -> None:
    labels = np.array([[0, 1, 2], [0, 0, 255]], dtype=np.int64)
    assert rle_to_mask(mask_to_rle(labels), 2, 3).tolist() == [[0, 1, 1], [0, 0, 1]]


def test_wrong_geometry_is_an_error() -> None:
    rle = mask_to_rle(np.ones((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="expected 5x5x4"):
        rle_to_mask(rle, 5, 5)
    with pytest.raises(ValueError, match="2D"):
        mask_to_rle(np.ones((2, 2, 2), dtype=bool))
