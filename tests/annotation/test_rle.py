from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from annotation.rle import decode_rle, mask_to_rle, rle_to_mask


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


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_the_same_integers_as_the_sdk(mask: np.ndarray) -> None:
    """Our numpy codec is the SDK's, integer for integer (what Label Studio stores)."""
    from label_studio_sdk.converter.brush import decode_rle as sdk_decode
    from label_studio_sdk.converter.brush import mask2rle

    rle = mask_to_rle(mask)
    assert rle == [int(v) for v in mask2rle(np.where(mask, 255, 0).astype(np.uint8))]
    assert np.array_equal(decode_rle(rle), sdk_decode(rle))


def test_long_runs_and_literal_groups_as_the_sdk_reads_them() -> None:
    from label_studio_sdk.converter.brush import decode_rle as sdk_decode
    from label_studio_sdk.converter.brush import mask2rle

    big = np.zeros((300, 300), dtype=bool)  # 360000 values: runs split at 65536
    big[150, 10:200] = True
    assert mask_to_rle(big) == [int(v) for v in mask2rle(np.where(big, 255, 0).astype(np.uint8))]
    assert np.array_equal(rle_to_mask(mask_to_rle(big), 300, 300), big)
    # a literal group, as the browser's encoder writes one: 0, width index 0, 3 values
    bits = f"{3:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += "0" + "00" + f"{2:03b}" + "".join(f"{v:08b}" for v in (7, 0, 255))
    bits += "0" * (-len(bits) % 8)
    rle = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert decode_rle(rle).tolist() == [7, 0, 255] == sdk_decode(rle).tolist()


def test_encoding_does_not_import_the_sdk_converter() -> None:
    """The converter imports nltk: a second and a half of every annotation_tasks run."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from annotation.rle import mask_to_rle, rle_to_mask; "
        "rle_to_mask(mask_to_rle(np.eye(4)), 4, 4); "
        "print('label_studio_sdk.converter' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
