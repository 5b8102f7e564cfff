"""Cell crops: one fixed-size square per cell with the other cells masked out, and their dataset.

A crop is the cell's bounding box grown by `margin` (a fraction of its longer side, clipped to
the image), with the pixels of every *other* cell set to zero (background is kept: a mask that
is a little too tight still shows the cell's own edge), resized keeping its aspect ratio into
`size x size` and centred on zero padding. The same function serves training (through
`hpa.data.cell_cache`) and prediction, so a cell model sees the same kind of crop in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from hpa.errors import InputError


def crop_cells(
    image: np.ndarray, labels: np.ndarray, size: int, margin: float, max_scale: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N x size x size x C uint8 crops, N cell ids) for every cell of `labels`, by ascending id.

    `max_scale` caps the resize factor: `size / image side` keeps cells at the scale an
    image-level model saw them in training instead of filling the crop.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    boxes = ndi.find_objects(labels)
    ids = [i for i, box in enumerate(boxes, start=1) if box is not None]
    crops = np.zeros((len(ids), size, size, image.shape[2]), dtype=np.uint8)
    height, width = labels.shape
    for n, cell_id in enumerate(ids):
        rows, cols = boxes[cell_id - 1]
        pad = int(round(margin * max(rows.stop - rows.start, cols.stop - cols.start)))
        y0, y1 = max(0, rows.start - pad), min(height, rows.stop + pad)
        x0, x1 = max(0, cols.start - pad), min(width, cols.stop + pad)
        region = labels[y0:y1, x0:x1]
        patch = np.where(((region == 0) | (region == cell_id))[..., None], image[y0:y1, x0:x1], 0)
        crops[n] = fit_square(patch.astype(np.uint8, copy=False), size, max_scale)
    return crops, np.asarray(ids, dtype=np.int64)


def fit_square(patch: np.ndarray, size: int, max_scale: float | None = None) -> np.ndarray:
    """Resize keeping the aspect ratio so the longer side is `size` (or by `max_scale` if that is
    smaller), centred on zero padding."""
    h, w = patch.shape[:2]
    scale = size / max(h, w) if max_scale is None else min(size / max(h, w), max_scale)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(patch, (nw, nh), interpolation=interp).reshape(nh, nw, *patch.shape[2:])
    out = np.zeros((size, size, *patch.shape[2:]), dtype=patch.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def read_instance_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A uint16 instance mask PNG at the image's size (nearest-neighbour if saved smaller)."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise InputError(f"cannot read cell mask {path}: expected a single-channel instance PNG")
    if labels.shape != tuple(shape):
        labels = cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return labels


class CropSource(Protocol):
    """Gives one image's N x S x S x 4 uint8 crops by sample ID (e.g. a `CellCache`)."""

    def load(self, sample_id: str) -> np.ndarray: ...


class CellDataset(Dataset):
    """(uint8 4 x S x S crop, float multi-hot target): every cell inherits its image's labels."""

    def __init__(
        self,
        cache: CropSource,
        ids: Sequence[str],
        targets: np.ndarray,
        transform=None,
        cells_per_image: int | None = None,
        seed: int = 0,
    ):
        self.cache = cache
        self.ids = list(ids)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.transform = transform
        rng = np.random.default_rng(seed)
        index = []
        for i, sid in enumerate(self.ids):
            cells = np.arange(len(cache.load(sid)))
            if cells_per_image is not None and len(cells) > cells_per_image:
                # A fixed random subset: images with many cells do not dominate an epoch.
                cells = np.sort(rng.choice(cells, size=cells_per_image, replace=False))
            index.extend((i, int(c)) for c in cells)
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def item_keys(self) -> dict[str, list]:
        """What each item is, in order: its image's ID and its cell's position among the image's
        cells (by ascending mask id), e.g. the key columns of out-of-fold files."""
        return {
            "ID": [self.ids[i] for i, _ in self.index],
            "cell": [cell for _, cell in self.index],
        }

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_index, cell = self.index[item]
        crop = np.array(self.cache.load(self.ids[image_index])[cell])
        if self.transform is not None:
            crop = self.transform(image=crop)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        return tensor, self.targets[image_index]
