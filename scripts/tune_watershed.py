"""Held-out search of the watershed segmenter's settings: F1 at IoU 0.6, seconds per image.

    nice env OMP_NUM_THREADS=1 .venv/bin/python scripts/tune_watershed.py \
        [--real ../shared/fixtures/hpa_real] [--synthetic 8] [--seed 9100]

A grid over the four settings that decide most cells (nucleus_threshold, neck_ratio,
cell_threshold, split_smooth; the rest stay at their defaults) is scored on three sets: each of
the two real images with reference masks (HPA-Cell-Segmentation's) and a synthetic set with true
masks (hpa.synthetic, 1024 px, typical and crowded fields, seeds no test uses). A setting is
picked on one set and reported on the others, which it did not see:

    tuned on real A   -> reported on real B (and synthetic)
    tuned on real B   -> reported on real A (and synthetic)
    tuned on synthetic -> reported on real A and real B

Picked = highest F1 (cells matched one to one at IoU >= 0.6, pooled over the set's images), ties
broken by the mean IoU of the matched cells, then by closeness to the current default. The
default's own row is printed too; an F1 from a set the setting was picked on is marked `*`.
Seconds: the default's full `segment()` of each 2048 px real image, best of --repeats, one
thread, wall clock and CPU time (the steadier one on a shared machine).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa.data.images import read_sample
from hpa.data.records import read_records
from hpa.errors import InputError, exit_on_input_error
from hpa.segment.matching import iou_matrix
from hpa.segment.watershed import WatershedSegmenter, upscale
from hpa.synthetic import SyntheticConfig, render_sample

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hpa_real"
THRESHOLD = 0.6
# The settings searched; both stages of the segmenter are cached (nuclei, then cells).
NUCLEUS_GRID = {"nucleus_threshold": (0.3, 0.4, 0.5), "neck_ratio": (0.4, 0.5, 0.6)}
CELL_GRID = {"cell_threshold": (0.15, 0.25, 0.35, 0.45), "split_smooth": (0.03, 0.06, 0.12)}
SYNTHETIC = (  # 1024 px: the segmenter works at 512 px either way, as on a 2048 px image
    {"image_size": 1024, "cells_per_image": (12, 20)},
    {"image_size": 1024, "cells_per_image": (25, 40), "noise": 0.06},
)


@dataclass
class Image:
    name: str
    image: np.ndarray  # H x W x 4 uint8, full size
    truth: np.ndarray  # H x W instance labels


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        iou, pred_ids, truth_ids = iou_matrix(pred, truth)
        hits = iou[iou >= THRESHOLD]  # one to one above 0.5 (hpa.segment.matching)
        self.tp += hits.size
        self.fp += len(pred_ids) - hits.size
        self.fn += len(truth_ids) - hits.size
        self.iou_sum += float(hits.sum())

    @property
    def f1(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.tp if self.tp else 0.0


@dataclass
class Results:
    """Score of every setting on every set: scores[setting][set name]."""

    scores: dict[tuple, dict[str, Score]] = field(default_factory=dict)


def real_images(root: Path) -> list[Image]:
    if not (root / "train.csv").is_file() or not (root / "masks").is_dir():
        raise InputError(
            f"--real {root}: needs train.csv, train/ and masks/ (reference cell masks), like "
            "../shared/fixtures/hpa_real"
        )
    ids = read_records(root / "train.csv")["ID"].tolist()
    images = []
    for sample_id in ids:
        truth = cv2.imread(str(root / "masks" / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)
        images.append(Image(sample_id[:8], read_sample(root / "train", sample_id), truth))
    return images


def synthetic_images(n: int, seed: int, size: int = 1024) -> list[Image]:
    images = []
    for i in range(n):
        options = {**SYNTHETIC[i % len(SYNTHETIC)], "image_size": size}
        cfg = SyntheticConfig(seed=seed + i % len(SYNTHETIC), workers=1, **options)
        sample = render_sample(cfg, i // len(SYNTHETIC))
        images.append(Image(f"synthetic {i}", sample.image, sample.cells))
    return images


def settings() -> list[tuple]:
    """Every grid point as ((name, value), ...) in a fixed order."""
    grid = {**NUCLEUS_GRID, **CELL_GRID}
    return [tuple(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def score_all(sets: dict[str, list[Image]]) -> Results:
    """Segment every image with every setting, caching the nuclei across the cell settings.

    The same steps as `WatershedSegmenter.segment` (shrink, nuclei, cells, upscale), split so
    that the nuclei are found once per nucleus setting.
    """
    results = Results({s: {name: Score() for name in sets} for s in settings()})
    jobs = [(name, im) for name, images in sets.items() for im in images]
    for set_name, item in tqdm(jobs, desc="grid", unit="img"):
        height, width = item.image.shape[:2]
        base = WatershedSegmenter()
        scale = min(1.0, base.work_size / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = (
            item.image
            if scale >= 1.0
            else cv2.resize(item.image, size, interpolation=cv2.INTER_AREA)
        )
        planes = small.astype(np.float32) / 255.0
        for nuc_values in itertools.product(*NUCLEUS_GRID.values()):
            nuc_opts = dict(zip(NUCLEUS_GRID, nuc_values, strict=True))
            nuclei, diameter = WatershedSegmenter(**nuc_opts).find_nuclei(planes[..., 2])
            for cell_values in itertools.product(*CELL_GRID.values()):
                opts = {**nuc_opts, **dict(zip(CELL_GRID, cell_values, strict=True))}
                cells, _ = WatershedSegmenter(**opts).grow_cells(planes, nuclei, diameter)
                key = tuple(opts.items())
                results.scores[key][set_name].add(upscale(cells, height, width), item.truth)
    return results


def default_setting() -> tuple:
    base = WatershedSegmenter()
    return tuple((k, getattr(base, k)) for k in {**NUCLEUS_GRID, **CELL_GRID})


def distance(setting: tuple, default: tuple) -> float:
    """Steps away from the default on the grid (a tie-break toward it)."""
    grid = {**NUCLEUS_GRID, **CELL_GRID}
    return sum(
        abs(grid[k].index(v) - grid[k].index(d))
        for (k, v), (_, d) in zip(setting, default, strict=True)
    )


def pick(results: Results, on: str, default: tuple) -> tuple:
    def rank(s: tuple) -> tuple:
        score = results.scores[s][on]
        return (-round(score.f1, 6), -round(score.mean_iou, 4), distance(s, default))

    return min(results.scores, key=rank)


def seconds_per_image(images: list[Image], repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of the default's `segment()` per image, the best of `repeats`.

    CPU time (one thread) is the steadier number on a shared machine: waiting for a core is not
    counted in it.
    """
    segmenter = WatershedSegmenter()
    times = []
    for item in images:
        wall, cpu = float("inf"), float("inf")
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            segmenter.segment(item.image)
            wall = min(wall, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        times.append((wall, cpu))
    return times


def describe(setting: tuple, default: tuple) -> str:
    changed = [f"{k}={v}" for (k, v), (_, d) in zip(setting, default, strict=True) if v != d]
    return ", ".join(changed) or "(the default)"


def table(results: Results, set_names: list[str], default: tuple) -> list[str]:
    head = "| picked on | setting | " + " | ".join(f"F1 {n}" for n in set_names) + " |"
    lines = [head, "|" + "---|" * (2 + len(set_names))]
    rows = [("default", default, None)] + [(n, pick(results, n, default), n) for n in set_names]
    for label, setting, seen in rows:
        cells = []
        for n in set_names:
            score = results.scores[setting][n]
            mark = "*" if n == seen else ""
            cells.append(f"{score.f1:.3f}{mark} ({score.tp}/{score.tp + score.fn})")
        lines.append(f"| {label} | {describe(setting, default)} | " + " | ".join(cells) + " |")
    return lines


@exit_on_input_error
def main(argv: list[str] | None = None) -> Results:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=REAL, help="train.csv, train/, masks/")
    parser.add_argument("--synthetic", type=int, default=8, help="synthetic images (1024 px)")
    parser.add_argument("--synthetic-size", type=int, default=1024, help="their side, px")
    parser.add_argument("--seed", type=int, default=9100, help="synthetic seeds: seed, seed+1")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per real image")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    sets: dict[str, list[Image]] = {}
    for item in real_images(args.real):
        sets[f"real {item.name}"] = [item]
    if args.synthetic:
        sets["synthetic"] = synthetic_images(args.synthetic, args.seed, args.synthetic_size)
    results = score_all(sets)
    default = default_setting()
    print(f"\n{len(results.scores)} settings; F1 at IoU >= {THRESHOLD} (matched/true cells); "
          "* = the set the setting was picked on")  # fmt: skip
    print("\n".join(table(results, list(sets), default)))
    real = [im for name, images in sets.items() if name.startswith("real") for im in images]
    if real:
        times = seconds_per_image(real, args.repeats)
        shown = ", ".join(f"{wall:.2f} ({cpu:.2f} CPU)" for wall, cpu in times)
        print(f"\ndefault, seconds per real image (one thread, best of {args.repeats}): {shown}")
    return results


if __name__ == "__main__":
    main()
