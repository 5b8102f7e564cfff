"""A user's own loss, optimizer, segmenter and augmentation step, outside src/: what tests/test_extending.py names in
YAML files of a folder of its own and runs through `hydra.searchpath`, as docs/extending.md says.

Each leaves a trace that its own code ran: the loss and the segmenter append a line to a file
named in their YAML; the optimizer is SGD with momentum, whose state a checkpoint shows.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hpa.segment.base import Segmentation, border_ids


class TracedBCE(nn.Module):
    """Plain BCE on logits, times `scale`; notes each call in `trace`."""

    def __init__(self, trace: str, scale: float) -> None:
        super().__init__()
        self.trace, self.scale = Path(trace), scale

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.trace.open("a") as f:
            f.write(f"loss {tuple(logits.shape)}\n")
        return self.scale * F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


class DarkGreen(A.ImageOnlyTransform):
    """An augmentation step of the user's: the green channel (the protein) scaled by `factor`."""

    def __init__(self, factor: float, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.factor = factor

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        out = img.copy()
        out[..., 1] = (out[..., 1] * self.factor).astype(img.dtype)
        return out


def momentum_sgd(params, lr: float, momentum: float) -> torch.optim.Optimizer:
    """An optimizer "choice" of the user's: a function of the parameters (the YAML's _partial_)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


class QuadrantSegmenter:
    """Four cells: the image's quadrants, each its own cell; notes each image in `trace`."""

    def __init__(self, trace: str) -> None:
        self.trace = Path(trace)

    def segment(self, image: np.ndarray) -> Segmentation:
        with self.trace.open("a") as f:
            f.write(f"segment {image.shape[0]}x{image.shape[1]}\n")
        cells = quadrants(image.shape[:2])
        return Segmentation(cells=cells, nuclei=cells.copy(), border=border_ids(cells))


def quadrants(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    cells = np.zeros((height, width), np.int32)
    cells[: height // 2, : width // 2] = 1
    cells[: height // 2, width // 2 :] = 2
    cells[height // 2 :, : width // 2] = 3
    cells[height // 2 :, width // 2 :] = 4
    return cells
