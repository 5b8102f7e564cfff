"""How the competition metric falls with mask quality: true masks shrunk or grown to a set IoU.

    nice .venv/bin/python scripts/mask_quality.py [--images 24] [--size 512] [--seed 9200]

On a synthetic set with true cell masks and labels (hpa.synthetic, split=test, seeds no test
uses), every true cell's mask is shrunk (its innermost pixels kept, by distance to its edge) or
grown (the nearest pixels outside added) until its IoU with the true mask reaches a target drawn
for that cell uniformly from the row's IoU +- spread (0.05; --spread 0 gives every cell the row's
IoU, a step at 0.6). Each cell then gets all 19 classes with
- perfect confidences: 1 for its true classes, 0 for the rest; and
- a noisy classifier: clip(0.25 + 0.5 x truth + N(0, 0.15)) per class, a fixed seed;
is written as a submission (hpa.submission.writer.prediction_string, the competition's mask
encoding) and scored with hpa.evaluate (mAP, a cell counts at IoU >= 0.6). The last row uses the
default watershed segmenter's masks with the same confidences per true cell it overlaps most.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from hpa.data.images import read_sample
from hpa.errors import InputError, exit_on_input_error
from hpa.evaluate import evaluate
from hpa.fsio import atomic_path
from hpa.labels import NUM_CLASSES
from hpa.segment.matching import iou_matrix
from hpa.segment.watershed import WatershedSegmenter
from hpa.submission.encoding import encode_binary_mask
from hpa.submission.truth import TruthSet
from hpa.submission.writer import prediction_string
from hpa.synthetic import SyntheticConfig, generate_dataset

TARGETS = (1.0, 0.9, 0.8, 0.7, 0.65, 0.6, 0.59, 0.55, 0.5)
NOISE = 0.15
SPREAD = 0.05


@dataclass
class Row:
    masks: str  # "shrunk", "grown" or "watershed"
    target: float | None  # the IoU asked for (None for the segmenter's own masks)
    mean_iou: float  # achieved, mean over true cells (best-overlapping mask)
    counted: float  # share of true cells whose mask reaches IoU >= 0.6
    map_perfect: float
    map_noisy: float


def shrink(cell: np.ndarray, target: float) -> np.ndarray:
    """The ceil(target x area) pixels deepest inside `cell` (a boolean mask): IoU >= target."""
    depth = ndi.distance_transform_edt(cell)
    inside = np.flatnonzero(cell)
    keep = math.ceil(target * inside.size)
    order = np.argsort(-depth.ravel()[inside], kind="stable")
    out = np.zeros(cell.size, bool)
    out[inside[order[:keep]]] = True
    return out.reshape(cell.shape)


def grow(cell: np.ndarray, target: float) -> np.ndarray:
    """`cell` plus the nearest outside pixels, area floor(area / target): IoU >= target."""
    area = int(cell.sum())
    extra = math.floor(area / target) - area
    if extra <= 0:
        return cell.copy()
    far = ndi.distance_transform_edt(~cell)
    outside = np.flatnonzero(~cell)
    order = np.argsort(far.ravel()[outside], kind="stable")
    out = cell.ravel().copy()
    out[outside[order[:extra]]] = True
    return out.reshape(cell.shape)


def around(cell: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The cell's bounding box with `pad` pixels more on each side (inside the image)."""
    rows, cols = np.flatnonzero(cell.any(1)), np.flatnonzero(cell.any(0))
    height, width = cell.shape
    return (
        slice(max(0, rows[0] - pad), min(height, rows[-1] + 1 + pad)),
        slice(max(0, cols[0] - pad), min(width, cols[-1] + 1 + pad)),
    )


def perturbed(truth: np.ndarray, cell_id: int, mode: str, target: float) -> np.ndarray:
    cell = truth == cell_id
    if target >= 1.0:
        return cell
    pad = 0
    if mode == "grown":  # a disc's radius grows by 1/sqrt(target) < 1.5x: one radius is plenty
        rows, cols = np.flatnonzero(cell.any(1)), np.flatnonzero(cell.any(0))
        pad = max(rows[-1] - rows[0], cols[-1] - cols[0]) // 2 + 2
    box = around(cell, pad)
    out = np.zeros_like(cell)
    out[box] = (shrink if mode == "shrunk" else grow)(cell[box], target)
    return out


def confidences(classes: list[int], noise_seed: list[int] | None) -> np.ndarray:
    """Perfect (1 for the true classes, else 0), or noisy with a seed per true cell, so that a
    cell gets the same confidences in every row of the table."""
    truth = np.zeros(NUM_CLASSES)
    truth[list(classes)] = 1.0
    if noise_seed is None:
        return truth
    rng = np.random.default_rng(noise_seed)
    return np.clip(0.25 + 0.5 * truth + rng.normal(0.0, NOISE, NUM_CLASSES), 0.0, 1.0)


@dataclass
class Predicted:
    """One image's masks; for each, the classes and index of the true cell it stands for."""

    shape: tuple[int, int]
    masks: list[np.ndarray]
    classes: list[list[int]]
    owners: list[int]


