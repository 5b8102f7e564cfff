"""Exported models as classifiers: loading, and their TTA-averaged, weighted-mean probabilities
(the TTA views themselves: hpa.inference.tta)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpa.errors import InputError
from hpa.labels import CLASS_NAMES
from hpa.models.export import load_exported
from hpa.models.net import HPANet

LEVELS = ("image", "cell")


@dataclass
class Classifier:
    """One exported model: whole images (level=image) or cell crops (level=cell) of `size` px."""

    net: HPANet
    level: str
    size: int
    cell_margin: float | None
    name: str
    weight: float = 1.0  # its share in its level's ensemble mean (predict's model_weights)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_classifiers(model_dirs: Sequence[str | Path], device: torch.device) -> list[Classifier]:
    """Load every `model/` folder; all must predict the 19 competition classes."""
    if not model_dirs:
        raise InputError(
            "no models given; pass models=[MODEL_DIR,...] (the model/ folder hpa.train writes)"
        )
    classifiers = []
    for model_dir in model_dirs:
        net, config = load_exported(model_dir, device=device)
        if list(config.get("class_names", [])) != list(CLASS_NAMES):
            raise InputError(f"{model_dir}: its classes are not the 19 HPA classes; re-export it")
        level = config.get("level", "image")
        if level not in LEVELS:
            raise InputError(f"{model_dir}: level {level!r} in config.json is not one of {LEVELS}")
        classifiers.append(
            Classifier(
                net, level, int(config["image_size"]), config.get("cell_margin"), str(model_dir)
            )
        )
    return classifiers


@torch.inference_mode()
def predict_probs(
    nets: Sequence[HPANet],
    images: np.ndarray,
    transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    batch_size: int,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """N x S x S x 4 uint8 -> N x classes: sigmoid averaged over every transform (hpa.inference.
    tta) and over the nets, weighted by `weights` (equal when None)."""
    device = next(nets[0].parameters()).device
    weights = [1.0] * len(nets) if weights is None else [float(w) for w in weights]
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        batch = batch.permute(0, 3, 1, 2).to(device)
        total = None
        for net, weight in zip(nets, weights, strict=True):
            for transform in transforms:
                probs = torch.sigmoid(net(transform(batch)).float()) * weight
                total = probs if total is None else total + probs
        out.append((total / (sum(weights) * len(transforms))).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)), np.float32)
