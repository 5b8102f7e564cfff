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

# N x C x H x W: dims 2 (rows) and 3 (columns). The first four are the old flip TTA, in its
# order, so `tta: 4` still means none, hflip, vflip, hvflip; all eight are the dihedral group D4.
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
ALIASES = {
    "d4": list(DIHEDRAL),
    "flips": ["none", "hflip", "vflip", "hvflip"],
    "rot180": ["hvflip"],
}


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


def transform_names(tta: str | int | Sequence[str]) -> list[str]:
    """`d4`, a count 1-8 (in DIHEDRAL's order) or a list of names/aliases -> transform names."""
    if isinstance(tta, bool):
        tta = [str(tta)]
    if isinstance(tta, int):
        names = list(DIHEDRAL)[:tta] if 1 <= tta <= len(DIHEDRAL) else []
    else:
        items = [tta] if isinstance(tta, str) else list(tta)
        names = [n for item in items for n in ALIASES.get(str(item), [str(item)])]
    unknown = [n for n in names if n not in DIHEDRAL]
    if unknown or not names:
        raise InputError(
            f"tta={tta!r}: use d4, a count 1-{len(DIHEDRAL)} or a list of "
            f"{', '.join([*DIHEDRAL, *ALIASES])}"
        )
    return list(dict.fromkeys(names))  # a name twice would only weigh it double


def augmentations(
    tta: str | int | Sequence[str], scales: Sequence[float] = (1.0,)
) -> list[Augmentation]:
    """Every (transform, scale) pair the prediction averages over."""
    scales = [float(s) for s in scales]
    if not scales or any(not 0.25 <= s <= 4.0 for s in scales):
        raise InputError(f"tta_scales={scales}: use a non-empty list of factors in [0.25, 4]")
    return [Augmentation(n, s) for s in dict.fromkeys(scales) for n in transform_names(tta)]
