"""Cell crops: one fixed-size square per cell with the other cells masked out, and their dataset.

A crop is the cell's bounding box grown by `margin` (a fraction of its longer side, clipped to
the image), with the pixels of every *other* cell set to zero (background is kept: a mask that
is a little too tight still shows the cell's own edge), resized keeping its aspect ratio into
`size x size` and centred on zero padding. The same function serves training (through
`hpa.data.cell_cache`) and prediction, so a cell model sees the same kind of crop in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class CellTargets:
    """Per-cell targets read from a CSV (`data.cell_targets`): (ID, cell position) -> 19 floats.

    `listed`: cells per image in a file keyed by mask id (cells.csv), whose positions are ranks
    and so are right only if the file lists every cell of the mask; None for `cell` files.
    """

    path: Path
    values: dict[tuple[str, int], np.ndarray]
    listed: dict[str, int] | None


def read_cell_targets(path: str | Path, option: str = "data.cell_targets") -> CellTargets:
    """Read per-cell targets: columns ID, `cell` (position among the image's cells by ascending
    mask id, as in oof.csv) or `cell_id` (the mask id, as in a synthetic set's cells.csv), and
    either 19 float columns `0`..`18` or `Label` (class ids joined by `|`; an empty Label means
    "not annotated" and the cell is left out)."""
    import pandas as pd

    from hpa.inputs import read_table
    from hpa.labels import NUM_CLASSES, parse_labels, to_multi_hot

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option}={path} does not exist; give a per-cell targets CSV")
    frame = read_table(
        path, f"{option}={path}", "ID, cell and Label or 0..18", dtype={"ID": str, "Label": str}
    )
    columns = [str(c) for c in range(NUM_CLASSES)]
    key = "cell" if "cell" in frame.columns else "cell_id" if "cell_id" in frame.columns else None
    has_values = set(columns) <= set(frame.columns)
    if "ID" not in frame.columns or key is None or not (has_values or "Label" in frame.columns):
        raise InputError(
            f"{option}={path} has columns {list(frame.columns)}: it needs ID, cell (or "
            "cell_id, the mask id) and either Label or the 19 columns 0..18 (hpa.pseudo writes them)"
        )
    listed = None
    if key == "cell_id":  # mask ids -> positions: rank among the image's listed cells
        listed = frame.groupby("ID").size().to_dict()
        frame = frame.assign(cell=frame.groupby("ID")["cell_id"].rank(method="first") - 1)
    if has_values:
        matrix = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        if not np.isfinite(matrix).all() or matrix.min() < 0 or matrix.max() > 1:
            raise InputError(f"{option}={path}: columns 0..18 must hold numbers from 0 to 1")
    else:
        frame = frame[frame["Label"].str.strip() != ""]  # not annotated: keeps its inherited
        matrix = (
            np.stack(
                [
                    to_multi_hot(parse_labels(text, where=f"{path.name} ID {sid}"))
                    for sid, text in zip(frame["ID"], frame["Label"], strict=True)
                ]
            )
            if len(frame)
            else np.zeros((0, NUM_CLASSES), np.float32)
        )
    cell = pd.to_numeric(frame["cell"], errors="coerce").to_numpy()
    if len(cell) and not (np.isfinite(cell).all() and (cell >= 0).all() and (cell % 1 == 0).all()):
        raise InputError(f"{option}={path}: column {key} must hold whole numbers >= 0")
    keys = list(zip(frame["ID"], cell.astype(int).tolist(), strict=True))
    if len(set(keys)) != len(keys):
        raise InputError(f"{option}={path}: a cell is listed twice; keep one row per cell")
    return CellTargets(path, dict(zip(keys, matrix, strict=True)), listed)


class CellDataset(Dataset):
    """(uint8 4 x S x S crop, float target): every cell inherits its image's labels, unless
    `cell_targets` gives that cell its own. `negative_aug` (training only) runs after
    `transform` and may change the target."""

    def __init__(
        self,
        cache: CropSource,
        ids: Sequence[str],
        targets: np.ndarray,
        transform=None,
        cells_per_image: int | None = None,
        seed: int = 0,
        cell_targets: CellTargets | None = None,
        negative_aug=None,
    ):
        self.cache = cache
        self.ids = list(ids)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.transform = transform
        self.negative_aug = negative_aug
        rng = np.random.default_rng(seed)
        index, counts = [], {}
        for i, sid in enumerate(self.ids):
            cells = np.arange(len(cache.load(sid)))
            counts[sid] = len(cells)
            if cells_per_image is not None and len(cells) > cells_per_image:
                # A fixed random subset: images with many cells do not dominate an epoch.
                cells = np.sort(rng.choice(cells, size=cells_per_image, replace=False))
            index.extend((i, int(c)) for c in cells)
        self.index = index
        # Per-item targets only when some cells have their own (self-training, oracle).
        self.cell_targets: torch.Tensor | None = None
        self.replaced = 0
        if cell_targets is not None:
            self._use_cell_targets(cell_targets, counts)

    def _use_cell_targets(self, cell_targets: CellTargets, counts: dict[str, int]) -> None:
        for (sid, cell), _ in cell_targets.values.items():
            n = counts.get(sid)
            listed = cell_targets.listed.get(sid) if cell_targets.listed else None
            if n is not None and (cell >= n or (listed is not None and listed != n)):
                raise InputError(
                    f"data.cell_targets={cell_targets.path} gives cell {cell} of image {sid} "
                    f"({listed or cell + 1} listed) but its mask has {n} cells; targets must "
                    "come from the same masks (e.g. the oof.csv of a run on this data)"
                )
        rows = self.targets[[i for i, _ in self.index]].clone()
        for item, (i, cell) in enumerate(self.index):
            own = cell_targets.values.get((self.ids[i], cell))
            if own is not None:
                rows[item] = torch.from_numpy(own)
                self.replaced += 1
        self.cell_targets = rows

    def __len__(self) -> int:
        return len(self.index)

    def item_keys(self) -> dict[str, list]:
        """What each item is, in order: its image's ID and its cell's position among the image's
        cells (by ascending mask id), e.g. the key columns of out-of-fold files."""
        return {
            "ID": [self.ids[i] for i, _ in self.index],
            "cell": [cell for _, cell in self.index],
        }

    def item_targets(self) -> np.ndarray:
        """N x 19 targets in item order (e.g. for the class-balanced sampler)."""
        if self.cell_targets is not None:
            return self.cell_targets.numpy()
        return self.targets[[i for i, _ in self.index]].numpy()

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_index, cell = self.index[item]
        crop = np.array(self.cache.load(self.ids[image_index])[cell])
        if self.transform is not None:
            crop = self.transform(image=crop)["image"]
        if self.cell_targets is not None:
            target = self.cell_targets[item]
        else:
            target = self.targets[image_index]
        if self.negative_aug is not None:
            crop, target = self.negative_aug(crop, target)
        tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        return tensor, target
