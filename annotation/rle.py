"""Binary masks <-> Label Studio brush RLE.

Label Studio's brush format is its own run-length encoding of an RGBA image (thi.ng rle-pack),
not COCO RLE. We encode with the SDK's ``mask2rle`` (a 0/255 uint8 image, repeated over 4
channels) and decode with ``decode_rle`` and the alpha channel: the round trip is exact.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def mask_to_rle(mask: NDArray[np.generic]) -> list[int]:
    """Encode a 2D mask (any dtype; nonzero is foreground) as Label Studio brush RLE."""
    from label_studio_sdk.converter.brush import mask2rle

    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    image = np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)
    return [int(v) for v in mask2rle(image)]


def rle_to_mask(rle: list[int], height: int, width: int) -> NDArray[np.bool_]:
    """Decode Label Studio brush RLE into a (height, width) boolean mask."""
    from label_studio_sdk.converter.brush import decode_rle

    flat = np.asarray(decode_rle(rle), dtype=np.uint8)
    if flat.size != height * width * 4:
        raise ValueError(
            f"RLE decodes to {flat.size} values, expected {height}x{width}x4 = {height * width * 4}"
        )
    return flat.reshape(height, width, 4)[:, :, 3] > 127
