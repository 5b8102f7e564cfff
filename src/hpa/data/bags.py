"""Bags of cells (`data=bags`): one sample = up to N cell crops of one image, with its labels.

The crops are the cell cache's (hpa.data.cell_cache, the same crops `data=cells` trains on).
An image with more than N cells gives a random N of them, drawn anew every time in training and
a fixed draw in validation; one with fewer is padded with blank crops that the mask marks as
padding. An image without any cell (a segmentation that found none) gives one blank crop marked
real, so that every bag has something to pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.data.cells import CellDataset, CropSource


class BagDataset(Dataset):
    """(uint8 N x 4 x S x S crops, float multi-hot target, bool N mask: True = a real cell)."""

    def __init__(
        self,
        cache: CropSource,
        ids: Sequence[str],
        targets: np.ndarray,
        bag_size: int,
        transform=None,
        train: bool = True,
        seed: int = 0,
    ):
        if bag_size < 1:
            raise ValueError(f"bag_size={bag_size}: need at least 1")
        self.cache = cache
        self.ids = list(ids)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.bag_size, self.transform, self.train, self.seed = bag_size, transform, train, seed

    def __len__(self) -> int:
        return len(self.ids)

    def item_keys(self) -> dict[str, list]:
        """What each item is, in order (the key columns of out-of-fold files): its image's ID."""
        return {"ID": list(self.ids)}

    def item_targets(self) -> np.ndarray:
        """N x 19 targets in item order (e.g. for the class-balanced sampler)."""
        return self.targets.numpy()

    def cells(self) -> CellDataset:
        """Every cell of these images, one crop per item (each inheriting its image's labels):
        what the exported per-cell model of a bag run scores, e.g. for its out-of-fold file."""
        return CellDataset(self.cache, self.ids, self.targets.numpy(), self.transform)

    def _pick(self, item: int, n: int) -> np.ndarray:
        if n <= self.bag_size:
            return np.arange(n)
        if self.train:  # torch's generator: seeded per DataLoader worker by Lightning
            return np.sort(torch.randperm(n)[: self.bag_size].numpy())
        rng = np.random.default_rng((self.seed, item))
        return np.sort(rng.choice(n, size=self.bag_size, replace=False))

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops = self.cache.load(self.ids[item])
        chosen = self._pick(item, len(crops))
        size, channels = crops.shape[1], crops.shape[3]
        bag = np.zeros((self.bag_size, channels, size, size), np.uint8)
        mask = np.zeros(self.bag_size, bool)
        for slot, cell in enumerate(chosen):
            crop = np.array(crops[cell])
            if self.transform is not None:
                crop = self.transform(image=crop)["image"]
            bag[slot] = crop.transpose(2, 0, 1)
        mask[: max(1, len(chosen))] = True
        return torch.from_numpy(bag), self.targets[item], torch.from_numpy(mask)

    def preview(self, item: int) -> np.ndarray:
        """4 x H x W: the bag's real crops side by side in a square grid (for plots)."""
        bag, _, mask = self[item]
        crops = bag[mask].numpy()
        cols = int(np.ceil(np.sqrt(len(crops))))
        rows = int(np.ceil(len(crops) / cols))
        channels, size = crops.shape[1], crops.shape[2]
        grid = np.zeros((channels, rows * size, cols * size), np.uint8)
        for i, crop in enumerate(crops):
            r, c = divmod(i, cols)
            grid[:, r * size : (r + 1) * size, c * size : (c + 1) * size] = crop
        return grid
