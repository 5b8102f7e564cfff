"""The segmentation interface every segmenter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Segmentation:
    """Full-resolution instance labels (0 = background, 1..n = cells) for one image."""

    cells: np.ndarray  # H x W int32 cell instances
    nuclei: np.ndarray  # H x W int32, nucleus i belongs to cell i (0 where none)
    border: np.ndarray  # sorted int array: ids of cells cut by the image border

    @property
    def cell_ids(self) -> np.ndarray:
        ids = np.unique(self.cells)
        return ids[ids > 0]


class Segmenter(Protocol):
    """Image (H x W x 4 uint8, channels red, green, blue, yellow, full resolution) -> Segmentation."""

    def segment(self, image: np.ndarray) -> Segmentation: ...
