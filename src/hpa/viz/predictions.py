"""A picture of one submitted image: every cell of its PredictionString outlined over the RGBY
composite and the green channel, coloured by its top class, with its top classes written beside
it; against a truth set, each cell marked matched, wrong class, false or missed (IoU 0.6, as
the metric matches them).

Masks are decoded from the submission text one at a time and reduced to their outline at display
size at once, so a 3072 px image with a hundred cells holds one full-resolution mask at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hpa.submission.metric import IOU_THRESHOLD, mask_ious
from hpa.submission.predictions import decode_masks, parse_prediction_string
from hpa.viz import draw


@dataclass(frozen=True)
class CellRow:
    """One line of the cells.csv that `hpa.show` writes beside its pictures."""

    ID: str
    cell: int  # position of the mask in the PredictionString (first appearance)
    top_class: int | None
    confidence: float | None
    status: str  # "" without truth; match | wrong class | false | missed
    iou: float | None
    truth: str  # the matched (or missed) true cell's classes, "|"-joined


def picture(
    sample_id: str,
    image: np.ndarray,
    prediction: str,
    height: int,
    width: int,
    size: int = 1024,
    top: int = 3,
    truth: np.ndarray | None = None,
    truth_classes: Mapping[int, Sequence[int]] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, list[CellRow]]:
    """(RGB picture, one CellRow per cell) of one submission row.

    `image` is the sample's H x W x 4 RGBY (any size: it is scaled to `size`), `prediction` its
    PredictionString, `height` x `width` its submitted size (the masks'), `truth` its H x W
    instance labels or None.
    """
    where = f"submission row {sample_id}"
    detections, texts = parse_prediction_string(prediction, where=where)
    shown, _ = draw.fit(image, size)
    scale = shown.shape[1] / width
    per_mask: dict[int, list[tuple[int, float]]] = {}
    for det in detections:
        per_mask.setdefault(det.mask, []).append((det.class_id, det.confidence))
    marks, rows, matched = [], [], set()
    for k, text in enumerate(texts):
        mask = decode_masks([text], height, width, where=where)[0]
        classes = sorted(per_mask.get(k, []), key=lambda t: -t[1])
        mark = draw.CellMark(draw.contours(mask, scale), classes)
        best_iou = None
        if truth is not None:
            iou, ids = mask_ious([mask], truth)
            if iou.size:
                t = int(iou[0].argmax())
                best_iou = float(iou[0, t])
                if best_iou >= iou_threshold:
                    matched.add(int(ids[t]))
                    mark.truth = tuple((truth_classes or {}).get(int(ids[t]), ()))
            mark.status = "false" if best_iou is None or best_iou < iou_threshold else "match"
            if mark.status == "match" and classes and classes[0][0] not in mark.truth:
                mark.status = "wrong class"
        del mask
        marks.append(mark)
        rows.append(_row(sample_id, k, mark, best_iou))
    if truth is not None:
        for t in sorted(set(np.unique(truth).tolist()) - {0} - matched):
            mark = draw.CellMark(
                draw.contours(truth == t, scale),
                [],
                "missed",
                tuple((truth_classes or {}).get(int(t), ())),
            )
            marks.append(mark)
            rows.append(_row(sample_id, -1, mark, None))
    title = f"{sample_id}: {len(texts)} cells submitted"
    if truth is not None:
        counts = {
            s: sum(m.status == s for m in marks)
            for s in ("match", "wrong class", "false", "missed")
        }
        title += ", " + ", ".join(f"{n} {s}" for s, n in counts.items())
    return draw.prediction_picture(shown, marks, title, top), rows


def _row(sample_id: str, k: int, mark: draw.CellMark, iou: float | None) -> CellRow:
    top = mark.classes[0] if mark.classes else (None, None)
    return CellRow(
        sample_id,
        k,
        top[0],
        top[1],
        mark.status,
        None if iou is None else round(iou, 4),
        "|".join(map(str, mark.truth)),
    )
