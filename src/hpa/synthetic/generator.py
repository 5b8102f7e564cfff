"""Render synthetic HPA samples: four channels, cell instance masks and per-cell labels."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.data.images import CHANNELS, write_channel
from hpa.errors import InputError
from hpa.fsio import atomic_path, write_text
from hpa.labels import NEGATIVE, NUM_CLASSES, format_labels
from hpa.outputs import check_folder, claim_folder, claim_names, replace_folder
from hpa.signals import die_with_parent
from hpa.synthetic.cells import layout_cells, smooth_noise
from hpa.synthetic.patterns import PATTERNS, Context, er_network, microtubule_network

# Images per class in the real train.csv (shared/HPA.md), out of 21,806.
REAL_CLASS_COUNTS = np.array(
    [
        8797,
        1095,
        2451,
        1262,
        1425,
        1792,
        775,
        1846,
        964,
        998,
        818,
        78,
        1734,
        3111,
        2013,
        252,
        5685,
        593,
        34,
    ],
    dtype=np.float64,
)
# Labels per image in the real train.csv: 1, 2, 3, 4 labels.
REAL_LABELS_PER_IMAGE = np.array([10412, 8928, 2266, 197], dtype=np.float64)


@dataclass
class SyntheticConfig:
    n_images: int = 64
    seed: int = 0
    image_size: int = 256
    bit_depth: int = 8
    cells_per_image: tuple[int, int] = (4, 8)
    # 1.0 = class frequencies as in the real data; 0 = uniform. The demo uses a milder skew so
    # that every class has validation examples.
    skew: float = 1.0
    noise: float = 0.03
    blur: float = 0.6  # Gaussian sigma in pixels at 256 px (scaled with image size)
    split: str = "train"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Weak labels as in the real data: in a share `negative_cells` of the positive images, each
    # cell is, with probability `non_expressing`, a cell that does not express the protein (no
    # green, true label Negative); the image label is the union of the expressing cells' labels.
    non_expressing: float = 0.0
    negative_cells: float = 1.0
    # False: cells cut by the image border stay in masks/ but get an empty Label in cells.csv
    # (not annotated, as in the real test set: a detection on one is a false positive).
    border_truth: bool = True

    def __post_init__(self) -> None:
        if self.bit_depth not in (8, 16):
            raise InputError(f"bit_depth={self.bit_depth}: use 8 or 16")
        if self.image_size < 64:
            raise InputError(f"image_size={self.image_size}: use at least 64 px")
        if self.n_images < 1:
            raise InputError(f"n_images={self.n_images}: need at least 1")
        # Configs hand over lists ([1, 3]): normalise here so no caller has to.
        self.cells_per_image = tuple(self.cells_per_image)
        if len(self.cells_per_image) != 2:
            raise InputError(f"cells_per_image={list(self.cells_per_image)}: give [min, max]")
        lo, hi = self.cells_per_image
        if not 1 <= lo <= hi:
            raise InputError(f"cells_per_image={self.cells_per_image}: need 1 <= min <= max")
        for name in ("non_expressing", "negative_cells"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name}={getattr(self, name)}: use a fraction from 0 to 1")


def class_probabilities(skew: float) -> np.ndarray:
    p = REAL_CLASS_COUNTS**skew
    return p / p.sum()


def sample_image_labels(rng: np.random.Generator, skew: float) -> list[int]:
    """An image label set with the real data's class and labels-per-image frequencies (tempered)."""
    p = class_probabilities(skew)
    if rng.random() < p[NEGATIVE]:
        return [NEGATIVE]
    n_labels = rng.choice(4, p=REAL_LABELS_PER_IMAGE / REAL_LABELS_PER_IMAGE.sum()) + 1
    q = p[:NEGATIVE] / p[:NEGATIVE].sum()
    return sorted(rng.choice(NEGATIVE, size=n_labels, replace=False, p=q).tolist())


def assign_cell_labels(
    rng: np.random.Generator, image_labels: list[int], n_cells: int
) -> list[list[int]]:
    """Each cell gets a non-empty subset of the image's labels; their union is the image label."""
    if image_labels == [NEGATIVE] or n_cells == 0:
        return [[NEGATIVE] for _ in range(n_cells)]
    cells = [[c for c in image_labels if rng.random() < 0.65] for _ in range(n_cells)]
    for c in image_labels:
        if not any(c in labels for labels in cells):
            cells[rng.integers(n_cells)].append(c)
    for labels in cells:
        if not labels:
            labels.append(int(rng.choice(image_labels)))
    return [sorted(set(labels)) for labels in cells]


