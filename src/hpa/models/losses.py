"""Multilabel losses: BCE and sigmoid focal loss, with optional `pos_weight` and label smoothing.

The `loss` config group (configs/loss/*.yaml) names one of them by its `_target_`; a user's own
loss is any nn.Module `(logits, targets) -> scalar` named the same way (docs/extending.md).

Both take soft targets (mixup, label smoothing, self-training's per-cell targets). `pos_weight`
scales the positive term of every class (`auto`: from the training set's class frequencies,
see `auto_pos_weight`); it is a non-persistent buffer, so checkpoints and resumes keep the same
state_dict keys whether it is set or not. Label smoothing `s` turns a target y into
y * (1 - s) + s / 2 before the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hpa.errors import InputError
from hpa.labels import NUM_CLASSES


def auto_pos_weight(frequencies: Sequence[float] | np.ndarray, max_weight: float) -> np.ndarray:
    """Per class: negatives / positives of the training set, clipped to [1, max_weight].

    A class rarer than half the samples gets its positives weighted up to balance its negatives;
    a class absent from the training set (frequency 0) gets `max_weight`.
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ratio = np.where(freq > 0, (1.0 - freq) / np.maximum(freq, 1e-12), np.inf)
    return np.clip(ratio, 1.0, max_weight).astype(np.float32)


class _MultilabelLoss(nn.Module):
    """`pos_weight`: null, auto (the module sets it from the training set's class frequencies,
    clipped to [1, pos_weight_max]) or a list of 19 positive numbers."""

    def __init__(self, pos_weight, pos_weight_max: float, label_smoothing: float):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise InputError(f"loss.label_smoothing={label_smoothing}: use a number in [0, 1)")
        self.label_smoothing = float(label_smoothing)
        self.pos_weight_auto = pos_weight == "auto"
        self.pos_weight_max = float(pos_weight_max)
        weight = _pos_weight_value(pos_weight)
        weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("pos_weight", weight, persistent=False)

    def set_pos_weight(self, pos_weight: Sequence[float] | np.ndarray) -> None:
        """Set per-class positive weights after construction (`pos_weight=auto` knows them once
        the training set is there)."""
        device = self.pos_weight.device if self.pos_weight is not None else None
        self.pos_weight = torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32).to(device)

    def smooth(self, targets: torch.Tensor) -> torch.Tensor:
        s = self.label_smoothing
        return targets * (1.0 - s) + s / 2.0 if s > 0 else targets

    def bce(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Elementwise BCE on logits with this loss's pos_weight (targets already smoothed)."""
        weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=weight, reduction="none"
        )


class BCELoss(_MultilabelLoss):
    """Mean binary cross-entropy over samples and classes."""

    def __init__(self, pos_weight=None, pos_weight_max: float = 10.0, label_smoothing: float = 0.0):
        super().__init__(pos_weight, pos_weight_max, label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, self.smooth(targets.to(logits.dtype))).mean()


class FocalLoss(_MultilabelLoss):
    """torchvision's sigmoid focal loss (same formula, mean reduction) with pos_weight in its
    cross-entropy term: alpha_t * (1 - p_t)^gamma * bce."""

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        pos_weight=None,
        pos_weight_max: float = 10.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__(pos_weight, pos_weight_max, label_smoothing)
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = self.smooth(targets.to(logits.dtype))
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = self.bce(logits, targets) * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return loss.mean()


def _pos_weight_value(pos_weight) -> list[float] | None:
    """null -> None; auto -> ones until the training set sets them; a list of 19 -> itself."""
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != "auto":
            raise InputError(f"loss.pos_weight={pos_weight!r}: use null, auto or a list of 19")
        return [1.0] * NUM_CLASSES
    values = list(pos_weight)
    if len(values) != NUM_CLASSES or not all(float(v) > 0 for v in values):
        raise InputError(
            f"loss.pos_weight has {len(values)} values: give {NUM_CLASSES} positive numbers "
            "(one per class), auto or null"
        )
    return [float(v) for v in values]


def build_loss(name: str, **options) -> nn.Module:
    """hpa's loss `name` (configs/loss/NAME.yaml: bce, focal) with `options` over its defaults,
    as `loss=NAME loss.KEY=VALUE` builds it."""
    from hpa.build import build_option

    return build_option("loss", name, **options)
