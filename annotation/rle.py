"""Binary masks <-> Label Studio brush RLE.

Label Studio's brush format is its own run-length encoding of an RGBA image (thi.ng rle-pack),
not COCO RLE: a 32-bit value count, a 5-bit word size, four 4-bit run-length widths, then runs
(``1``, a width index, a length, one value) and literal groups (``0``, ...). A mask is a 0/255
image repeated over 4 channels; we decode through the alpha channel, so the round trip is exact.

Encoded and decoded here with numpy, not with the SDK's ``mask2rle`` / ``decode_rle``: those
give the same integers, but importing ``label_studio_sdk.converter`` pulls in nltk (1.5 s of a
round's 7 s ``annotation_tasks``), and its decoder walks a string of '0'/'1' characters bit by
bit. The encoder writes exactly what ``mask2rle`` writes (its quirks included: every run is
written as a run, even of length 1; runs over 65536 are split; the padding is 1..8 zero bits).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

WORD = 8
RLE_SIZES = (3, 4, 8, 16)  # bits of a run length, by the 2-bit index written before it


def _runs(flat: NDArray[np.uint8]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """(lengths, values) of the runs of equal values in ``flat``."""
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), flat.size - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths.astype(np.int64), flat[ends]


def encode_rle(flat: NDArray[np.uint8]) -> list[int]:
    """rle-pack of a 1D uint8 array, as the SDK's ``encode_rle`` writes it (word size 8)."""
    flat = np.asarray(flat, dtype=np.uint8).ravel()
    parts = [f"{flat.size:032b}", f"{WORD - 1:05b}", "".join(f"{s - 1:04b}" for s in RLE_SIZES)]
    lengths, values = _runs(flat)
    for n, v in zip(lengths.tolist(), values.tolist(), strict=True):
        val = f"{v:08b}"
        if n == 1:
            parts.append("000000" + val)  # the SDK writes a single value as a run of one
        elif n <= 8:
            parts.append(f"100{n - 1:03b}{val}")
        elif n <= 16:
            parts.append(f"101{n - 1:04b}{val}")
        elif n <= 256:
            parts.append(f"110{n - 1:08b}{val}")
        else:
            while n > 2**16:
                parts.append(f"111{2**16 - 1:016b}{val}")
                n -= 2**16
            parts.append(f"111{n - 1:016b}{val}")
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # 1..8 zero bits, as the SDK pads
    packed = np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0"))
    return [int(b) for b in packed]


def mask_to_rle(mask: NDArray[np.generic]) -> list[int]:
    """Encode a 2D mask (any dtype; nonzero is foreground) as Label Studio brush RLE."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    image = np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)
    return encode_rle(np.repeat(image.ravel(), 4))  # RGBA: the value in every channel


class _Bits:
    """Big-endian bit reader over bytes."""

    def __init__(self, data: list[int]) -> None:
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.i = 0

    def read(self, n: int) -> int:
        chunk = self.bits[self.i : self.i + n]
        if chunk.size < n:
            raise ValueError("RLE ends early")
        self.i += n
        return int.from_bytes(np.packbits(chunk, bitorder="big").tobytes(), "big") >> ((-n) % 8)


def decode_rle(rle: list[int]) -> NDArray[np.uint8]:
    """rle-pack to the flat uint8 array (what the SDK's ``decode_rle`` returns)."""
    src = _Bits(rle)
    num = src.read(32)
    word = src.read(5) + 1
    sizes = [src.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        run = src.read(1)
        j = i + 1 + src.read(sizes[src.read(2)])
        if run:
            out[i:j] = src.read(word)
            i = j
        else:
            while i < j:
                out[i] = src.read(word)
                i += 1
    return out


def rle_to_mask(rle: list[int], height: int, width: int) -> NDArray[np.bool_]:
    """Decode Label Studio brush RLE into a (height, width) boolean mask."""
    flat = decode_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(
            f"RLE decodes to {flat.size} values, expected {height}x{width}x4 = {height * width * 4}"
        )
    return flat.reshape(height, width, 4)[:, :, 3] > 127
