"""End-of-training pictures: per-class AP bars, precision-recall curves, labelled samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs over SSH and in notebooks
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hpa.viz import draw, figures  # noqa: E402


def plot_ap_bars(ap_per_class: Mapping[str, float | None], path: Path) -> Path:
    return figures.save(figures.ap_bars(ap_per_class), path)


def plot_pr_curves(
    probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], path: Path
) -> Path:
    return figures.save(figures.pr_curves(probs.numpy(), targets.numpy(), class_names), path)


def composite(image: np.ndarray) -> np.ndarray:
    """4 x H x W (red, green, blue, yellow) uint8 -> H x W x 3 RGB as HPA shows it (yellow = red + green)."""
    return draw.composite(np.moveaxis(image, 0, -1))


def plot_samples(
    images: Sequence[np.ndarray],
    probs: torch.Tensor,
    targets: torch.Tensor,
    path: Path,
    threshold: float = 0.5,
) -> Path:
    """A grid of validation images with their true and predicted class ids."""
    n = len(images)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images, strict=False)):
        ax.imshow(composite(image))
        true = np.flatnonzero(targets[i].numpy() > 0.5).tolist()
        pred = np.flatnonzero(probs[i].numpy() >= threshold).tolist()
        ok = set(true) == set(pred)
        ax.set_title(f"true {true}\npred {pred}", fontsize=8, color="green" if ok else "red")
    return figures.save(fig, path)
