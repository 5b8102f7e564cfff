"""Binary masks <-> the competition's mask text (shared/HPA.md, `encode_binary_mask`)."""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np
from pycocotools import mask as coco_mask

from hpa.errors import InputError


def encode_binary_mask(mask: np.ndarray) -> str:
    """H x W bool -> base64(zlib(COCO compressed RLE counts)), as the competition's reference code."""
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {mask.shape}")
    fortran = np.asfortranarray(mask.astype(np.uint8)[:, :, None])
    counts = coco_mask.encode(fortran)[0]["counts"]
    return base64.b64encode(zlib.compress(counts, zlib.Z_BEST_COMPRESSION)).decode("ascii")


def decode_binary_mask(text: str, height: int, width: int) -> np.ndarray:
    """The inverse of `encode_binary_mask`: mask text -> H x W bool."""
    try:
        counts = zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error, ValueError) as err:
        raise InputError(f"mask {text[:24]!r}... is not base64(zlib(RLE)): {err}") from None
    rle = {"size": [int(height), int(width)], "counts": counts}
    return coco_mask.decode(rle).astype(bool)
