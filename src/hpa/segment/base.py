"""The segmentation interface every segmenter implements, and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hpa.errors import InputError


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


def check_image(image: np.ndarray) -> None:
    """Refuse anything but the H x W x 4 uint8 layout of `hpa.data.images.read_sample`."""
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
        raise InputError(
            f"segmenter expects an H x W x 4 uint8 image (red, green, blue, yellow), got "
            f"{image.shape} {image.dtype}; read it with hpa.data.images.read_sample"
        )


def border_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of the instances that touch the image edge."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ids = np.unique(edge)
    return ids[ids > 0]