def score(data: Path, predicted: dict[str, Predicted], out: Path) -> tuple[float, float]:
    """mAP of the masks with perfect and with noisy confidences."""
    maps = []
    for noisy in (False, True):
        rows = []
        for index, (sample_id, p) in enumerate(predicted.items()):
            texts = [encode_binary_mask(mask) for mask in p.masks]
            probs = np.array(
                [
                    confidences(classes, [index, owner] if noisy else None)
                    for classes, owner in zip(p.classes, p.owners, strict=True)
                ]
            ).reshape(len(p.masks), NUM_CLASSES)
            rows.append((sample_id, p.shape[1], p.shape[0], prediction_string(texts, probs)))
        frame = pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
        maps.append(float(evaluate(out, data, progress=False)["mAP"]))
    return maps[0], maps[1]


def quality(pred_masks: list[np.ndarray], truth: np.ndarray) -> list[float]:
    """Each true cell's best IoU with any of the masks."""
    if not pred_masks:
        return [0.0] * (len(np.unique(truth)) - 1)
    stacked = np.zeros(truth.shape, np.int32)
    best = []
    for i, mask in enumerate(pred_masks, start=1):  # masks may overlap: one at a time
        stacked[:] = np.where(mask, i, 0)
        iou, _, _ = iou_matrix(stacked, truth)
        best.append(iou.max(axis=0) if iou.size else np.zeros(0))
    return np.max(best, axis=0).tolist()


def run(
    images: int, size: int, seed: int, targets: tuple[float, ...], spread: float, watershed: bool
) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="hpa-mask-quality-") as tmp:
        return _run(Path(tmp), images, size, seed, targets, spread, watershed)


def _run(
    work: Path,
    images: int,
    size: int,
    seed: int,
    targets: tuple[float, ...],
    spread: float,
    watershed: bool,
) -> list[Row]:
    if not all(0.5 <= t <= 1.0 for t in targets):
        raise InputError(f"--targets {list(targets)}: give IoUs from 0.5 to 1")
    if not 0.0 <= spread <= 0.2:
        raise InputError(f"--spread {spread}: give a value from 0 to 0.2")
    cfg = SyntheticConfig(n_images=images, seed=seed, image_size=size, split="test", workers=1)
    data = generate_dataset(cfg, work / "data", progress=False)
    truth_set = TruthSet(data)
    truths = {sample_id: truth_set.mask(sample_id) for sample_id in truth_set.ids}
    jobs = [
        (mode, t) for t in targets for mode in ("shrunk", "grown") if t < 1.0 or mode == "shrunk"
    ]
    jobs += [("watershed", None)] if watershed else []
    rows = []
    for mode, target in tqdm(jobs, desc="mask quality", unit="row"):
        rng = np.random.default_rng(seed)  # the same per-cell IoUs for shrunk and grown
        predicted, ious = {}, []
        for sample_id, truth in truths.items():
            classes = truth_set.cell_classes[sample_id]
            if mode == "watershed":
                cells = WatershedSegmenter().segment(read_sample(data / "test", sample_id)).cells
                masks = [cells == i for i in np.unique(cells) if i > 0]
                iou, _, truth_ids = iou_matrix(cells, truth)
                owners = [int(truth_ids[k.argmax()]) if k.size else 0 for k in iou]
            else:
                owners = sorted(classes)
                wanted = target + rng.uniform(-spread, spread, len(owners))
                wanted = np.clip(wanted, 0.3, 1.0) if target < 1.0 else np.ones(len(owners))
                masks = [perturbed(truth, i, mode, t) for i, t in zip(owners, wanted, strict=True)]
            labelled = [classes.get(o, []) for o in owners]
            predicted[sample_id] = Predicted(truth.shape, masks, labelled, owners)
            ious.extend(quality(masks, truth))
        perfect, noisy = score(data, predicted, work / f"{mode}-{target}.csv")
        counted = float(np.mean(np.array(ious) >= 0.6))
        rows.append(Row(mode, target, float(np.mean(ious)), counted, perfect, noisy))
    return rows


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| masks | IoU asked | mean IoU | cells at IoU >= 0.6 | mAP, perfect confidences "
        "| mAP, noisy confidences |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        asked = "-" if r.target is None else f"{r.target:.2f}"
        masks = "true" if r.target == 1.0 else r.masks
        lines.append(
            f"| {masks} | {asked} | {r.mean_iou:.3f} | {r.counted:.0%} | {r.map_perfect:.3f} "
            f"| {r.map_noisy:.3f} |"
        )
    return lines


@exit_on_input_error
def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=512, help="image side, px")
    parser.add_argument("--seed", type=int, default=9200)
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument(
        "--spread", type=float, default=SPREAD, help="each cell's IoU: target +- spread, uniform"
    )
    parser.add_argument("--no-watershed", action="store_true", help="skip the segmenter's row")
    args = parser.parse_args(argv)
    rows = run(
        args.images, args.size, args.seed, tuple(args.targets), args.spread, not args.no_watershed
    )
    print("\n".join(table(rows)))
    return rows


if __name__ == "__main__":
    main()
