"""A class-balanced sampler with a cap (`data.sampler=balanced`, `data.sampler_cap=CAP`).

Each class c gets the weight w_c = min(CAP, f_max / f_c), f_c being the share of training
samples that have class c and f_max the share of the most common class: 1 for the most common
class, up to CAP for the rare ones. A sample is drawn (with replacement) with probability in
proportion to the weight of its rarest class (the largest w_c among its labels). As every
sample weight lies in [1, CAP] and their mean is at least 1, no sample is drawn more than CAP
times as often as under uniform sampling, so no class's realised frequency exceeds CAP times its
natural one. CAP=null: plain inverse frequency, uncapped.

It is a `DistributedSampler`: every rank draws the same epoch (seeded by seed + epoch, Lightning
calls `set_epoch`) and takes its own interleaved share of it, so Lightning leaves it in place
under DDP (`use_distributed_sampler` swaps only samplers that are not distributed ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from hpa.errors import InputError


def balanced_weights(labels: np.ndarray, cap: float | None) -> np.ndarray:
    """Per-sample weights (N) from an N x C presence matrix (bool, or soft targets >= 0.5)."""
    present = np.asarray(labels) >= 0.5
    if cap is not None and cap < 1:
        raise InputError(f"data.sampler_cap={cap}: use a number >= 1 (or null for no cap)")
    counts = present.sum(axis=0).astype(np.float64)
    if counts.max(initial=0) == 0:
        return np.ones(len(present))
    per_class = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    if cap is not None:
        per_class = np.minimum(per_class, cap)
    weights = (present * per_class).max(axis=1, initial=0.0)
    return np.where(weights > 0, weights, 1.0)  # a sample without labels: weight of the common


class ClassBalancedSampler(DistributedSampler):
    """Draws `len(dataset)` samples per epoch (split over ranks) by `balanced_weights`."""

    def __init__(
        self,
        dataset: Dataset,
        labels: np.ndarray,
        cap: float | None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} label rows for {len(dataset)} samples")
        self.weights = torch.as_tensor(balanced_weights(labels, cap), dtype=torch.float64)
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, True, generator=generator)
        return iter(drawn[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
