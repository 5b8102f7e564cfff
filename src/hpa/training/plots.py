"""End-of-training pictures: per-class AP bars, precision-recall curves, labelled samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs over SSH and in notebooks
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import multilabel_precision_recall_curve  # noqa: E402

from hpa.fsio import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_ap_bars(ap_per_class: Mapping[str, float | None], path: Path) -> Path:
    names = list(ap_per_class)
    values = [np.nan if v is None else v for v in ap_per_class.values()]
    fig, ax = plt.subplots(figsize=(8, 6))
    y = np.arange(len(names))
    ax.barh(
        y,
        np.nan_to_num(values),
        color=["tab:red" if v < 0.5 else "tab:blue" for v in np.nan_to_num(values)],
    )
    ax.set_yticks(y, [f"{i} {n[:28]}" for i, n in enumerate(names)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision (validation)")
    mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
    ax.axvline(mean, color="k", ls="--", lw=1)
    ax.set_title(f"Per-class AP, mAP {mean:.3f}")
    return _save(fig, path)


def plot_pr_curves(
    probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], path: Path
) -> Path:
    precision, recall, _ = multilabel_precision_recall_curve(
        probs, targets.long(), num_labels=len(class_names)
    )
    fig, axes = plt.subplots(4, 5, figsize=(15, 12), sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(class_names):
            ax.axis("off")
            continue
        positives = int(targets[:, i].sum())
        if positives:
            ax.plot(recall[i].numpy(), precision[i].numpy(), lw=1.5)
        ax.set_title(f"{i} {class_names[i][:22]} (n={positives})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    return _save(fig, path)


def composite(image: np.ndarray) -> np.ndarray:
    """4 x H x W (red, green, blue, yellow) uint8 -> H x W x 3 RGB as HPA shows it (yellow = red + green)."""
    r, g, b, y = (image[c].astype(np.float32) for c in range(4))
    rgb = np.stack([r + 0.5 * y, g + 0.5 * y, b], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


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
    return _save(fig, path)
