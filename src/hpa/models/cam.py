"""Class activation maps (CAM) of an HPANet, and Puzzle-CAM's loss that makes them sharp.

A class map is the per-location logit: the backbone's feature map (`forward_features`, N x F x
h x w) with the network's own head applied at every location, i.e. timm's `forward_head` on each
1 x 1 feature vector. For a linear head that is the classifier as a 1 x 1 convolution
(`get_classifier()` weights on the feature map); any global pool of a single location is that
location (avg, max, avgmax, GeM), and catavgmax sees it twice, so one rule serves every pool.
With avg pooling the spatial mean of the map is exactly the image's logit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpa.errors import InputError
from hpa.models.net import HPANet


def feature_map(net: HPANet, images: torch.Tensor) -> torch.Tensor:
    """0..255 images (N x 4 x H x W) -> the backbone's N x F x h x w feature map."""
    features = net.backbone.forward_features(net.normalize(images))
    if features.ndim != 4:
        name = type(net.backbone).__name__
        raise InputError(
            f"{name} gives {tuple(features.shape)} features, not a spatial map: class maps need a "
            "convolutional backbone (e.g. efficientnet_b0, resnet18); use image_model_cells=crops"
        )
    return features


@contextmanager
def _without_dropout(backbone: nn.Module) -> Iterator[None]:
    """Dropout off for the head (timm heads read `self.training` or hold nn.Dropout), batch norm
    untouched: in training, maps compared by a loss must not differ by dropout noise."""
    switched = [m for m in backbone.modules() if m is backbone or isinstance(m, nn.Dropout)]
    was = [m.training for m in switched]
    for m in switched:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(switched, was, strict=True):
            m.training = mode


def head_per_location(backbone: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """N x F x h x w features -> N x classes x h x w: the head applied to every location."""
    n, f, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, f, 1, 1)
    with _without_dropout(backbone):
        logits = backbone.forward_head(flat)
    return logits.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def class_maps(net: HPANet, images: torch.Tensor) -> torch.Tensor:
    """0..255 images (N x 4 x H x W) -> per-location logits, N x classes x h x w."""
    return head_per_location(net.backbone, feature_map(net, images))


def tile_class_maps(net: HPANet, images: torch.Tensor, tiles: int) -> torch.Tensor:
    """Class maps of the tiles x tiles tiles of each image, put back together in place."""
    rows = torch.tensor_split(images, tiles, dim=2)
    parts = [torch.tensor_split(row, tiles, dim=3) for row in rows]
    flat = [p for row in parts for p in row]
    if len({p.shape for p in flat}) == 1:  # one pass over all tiles at once
        maps = class_maps(net, torch.cat(flat)).chunk(len(flat))
    else:
        maps = [class_maps(net, p) for p in flat]
    merged = [torch.cat(maps[r * tiles : (r + 1) * tiles], dim=3) for r in range(tiles)]
    return torch.cat(merged, dim=2)


def puzzle_logits(
    net: HPANet, images: torch.Tensor, tiles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image logits, Puzzle-CAM reconstruction loss) from one pass over the full images.

    The loss is the mean absolute difference between the full image's class maps and those of
    its tiles put back together (Jo & Yu 2021, Puzzle-CAM): a network whose maps depend on where
    a cell sits in the image (padding, context) pays for it, so its maps follow cells more
    closely. Tile maps are resized to the full map's size when the strides do not divide evenly.
    """
    features = feature_map(net, images)
    logits = net.backbone.forward_head(features)
    full = head_per_location(net.backbone, features)
    merged = tile_class_maps(net, images, tiles)
    if merged.shape[-2:] != full.shape[-2:]:
        merged = F.interpolate(merged, size=full.shape[-2:], mode="bilinear", align_corners=False)
    return logits, F.l1_loss(merged, full)
