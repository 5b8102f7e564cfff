"""Released hpacellseg (0.1.8) on today's libraries, without editing the installed package.

hpacellseg was written for scikit-image 0.16 and numpy < 1.24, and its post-processing sizes are
absolute pixel counts for ~2048 px images. Nothing here edits its files; we work on the imported
modules in memory:

- `patch_rescale`: `cellsegmentator.transform` becomes a proxy of `skimage.transform` whose
  `rescale` turns `multichannel=True` (removed in scikit-image 0.19) into `channel_axis=-1`.
- `scaled_label_cell`: a copy of `utils.label_cell` (the same code object) that sees its own
  globals: every pixel size scaled to the image, `np.bool` (gone in numpy 1.24-1.26) defined,
  and scikit-image 0.26's `max_size` used where `min_size` is deprecated.
- `square_safe`: a `CellSegmentator` subclass whose predictions come back H x W for non-square
  images too (hpacellseg hands cv2.resize (H, W) where it wants (W, H)).
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np

# label_cell's sizes (2,500 px nuclei, 5,500 px cells, holes of 1,000 px, a closing disk of 6 px)
# were tuned on HPA images of this side.
REFERENCE_SIZE = 2048
# label_cell's two `__fill_holes` passes each take the outer pixel off every cell (find_boundaries
# marks both sides of an edge): a 2 px rim at whatever scale it runs.
RIM_LOST = 2


class _RescaleShim:
    """`skimage.transform` with a `rescale` that still takes the old `multichannel` flag."""

    def __init__(self, transform: Any) -> None:
        self._transform = transform

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transform, name)

    def rescale(self, image, scale, *args, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return self._transform.rescale(image, scale, *args, **kwargs)


def patch_rescale(module: types.ModuleType) -> None:
    """Give `module.transform.rescale` back its `multichannel` flag where scikit-image dropped it."""
    transform = getattr(module, "transform", None)
    if transform is None or isinstance(transform, _RescaleShim):
        return
    rescale = getattr(transform, "rescale", None)
    if rescale is None or "multichannel" in inspect.signature(rescale).parameters:
        return
    module.transform = _RescaleShim(transform)


class _WithBool(types.ModuleType):
    """numpy plus the `np.bool` alias that numpy 1.24-1.26 lack (numpy 2 has it again)."""

    bool = bool

    def __init__(self, numpy: types.ModuleType) -> None:
        super().__init__(numpy.__name__)
        self._numpy = numpy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._numpy, name)


def _sized(function: Callable, scale: float) -> Callable:
    """remove_small_objects / remove_small_holes with their size x `scale` ("smaller than")."""
    new_api = "max_size" in inspect.signature(function).parameters

    @functools.wraps(function)
    def wrapper(ar, size=64, connectivity=1, **kwargs):
        size = max(1, round(size * scale))
        if new_api:  # scikit-image >= 0.26: max_size removes "smaller than or equal to"
            return function(ar, max_size=size - 1, connectivity=connectivity, **kwargs)
        return function(ar, size, connectivity, **kwargs)

    return wrapper


def _scaled_disk(disk: Callable, linear: float) -> Callable:
    @functools.wraps(disk)
    def wrapper(radius, *args, **kwargs):
        return disk(max(1, round(radius * linear)), *args, **kwargs)

    return wrapper


def size_scale(height: int, width: int, reference_size: int = REFERENCE_SIZE) -> float:
    """Area factor for label_cell's pixel sizes: (longest side / reference_size) ** 2.

    HPA images are square fields of view (1728, 2048 or 3072 px), so this is the image area over
    a 2048 px image's. The longest side, not H x W, so that a crop keeps the sizes of its image.
    """
    return (max(height, width) / reference_size) ** 2


def scaled_label_cell(label_cell: Callable, area_scale: float) -> Callable:
    """`label_cell` run as it is, but with its pixel sizes x `area_scale` (radii x the root).

    Its nested helpers are created from the same globals, so they see the same sizes.
    """
    names = dict(label_cell.__globals__)
    for name in ("remove_small_objects", "remove_small_holes"):
        if name in names:
            names[name] = _sized(names[name], area_scale)
    if "disk" in names:
        names["disk"] = _scaled_disk(names["disk"], math.sqrt(area_scale))
    if isinstance(names.get("np"), types.ModuleType):
        names["np"] = _WithBool(names["np"])
    copy = types.FunctionType(
        label_cell.__code__,
        names,
        label_cell.__name__,
        label_cell.__defaults__,
        label_cell.__closure__,
    )
    copy.__kwdefaults__ = label_cell.__kwdefaults__
    copy.__qualname__ = label_cell.__qualname__
    copy.__doc__ = label_cell.__doc__
    return copy


def restore_rim(cells: np.ndarray, post_scale: float) -> np.ndarray:
    """Cells labelled at `post_scale` with the rim full-scale label_cell would have left them.

    label_cell strips RIM_LOST px at the scale it runs: RIM_LOST / post_scale px of the full
    image at reduced scale, against RIM_LOST at full scale. Growing each cell back into the
    background by the difference (measured in working pixels) evens that out; touching cells
    keep a gap, as at full scale.
    """
    grow = RIM_LOST * (1.0 - post_scale)
    if grow <= 0:
        return cells
    from skimage.segmentation import expand_labels

    return expand_labels(cells, distance=grow)


def square_safe(cls: type) -> type:
    """A subclass of hpacellseg's `CellSegmentator` that restores non-square predictions right.

    `_restore_scaling_padding` resizes to `(target_shape[0], target_shape[1])`, which cv2 reads
    as (width, height): a transposed size unless the image is square. We hand it the shape the
    other way round, and check what comes back, so a fixed hpacellseg keeps working as well.
    """
    if not hasattr(cls, "_restore_scaling_padding"):
        return cls

    class SquareSafeCellSegmentator(cls):
        def _restore_scaling_padding(self, prediction):
            shape = tuple(self.target_shape)
            rows, cols = shape[:2]
            if rows == cols:
                return super()._restore_scaling_padding(prediction)
            self.target_shape = (cols, rows, *shape[2:])
            try:
                restored = super()._restore_scaling_padding(prediction)
            finally:
                self.target_shape = shape
            if restored.shape[:2] != (rows, cols):  # a release that resizes right already
                restored = super()._restore_scaling_padding(prediction)
            return restored

    SquareSafeCellSegmentator.__name__ = SquareSafeCellSegmentator.__qualname__ = (
        f"SquareSafe{cls.__name__}"
    )
    return SquareSafeCellSegmentator
