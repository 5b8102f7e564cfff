"""Binary masks <-> the competition's mask text (shared/HPA.md, `encode_binary_mask`)."""

from __future__ import annotations

import base64
import binascii
import math
import zlib

import numpy as np
from pycocotools import mask as coco_mask

from hpa.errors import InputError
from hpa.inputs import check_decoded_size


def encode_binary_mask(mask: np.ndarray) -> str:
    """H x W bool -> base64(zlib(COCO compressed RLE counts)), as the competition's reference code."""
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {mask.shape}")
    fortran = np.asfortranarray(mask.astype(np.uint8)[:, :, None])
    counts = coco_mask.encode(fortran)[0]["counts"]
    return base64.b64encode(zlib.compress(counts, zlib.Z_BEST_COMPRESSION)).decode("ascii")


def rle_counts(counts: bytes) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString, in Python)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts):
                raise ValueError("the last run length is cut off")
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def max_counts_bytes(height: int, width: int) -> int:
    """The longest RLE counts string an H x W mask can have: at most H*W+1 runs, each run length
    (< 2**bits) written in 5-bit groups."""
    pixels = max(1, int(height) * int(width))
    return (pixels + 1) * (pixels.bit_length() // 5 + 2)


def decode_binary_mask(text: str, height: int, width: int) -> np.ndarray:
    """The inverse of `encode_binary_mask`: mask text -> H x W bool.

    The text does not store the mask's size, only run lengths; they must add up to exactly
    H x W pixels. A mask encoded at another size is an error (pycocotools would decode it into
    garbage, or fail), named with both sizes.
    """
    limit = max_counts_bytes(height, width)
    try:
        inflater = zlib.decompressobj()
        # Bounded: a crafted row must not inflate to gigabytes before its size is checked.
        counts = inflater.decompress(base64.b64decode(text, validate=True), limit + 1)
        check_decoded_size(len(counts), limit, f"mask {text[:24]!r}...")
        runs = rle_counts(counts)
    except (binascii.Error, zlib.error, ValueError) as err:
        raise InputError(f"mask {text[:24]!r}... is not base64(zlib(RLE)): {err}") from None
    pixels, want = sum(runs), int(height) * int(width)
    if pixels != want or min(runs, default=0) < 0:
        side = math.isqrt(pixels) if pixels > 0 else 0
        guess = f", e.g. a {side}x{side} mask" if side * side == pixels and pixels else ""
        raise InputError(
            f"mask {text[:24]!r}... covers {pixels} pixels{guess}, but the row's image is "
            f"{int(height)}x{int(width)} ({want} pixels); encode masks at the full image size"
        )
    rle = {"size": [int(height), int(width)], "counts": counts}
    return coco_mask.decode(rle).astype(bool)
