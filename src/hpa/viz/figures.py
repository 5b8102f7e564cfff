"""Matplotlib figures of a run's validation predictions and of a benchmark, as PNG bytes or files.

Each function takes plain arrays and returns a Figure; `png` renders one to bytes (for an HTML
report) and `save` to a file, each closing it. hpa.training.plots saves the same figures as files
in a run's plots/; hpa.runs --plot its history chart.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs over SSH and in notebooks
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hpa.fsio import atomic_path  # noqa: E402


def png(fig, dpi: int = 80) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def save(fig, path: Path, dpi: int = 100) -> Path:
    """The figure as an image file at `path` (written whole, hpa.fsio); the figure is closed."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def ap_bars(ap_per_class: Mapping[str, float | None]):
    names = list(ap_per_class)
    values = np.array([np.nan if v is None else v for v in ap_per_class.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 6))
    y = np.arange(len(names))
    shown = np.nan_to_num(values)
    ax.barh(y, shown, color=["tab:red" if v < 0.5 else "tab:blue" for v in shown])
    ax.set_yticks(y, [f"{i} {n[:28]}" for i, n in enumerate(names)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision (validation)")
    mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
    ax.axvline(mean, color="k", ls="--", lw=1)
    ax.set_title(f"Per-class AP, mAP {mean:.3f}")
    return fig


def pr_curve(
    probs: np.ndarray, truth: np.ndarray, points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of one class at every threshold, ranked by probability (one sort:
    a 20k-sample validation set takes milliseconds), thinned to about `points` for drawing."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    hits = np.asarray(truth, dtype=bool)[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / max(int(hits.sum()), 1)
    keep = np.unique(np.linspace(0, len(tp) - 1, min(points, len(tp))).round().astype(int))
    return precision[keep], recall[keep]


def pr_curves(probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str]):
    """One precision-recall curve per class, 4 x 5 panels."""
    probs, targets = np.asarray(probs), np.asarray(targets) > 0.5
    fig, axes = plt.subplots(4, 5, figsize=(15, 12), sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(class_names):
            ax.axis("off")
            continue
        positives = int(targets[:, i].sum())
        if positives:
            precision, recall = pr_curve(probs[:, i], targets[:, i])
            ax.plot(recall, precision, lw=1.5)
        ax.set_title(f"{i} {class_names[i][:22]} (n={positives})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    return fig


def confusion(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """K x K: row t, column p = the share of the samples with true class t that the model calls
    p (probability >= threshold). The diagonal is the recall at the threshold; the rest of a row
    is what class t is taken for. Rows of classes without samples are NaN."""
    true = np.asarray(targets) > 0.5
    called = np.asarray(probs) >= threshold
    counts = true.T.astype(np.float64) @ called.astype(np.float64)
    n = true.sum(axis=0).astype(np.float64)[:, None]
    return np.divide(counts, n, out=np.full_like(counts, np.nan), where=n > 0)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], threshold: float):
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(np.nan_to_num(matrix), cmap="viridis", vmin=0, vmax=1)
    k = len(class_names)
    ax.set_xticks(range(k), [str(i) for i in range(k)], fontsize=8)
    ax.set_yticks(range(k), [f"{i} {n[:24]}" for i, n in enumerate(class_names)], fontsize=8)
    ax.set_xlabel(f"predicted (probability >= {threshold})")
    ax.set_ylabel("true class")
    ax.set_title("share of each true class called each class")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def calibration(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict:
    """Every (sample, class) probability binned: mean probability vs share positive per bin,
    counts, and the expected calibration error (count-weighted |gap|)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = (np.asarray(targets) > 0.5).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=p, minlength=bins)
    positive = np.bincount(which, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, share = mean_p / count, positive / count
    gap = np.nan_to_num(np.abs(mean_p - share))
    ece = float((gap * count).sum() / max(count.sum(), 1))
    return {"mean_probability": mean_p, "share_positive": share, "count": count, "ece": ece}


def calibration_figure(curve: dict):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect")
    ok = curve["count"] > 0
    ax.plot(curve["mean_probability"][ok], curve["share_positive"][ok], "o-", label="model")
    for x, y, n in zip(
        curve["mean_probability"][ok], curve["share_positive"][ok], curve["count"][ok], strict=True
    ):
        ax.annotate(str(int(n)), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("share of positives")
    ax.set_title(f"calibration over all classes, ECE {curve['ece']:.3f}")
    ax.legend(loc="upper left")
    return fig


def learning_figure(history: Mapping[str, Sequence[tuple[float, float]]]):
    """One panel per metric (train/val loss, val mAP ...): value per epoch."""
    names = list(history)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        points = sorted(history[name])
        ax.plot([x for x, _ in points], [y for _, y in points], "o-", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def benchmark_figure(results: Mapping[str, Mapping], baseline: str | None = None):
    """Per variant: each seed's cell mAP (points) and their mean (bar), beside train and
    predict seconds drawn apart."""
    names = list(results)
    y = np.arange(len(names))
    fig, (ax_map, ax_time) = plt.subplots(
        1,
        2,
        figsize=(13, 0.45 * len(names) + 1.6),
        sharey=True,
        gridspec_kw={"width_ratios": [3, 2]},
    )
    means = [
        np.nan if results[n].get("cell_mAP") is None else results[n]["cell_mAP"] for n in names
    ]
    ax_map.barh(y, np.nan_to_num(means), color="tab:blue", alpha=0.35, label="mean")
    for i, name in enumerate(names):
        seeds = [s for s in results[name].get("cell_mAP_per_seed") or [] if s is not None]
        ax_map.plot(seeds, [i] * len(seeds), "o", color="tab:blue", ms=5)
    if baseline in results and results[baseline].get("cell_mAP") is not None:
        ax_map.axvline(results[baseline]["cell_mAP"], color="k", ls="--", lw=1, label=baseline)
    ax_map.set_yticks(y, names, fontsize=8)
    ax_map.invert_yaxis()
    ax_map.set_xlabel("cell mAP (points: seeds; bar: mean)")
    ax_map.legend(loc="lower right", fontsize=8)
    height = 0.38
    train = [results[n].get("train_s") or 0 for n in names]
    predict = [results[n].get("predict_s") or 0 for n in names]
    ax_time.barh(y - height / 2, train, height, label="train", color="tab:orange")
    ax_time.barh(y + height / 2, predict, height, label="predict", color="tab:green")
    ax_time.set_xlabel("seconds (mean over seeds)")
    ax_time.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