def silence_cells(
    rng: np.random.Generator, cell_labels: list[list[int]], fraction: float, share: float
) -> list[list[int]]:
    """With probability `share` (a positive image), each cell is Negative with probability
    `fraction`: it does not express the protein. Draws nothing when `fraction` is 0, so that
    data sets without the option stay byte for byte as they were."""
    if fraction <= 0 or not cell_labels or cell_labels[0] == [NEGATIVE] or rng.random() >= share:
        return cell_labels
    quiet = rng.random(len(cell_labels)) < fraction
    return [[NEGATIVE] if q else labels for q, labels in zip(quiet, cell_labels, strict=True)]


def image_label(cell_labels: list[list[int]]) -> list[int]:
    """The union of the expressing cells' labels; Negative when no cell expresses anything."""
    union = sorted({c for labels in cell_labels for c in labels if c != NEGATIVE})
    return union or [NEGATIVE]


@dataclass
class Sample:
    sample_id: str
    image: np.ndarray  # H x W x 4 (red, green, blue, yellow), uint8 or uint16
    cells: np.ndarray  # H x W uint16 instances
    nuclei: np.ndarray  # H x W uint16 instances
    image_labels: list[int]
    cell_labels: list[list[int]]


def sample_id(seed: int, index: int) -> str:
    """Deterministic UUID-shaped IDs, distinct across seeds, like the competition's."""
    bits = np.random.default_rng([seed, index, 7]).integers(0, 2**63, size=2)
    return str(uuid.UUID(int=(int(bits[0]) << 64 | int(bits[1])) & ((1 << 128) - 1)))


def render_sample(cfg: SyntheticConfig, index: int) -> Sample:
    """One sample, a pure function of (cfg, index): generation is deterministic and parallel."""
    rng = np.random.default_rng([cfg.seed, index])
    size = cfg.image_size
    unit = max(1.0, size / 300.0)
    image_labels = sample_image_labels(rng, cfg.skew)
    n_cells = int(rng.integers(cfg.cells_per_image[0], cfg.cells_per_image[1] + 1))
    cell_masks, nuclei, cells = layout_cells(rng, size, n_cells)
    cell_labels = assign_cell_labels(rng, image_labels, len(cells))
    if cfg.non_expressing > 0:
        cell_labels = silence_cells(rng, cell_labels, cfg.non_expressing, cfg.negative_cells)
        image_labels = image_label(cell_labels)
    if not cells:
        image_labels = [NEGATIVE]

    planes = np.zeros((4, size, size), dtype=np.float32)  # red, green, blue, yellow
    for cell, labels in zip(cells, cell_labels, strict=True):
        y0, y1, x0, x1 = cell.box
        red = microtubule_network(rng, cell, unit) * rng.uniform(0.7, 1.0)
        yellow = er_network(rng, cell) * rng.uniform(0.7, 1.0)
        dna = 0.55 + 0.25 * smooth_noise(rng, cell.mask.shape, cell.nuc_radius * 0.25)
        blue = cell.nucleus * np.clip(dna, 0.2, 1.0)
        ctx = Context(red=red, yellow=yellow, unit=unit)
        green = np.zeros_like(red)
        for c in labels:  # Negative draws no green (patterns.negative is all zeros)
            green = np.maximum(green, PATTERNS[c](rng, cell, ctx))
        green *= rng.uniform(0.6, 1.0) * cell.mask
        for plane, values in zip(planes, (red, green, blue, yellow), strict=True):
            region = plane[y0:y1, x0:x1]
            np.maximum(region, values * cell.mask, out=region)

    sigma = cfg.blur * size / 256.0
    for c in range(4):
        planes[c] = cv2.GaussianBlur(planes[c], (0, 0), sigma) if sigma > 0.2 else planes[c]
        planes[c] = planes[c] * rng.uniform(0.7, 1.0) + rng.uniform(0.0, 0.04)
        planes[c] += rng.normal(0.0, cfg.noise, size=planes[c].shape).astype(np.float32)
    planes = np.clip(planes, 0.0, 1.0)
    top = 65535 if cfg.bit_depth == 16 else 255
    image = (planes.transpose(1, 2, 0) * top + 0.5).astype(
        np.uint16 if cfg.bit_depth == 16 else np.uint8
    )
    return Sample(sample_id(cfg.seed, index), image, cell_masks, nuclei, image_labels, cell_labels)


