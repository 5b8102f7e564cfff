"""An untrained test_resnet HPANet, and its export as the `model/` folder hpa.predict reads."""

from __future__ import annotations

from pathlib import Path

import torch

from hpa.labels import CLASS_NAMES, NUM_CLASSES
from hpa.models.export import export_model
from hpa.models.factory import create_backbone
from hpa.models.net import HPANet

MEAN, STD = [0.08, 0.05, 0.05, 0.08], [0.15, 0.11, 0.16, 0.15]


def untrained_net(seed: int = 0, global_pool: str | None = None) -> HPANet:
    """test_resnet with weights drawn from `seed`, in eval mode."""
    torch.manual_seed(seed)
    backbone = create_backbone("test_resnet", NUM_CLASSES, 4, global_pool=global_pool)
    return HPANet(backbone, MEAN, STD).eval()


def export_untrained(out: Path, level: str = "image", size: int = 64, seed: int = 0) -> Path:
    """untrained_net(seed) exported to `out` as a model of `level` (image or cell) at `size` px."""
    meta = {
        "backbone": "test_resnet",
        "num_classes": NUM_CLASSES,
        "in_chans": 4,
        "class_names": list(CLASS_NAMES),
        "image_size": size,
        "level": level,
        "cell_margin": 0.05 if level == "cell" else None,
    }
    return export_model(untrained_net(seed), out, meta)
