"""The competition metric: mAP over classes at mask IoU 0.6, Open Images instance rules.

Per class, detections from all images are ranked by confidence; each is matched greedily to the
unmatched ground-truth cell of that class in its own image with the highest IoU >= 0.6 (a true
positive), anything else is a false positive. AP is the area under the precision-recall curve
with precision made monotone; mAP is the mean over the classes that have ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpa.labels import CLASS_NAMES, NUM_CLASSES

IOU_THRESHOLD = 0.6


@dataclass(frozen=True)
class Detection:
    """One (cell mask, class, confidence) triple of a PredictionString; `mask` indexes the image's masks."""

    class_id: int
    confidence: float
    mask: int


def mask_ious(masks: Sequence[np.ndarray], truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of each predicted binary mask with each truth instance: (iou [M x T], truth ids).

    A bincount of the truth labels under each mask gives all its intersections at once.
    """
    if truth.size and truth.min() < 0:
        raise ValueError("truth labels must be non-negative instance ids")
    n = int(truth.max()) + 1 if truth.size else 1
    areas = np.bincount(truth.ravel(), minlength=n).astype(np.float64)
    iou = np.zeros((len(masks), n))
    for k, mask in enumerate(masks):
        if mask.shape != truth.shape:
            raise ValueError(f"mask shape {mask.shape} differs from truth {truth.shape}")
        inter = np.bincount(truth[mask], minlength=n).astype(np.float64)
        union = float(mask.sum()) + areas - inter
        iou[k] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    truth_ids = np.flatnonzero(areas)
    truth_ids = truth_ids[truth_ids > 0]  # background is not an instance
    return iou[:, truth_ids], truth_ids


def match_image(
    detections: Sequence[Detection],
    iou: np.ndarray,
    truth_classes: Sequence[Sequence[int]],
    threshold: float = IOU_THRESHOLD,
) -> np.ndarray:
    """True-positive flags for one image's detections (greedy per class, by confidence).

    `iou[m, t]` is the IoU of mask m with truth cell t; `truth_classes[t]` are the classes of
    truth cell t (a cell with several classes is a ground-truth instance of each; one with none
    was not annotated, and a detection on it is a false positive).
    """
    is_tp = np.zeros(len(detections), dtype=bool)
    matched = np.zeros((NUM_CLASSES, iou.shape[1]), dtype=bool)
    has_class = np.zeros((NUM_CLASSES, iou.shape[1]), dtype=bool)
    for t, classes in enumerate(truth_classes):
        has_class[list(classes), t] = True
    order = sorted(range(len(detections)), key=lambda i: -detections[i].confidence)
    for i in order:
        det = detections[i]
        candidates = np.where(has_class[det.class_id] & ~matched[det.class_id], iou[det.mask], -1.0)
        if candidates.size and candidates.max() >= threshold:
            matched[det.class_id, int(candidates.argmax())] = True
            is_tp[i] = True
    return is_tp


def average_precision(confidences: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float | None:
    """Open Images AP: precision made monotone, summed over the recall steps; None without truth."""
    if n_truth == 0:
        return None
    if len(confidences) == 0:
        return 0.0
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    tp = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_truth
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


@dataclass
class ClassTally:
    """Everything the AP of one class needs, accumulated image by image."""

    confidences: list[float]
    is_tp: list[bool]
    n_truth: int = 0


class MeanAveragePrecision:
    """Add images one at a time (`add_image`), then read `result()`."""

    def __init__(self, threshold: float = IOU_THRESHOLD) -> None:
        self.threshold = threshold
        self.tallies = [ClassTally([], []) for _ in range(NUM_CLASSES)]

    def add_image(
        self,
        detections: Sequence[Detection],
        masks: Sequence[np.ndarray],
        truth: np.ndarray,
        truth_classes: dict[int, Sequence[int]],
    ) -> None:
        """One image: its detections, their decoded masks, truth labels and truth cell classes."""
        iou, truth_ids = mask_ious(masks, truth)
        self.add_matches(detections, iou, truth_ids, truth_classes)

    def add_matches(
        self,
        detections: Sequence[Detection],
        iou: np.ndarray,
        truth_ids: np.ndarray,
        truth_classes: dict[int, Sequence[int]],
    ) -> None:
        """add_image with the masks' IoUs already computed (mask_ious): an image scored again
        with other confidences (hpa.ensemble's area search) reuses them."""
        classes = [truth_classes.get(int(t), ()) for t in truth_ids]
        is_tp = match_image(detections, iou, classes, self.threshold)
        for det, tp in zip(detections, is_tp, strict=True):
            self.tallies[det.class_id].confidences.append(det.confidence)
            self.tallies[det.class_id].is_tp.append(bool(tp))
        for cell_classes in truth_classes.values():
            for c in set(cell_classes):
                self.tallies[c].n_truth += 1

    def result(self) -> dict:
        """`{"mAP", "AP_per_class", "counts"}` keyed by class name; classes without truth -> None."""
        ap = {
            name: average_precision(np.array(t.confidences), np.array(t.is_tp), t.n_truth)
            for name, t in zip(CLASS_NAMES, self.tallies, strict=True)
        }
        scored = [v for v in ap.values() if v is not None]
        counts = {
            name: {
                "truth": t.n_truth,
                "detections": len(t.is_tp),
                "true_positives": int(sum(t.is_tp)),
            }
            for name, t in zip(CLASS_NAMES, self.tallies, strict=True)
        }
        return {
            "mAP": float(np.mean(scored)) if scored else None,
            "AP_per_class": ap,
            "counts": counts,
            "classes_scored": len(scored),
        }
