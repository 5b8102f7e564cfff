"""Instance matching between two label images: IoU matrix, one-to-one matches, F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every predicted instance with every true one: (iou [P x T], pred ids, truth ids).

    One bincount over the joint labels gives every intersection at once; no per-pair mask loops.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"label images differ in shape: {pred.shape} vs {truth.shape}")
    n_p, n_t = _table_size(pred), _table_size(truth)
    if n_p * n_t <= _MAX_TABLE:
        # Label values index the count table directly: no sort (np.unique) of millions of pixels.
        flat = pred.ravel().astype(np.int64) * n_t + truth.ravel()
        joint = np.bincount(flat, minlength=n_p * n_t).reshape(n_p, n_t)
        pred_ids, truth_ids = np.flatnonzero(joint.sum(1)), np.flatnonzero(joint.sum(0))
        joint = joint[np.ix_(pred_ids, truth_ids)]
    else:
        pred_ids, pred_inv = np.unique(pred, return_inverse=True)
        truth_ids, truth_inv = np.unique(truth, return_inverse=True)
        n_p, n_t = len(pred_ids), len(truth_ids)
        joint = np.bincount(pred_inv.ravel() * n_t + truth_inv.ravel(), minlength=n_p * n_t)
        joint = joint.reshape(n_p, n_t)
    inter = joint.astype(np.float64)
    union = inter.sum(axis=1, keepdims=True) + inter.sum(axis=0, keepdims=True) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep_p, keep_t = pred_ids > 0, truth_ids > 0  # 0 is background, not an instance
    return iou[np.ix_(keep_p, keep_t)], pred_ids[keep_p], truth_ids[keep_t]


_MAX_TABLE = 1 << 22  # entries of the direct count table (32 MiB of int64)


def _table_size(labels: np.ndarray) -> int:
    """max + 1 for non-negative integer labels (a direct table index), else a huge number."""
    if labels.dtype.kind not in "ui" or labels.size == 0 or int(labels.min()) < 0:
        return _MAX_TABLE + 1
    return int(labels.max()) + 1


@dataclass(frozen=True)
class MatchReport:
    """Counts of one-to-one matches at an IoU threshold."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 0.0

    @property
    def f1(self) -> float:
        total = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / total if total else 1.0


def match_instances(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.6) -> MatchReport:
    """Match predicted to true instances at IoU >= threshold, one to one.

    Instances within one label image are disjoint, so above IoU 0.5 an instance can overlap at most
    one partner that much: thresholding the matrix is already a one-to-one matching. Below 0.5 the
    Hungarian assignment would be needed; we refuse rather than answer something else.
    """
    if threshold <= 0.5:
        raise ValueError(f"threshold={threshold}: one-to-one matching by thresholding needs > 0.5")
    iou, pred_ids, truth_ids = iou_matrix(pred, truth)
    tp = int((iou >= threshold).sum())
    return MatchReport(tp, len(pred_ids) - tp, len(truth_ids) - tp)