def border_cells(cells: np.ndarray) -> set[int]:
    """Ids of the cells an image's edge cuts (they touch its outermost pixels)."""
    edge = np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])
    return set(np.unique(edge).tolist()) - {0}


def _write_sample(
    args: tuple[SyntheticConfig, int, Path],
) -> tuple[str, list[int], list[list[int] | None]]:
    cfg, index, out = args
    s = render_sample(cfg, index)
    cell_labels: list[list[int] | None] = list(s.cell_labels)
    if not cfg.border_truth:  # in masks/, but not annotated: an empty Label in cells.csv
        cut = border_cells(s.cells)
        cell_labels = [None if i in cut else x for i, x in enumerate(cell_labels, start=1)]
    for c, channel in enumerate(CHANNELS):
        write_channel(out / cfg.split / f"{s.sample_id}_{channel}.png", s.image[..., c])
    write_channel(out / "masks" / f"{s.sample_id}.png", s.cells)
    write_channel(out / "nuclei" / f"{s.sample_id}.png", s.nuclei)
    return s.sample_id, s.image_labels, cell_labels


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# Left in every folder the generator writes: only a folder that holds it (or an empty one) is ever
# written into, replaced or removed by the generator. A user's data folder never is.
MARKER = ".hpa-synthetic"
COMMAND = "hpa.synthetic"
SAMPLE_SUBMISSION = "sample_submission.csv"


def check_writable_target(out: str | Path) -> None:
    """`out` must be absent, empty, or hold only what the generator wrote (hpa.outputs)."""
    check_folder(out, "out", COMMAND)


def generate_dataset(cfg: SyntheticConfig, out: str | Path, progress: bool = True) -> Path:
    """Write a competition-layout data set with ground truth to `out` and return it.

    `out` must be absent, empty or an earlier synthetic set (InputError otherwise).
    """
    out = Path(out)
    with claim_folder(out, "out", COMMAND):
        names = [cfg.split, "masks", "nuclei", f"{cfg.split}.csv", "cells.csv", SAMPLE_SUBMISSION]
        claim_names(out, names, COMMAND)
        write_text(out / MARKER, f"written by hpa.synthetic: {cfg}\n")
        _generate(cfg, out, progress)
    return out


def _generate(cfg: SyntheticConfig, out: Path, progress: bool) -> None:
    for sub in (cfg.split, "masks", "nuclei"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(cfg, i, out) for i in range(cfg.n_images)]
    bar = tqdm(total=cfg.n_images, desc=f"synthetic {out.name}", unit="img", disable=not progress)
    results = []
    if cfg.workers > 1 and cfg.n_images > 4:
        pool = ProcessPoolExecutor(
            max_workers=cfg.workers, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        try:
            for r in pool.map(_write_sample, jobs, chunksize=4):
                results.append(r)
                bar.update()
        finally:  # stopped (SIGTERM, an error): drop the queued samples, finish those in flight
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for job in jobs:
            results.append(_write_sample(job))
            bar.update()
    bar.close()

    rows = [(sid, format_labels(labels)) for sid, labels, _ in results]
    cell_rows = [
        (sid, cell_id, "" if labels is None else format_labels(labels))
        for sid, _, per_cell in results
        for cell_id, labels in enumerate(per_cell, start=1)
    ]
    _write_csv(pd.DataFrame(rows, columns=["ID", "Label"]), out / f"{cfg.split}.csv")
    _write_csv(pd.DataFrame(cell_rows, columns=["ID", "cell_id", "Label"]), out / "cells.csv")
    sub = pd.DataFrame(
        {
            "ID": [r[0] for r in rows],
            "ImageWidth": cfg.image_size,
            "ImageHeight": cfg.image_size,
            "PredictionString": "",
        }
    )
    _write_csv(sub, out / SAMPLE_SUBMISSION)


def generate_atomically(cfg: SyntheticConfig, out: str | Path, progress: bool = True) -> Path:
    """Generate into a sibling temp folder and rename it into place: a kill leaves no half set.

    An existing `out` is replaced only when it is empty or a synthetic set (its marker); any
    other folder is refused before anything is written.
    """
    out = Path(out)
    with replace_folder(out, "out", COMMAND) as tmp:
        generate_dataset(cfg, tmp, progress=progress)
    return out


__all__ = [
    "NUM_CLASSES",
    "SyntheticConfig",
    "generate_dataset",
    "generate_atomically",
    "render_sample",
]
