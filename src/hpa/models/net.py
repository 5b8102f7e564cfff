"""The inference network: normalisation inside, so callers feed raw uint8 images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class HPANet(nn.Module):
    """Backbone with per-channel normalisation built in.

    Input: N x 4 x H x W in 0..255 (uint8 or float); output: N x num_classes logits. Keeping the
    normalisation in the module means the DataLoader moves uint8 (4x fewer bytes) and every
    consumer (validation, export, predict) normalises the same way.
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """0..255 images -> what the backbone takes (for callers of its parts, e.g. CAM, MIL)."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))
