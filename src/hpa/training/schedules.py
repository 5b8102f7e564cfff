"""Learning-rate schedules of the `scheduler` config group, stepped after every optimizer step.

A schedule is a function `(optimizer, total_steps, max_epochs, **options) -> LR scheduler`;
`configs/scheduler/*.yaml` names one by its `_target_` (with `_partial_: true`), and a user's own
is named the same way (docs/extending.md).
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    max_epochs: int,
    warmup_epochs: float = 1,
    min_lr_ratio: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_epochs` (of `max_epochs`, spread over `total_steps`) of linear warm-up, then
    cosine down to `min_lr_ratio` x the optimizer's lr."""
    from hpa.errors import InputError

    if warmup_epochs < 0 or not 0 <= min_lr_ratio <= 1:
        raise InputError(
            f"scheduler: warmup_epochs={warmup_epochs}, min_lr_ratio={min_lr_ratio}: use "
            "warmup_epochs >= 0 and min_lr_ratio in [0, 1]"
        )
    total = max(1, int(total_steps))
    warmup = int(round(warmup_epochs * total / max(1, max_epochs)))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total, min_lr_ratio)
    )
