"""Datasets: where pixels come from (a `SampleSource`) and what a sample looks like."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.data.images import read_sample


class SampleSource(Protocol):
    """Gives H x W x 4 uint8 images at the training size, by sample ID."""

    description: str

    def load(self, sample_id: str) -> np.ndarray: ...


class RawImages:
    """Decodes the four channel files on every read: slow for full-size PNGs, always available."""

    def __init__(self, image_dir: str | Path, size: int):
        self.image_dir = Path(image_dir)
        self.size = size
        self.description = (
            f"raw images in {self.image_dir} (decoded and resized to {size} px on every read)"
        )

    def load(self, sample_id: str) -> np.ndarray:
        return read_sample(self.image_dir, sample_id, self.size)


class ImageDataset(Dataset):
    """(uint8 4 x H x W tensor, float multi-hot target): normalisation happens on the device."""

    def __init__(self, ids: list[str], targets: np.ndarray, source: SampleSource, transform=None):
        self.ids = list(ids)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def item_keys(self) -> dict[str, list]:
        """What each item is, in order (the key columns of out-of-fold files)."""
        return {"ID": list(self.ids)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.source.load(self.ids[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(channels_first(image))
        return tensor, self.targets[index]


def channels_first(image: np.ndarray) -> np.ndarray:
    """H x W x C -> contiguous C x H x W. cv2.split writes each plane into place, several times
    faster than numpy's strided transpose copy (a visible share of the cached loader's time)."""
    out = np.empty((image.shape[2], *image.shape[:2]), dtype=image.dtype)
    cv2.split(image, list(out))
    return out
