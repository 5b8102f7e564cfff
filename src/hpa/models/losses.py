"""Multilabel losses: BCE and sigmoid focal loss (torchvision's)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import sigmoid_focal_loss

from hpa.errors import InputError


class FocalLoss(nn.Module):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(
            logits, targets, alpha=self.alpha, gamma=self.gamma, reduction="mean"
        )


def build_loss(name: str, **kwargs) -> nn.Module:
    if name == "bce":
        return nn.BCEWithLogitsLoss(**kwargs)
    if name == "focal":
        return FocalLoss(**kwargs)
    raise InputError(f"unknown loss {name!r}; choose one of: bce, focal")
