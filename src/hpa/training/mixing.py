"""Mixup and CutMix for multilabel batches: targets are mixed with the same weights as pixels."""

from __future__ import annotations

import numpy as np
import torch


def mix_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    mixup_alpha: float,
    cutmix_alpha: float,
    prob: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """With probability `prob`, mix the batch with a shuffled copy of itself (mixup or cutmix)."""
    if prob <= 0 or (mixup_alpha <= 0 and cutmix_alpha <= 0) or rng.random() >= prob:
        return images, targets
    perm = torch.randperm(images.shape[0], device=images.device)
    images = images.float()
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    if use_cutmix:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        images = lam * images + (1 - lam) * images[perm]
    return images, lam * targets + (1 - lam) * targets[perm]
