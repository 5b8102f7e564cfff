"""Datasets: where pixels come from (a `SampleSource`) and what a sample looks like."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.data.images import read_sample
from hpa.errors import InputError
from hpa.labels import NEGATIVE


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


class NegativeAugment:
    """Label-changing augmentation (`data.negative_aug`): with probability `p`, the green
    (protein) channel is multiplied by `scale` (near dark) and the target becomes Negative only,
    as a cell or image without protein signal is Negative whatever its image was labelled.
    Draws from numpy's global generator, which Lightning seeds per DataLoader worker."""

    GREEN = 1  # channel order: red, green, blue, yellow

    def __init__(self, p: float = 0.0, scale: float = 0.05):
        if not 0.0 <= p <= 1.0 or not 0.0 <= scale <= 1.0:
            raise InputError(
                f"data.negative_aug p={p}, scale={scale}: use fractions from 0 to 1 (p=0 is off)"
            )
        self.p, self.scale = float(p), float(scale)

    def __call__(self, image: np.ndarray, target: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """H x W x C uint8 image and its target -> the same, or the darkened Negative pair."""
        if self.p <= 0 or np.random.random() >= self.p:
            return image, target
        image = np.array(image)  # a copy: the source may be a read-only cache
        green = image[..., self.GREEN].astype(np.float32) * self.scale
        image[..., self.GREEN] = np.round(green).astype(image.dtype)
        negative = torch.zeros_like(target)
        negative[NEGATIVE] = 1.0
        return image, negative


def negative_augment(options: Mapping[str, float] | None) -> NegativeAugment | None:
    """The `data.negative_aug` mapping -> the augmentation, or None when off (null or p=0)."""
    if not options or not options.get("p"):
        return None
    return NegativeAugment(**options)


class ImageDataset(Dataset):
    """(uint8 4 x H x W tensor, float multi-hot target): normalisation happens on the device.

    `negative_aug` (training only) runs after `transform` and may change the target."""

    def __init__(
        self,
        ids: list[str],
        targets: np.ndarray,
        source: SampleSource,
        transform=None,
        negative_aug: NegativeAugment | None = None,
    ):
        self.ids = list(ids)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.source = source
        self.transform = transform
        self.negative_aug = negative_aug

    def item_targets(self) -> np.ndarray:
        """N x 19 targets in item order (e.g. for the class-balanced sampler)."""
        return self.targets.numpy()

    def __len__(self) -> int:
        return len(self.ids)

    def item_keys(self) -> dict[str, list]:
        """What each item is, in order (the key columns of out-of-fold files)."""
        return {"ID": list(self.ids)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.source.load(self.ids[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        target = self.targets[index]
        if self.negative_aug is not None:
            image, target = self.negative_aug(image, target)
        tensor = torch.from_numpy(channels_first(image))
        return tensor, target


def channels_first(image: np.ndarray) -> np.ndarray:
    """H x W x C -> contiguous C x H x W. cv2.split writes each plane into place, several times
    faster than numpy's strided transpose copy (a visible share of the cached loader's time)."""
    out = np.empty((image.shape[2], *image.shape[:2]), dtype=image.dtype)
    cv2.split(image, list(out))
    return out
