"""Bag of cells (multiple-instance learning): per-cell logits pooled into the image's logits.

An image's cell crops go through one HPANet (backbone + its 19-class head = the per-cell head),
and a pool turns the cells' logits into the image's, which the image label trains. Only real
cells go through the network: padding never reaches batch norm, the head or the pool.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hpa.errors import InputError
from hpa.models.net import HPANet

POOLS = ("attention", "lse", "max", "mean")


class CellPool(nn.Module):
    """Cells' logits (B x N x K), features (B x N x F) and mask (B x N, True = a real cell) ->
    image logits (B x K).

    attention: gated attention (Ilse et al. 2018) from each cell's features, one weight per cell
    and class, softmax over the real cells; the image logit is the weighted mean of its cells'.
    lse: log-mean-exp with sharpness `lse_r` (a smooth max: mean as r -> 0, max as r -> inf).
    max / mean: of the real cells' logits.
    """

    def __init__(self, method: str, features: int, classes: int, attention_dim: int, lse_r: float):
        super().__init__()
        if method not in POOLS:
            raise InputError(f"model.mil.pool={method!r}: use one of {', '.join(POOLS)}")
        self.method, self.lse_r = method, float(lse_r)
        if method == "attention":
            self.value = nn.Linear(features, attention_dim)
            self.gate = nn.Linear(features, attention_dim)
            self.score = nn.Linear(attention_dim, classes)

    def weights(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x N x K attention weights: 0 on padding, summing to 1 over each bag's real cells."""
        hidden = torch.tanh(self.value(features)) * torch.sigmoid(self.gate(features))
        scores = self.score(hidden).float().masked_fill(~mask[..., None], -math.inf)
        return torch.softmax(scores, dim=1)

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        logits, real = logits.float(), mask[..., None]
        if self.method == "attention":
            return (self.weights(features, mask) * logits.masked_fill(~real, 0.0)).sum(1)
        if self.method == "max":
            return logits.masked_fill(~real, -math.inf).amax(1)
        count = real.sum(1).clamp(min=1)
        if self.method == "mean":
            return logits.masked_fill(~real, 0.0).sum(1) / count
        r = self.lse_r
        scaled = (r * logits).masked_fill(~real, -math.inf)
        return (torch.logsumexp(scaled, dim=1) - torch.log(count.float())) / r


def cell_outputs(
    net: HPANet, crops: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """B x N x 4 x S x S crops and B x N mask -> (B x N x K logits, B x N x F pre-logit features);
    padded slots are 0. The logits are what `net(crop)` gives each real crop (same head)."""
    backbone = net.backbone
    real = crops[mask]  # R x 4 x S x S
    features = backbone.forward_head(
        backbone.forward_features(net.normalize(real)), pre_logits=True
    )
    logits = backbone.get_classifier()(features)
    batch, slots = mask.shape
    out_logits = logits.new_zeros(batch, slots, logits.shape[-1])
    out_features = features.new_zeros(batch, slots, features.shape[-1])
    out_logits[mask], out_features[mask] = logits, features
    return out_logits, out_features


def feature_size(net: HPANet) -> int:
    """Width of the pre-logit features the classifier takes."""
    head = net.backbone.get_classifier()
    size = getattr(head, "in_features", None)
    return int(size if size is not None else net.backbone.num_features)
