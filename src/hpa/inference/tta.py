"""Test-time augmentation: the 8 dihedral transforms of a square and input scales.

Classification outputs do not move with the image, so no transform needs inverting: the
prediction is the mean of the sigmoid over every (transform, scale) pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hpa.errors import InputError
from hpa.tta_names import ALIASES, TRANSFORMS, transform_names

__all__ = ["ALIASES", "DIHEDRAL", "TRANSFORMS", "Augmentation", "augmentations", "transform_names"]

# N x C x H x W: dims 2 (rows) and 3 (columns), in the order of hpa.tta_names.TRANSFORMS.
DIHEDRAL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "hflip": lambda x: x.flip(3),
    "vflip": lambda x: x.flip(2),
    "hvflip": lambda x: x.flip((2, 3)),  # = rotation by 180
    "rot90": lambda x: torch.rot90(x, 1, (2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, (2, 3)),
    "transpose": lambda x: x.transpose(2, 3),  # mirror on the main diagonal
    "transverse": lambda x: torch.rot90(x, 2, (2, 3)).transpose(2, 3),  # the other diagonal
}
assert tuple(DIHEDRAL) == TRANSFORMS


@dataclass(frozen=True)
class Augmentation:
    """One TTA view: a dihedral transform, then a resize of the S-px input to round(scale * S)."""

    name: str
    scale: float = 1.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = DIHEDRAL[self.name](batch)
        if self.scale == 1.0:
            return out
        size = [max(8, round(self.scale * s)) for s in out.shape[2:]]
        # uint8 in, float out: HPANet takes either, and rounding back would only add noise.
        return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)


def augmentations(
    tta: str | int | Sequence[str], scales: Sequence[float] = (1.0,)
) -> list[Augmentation]:
    """Every (transform, scale) pair the prediction averages over."""
    scales = [float(s) for s in scales]
    if not scales or any(not 0.25 <= s <= 4.0 for s in scales):
        raise InputError(f"tta_scales={scales}: use a non-empty list of factors in [0.25, 4]")
    return [Augmentation(n, s) for s in dict.fromkeys(scales) for n in transform_names(tta)]
