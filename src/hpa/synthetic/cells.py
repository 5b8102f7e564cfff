"""Cell layout: touching cells grown around nuclei, as a fluorescence field of view looks."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Cell:
    """One cell: its label in the instance mask and the geometry the patterns draw on."""

    cell_id: int
    center: np.ndarray  # (y, x)
    radius: float  # mean cell radius in pixels
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 into the image
    mask: np.ndarray  # bool, box-sized: this cell's pixels
    nucleus: np.ndarray  # bool, box-sized: this cell's nucleus
    cell_dist: np.ndarray  # float, box-sized: normalised distance from the cell centre (1 = edge)
    nuc_dist: np.ndarray  # float, box-sized: normalised distance from the nucleus centre (1 = rim)
    nuc_center: np.ndarray  # (y, x) in box coordinates
    nuc_radius: float


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-ish random field whose features are about `scale` pixels wide."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / scale)) + 1), max(2, int(np.ceil(w / scale)) + 1)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _ellipse_distance(
    yy: np.ndarray, xx: np.ndarray, center: np.ndarray, axes: tuple[float, float], angle: float
) -> np.ndarray:
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)


def _place_centers(rng: np.random.Generator, size: int, n: int, radius: float) -> np.ndarray:
    """Centres at least ~1.5 radii apart; some near the border so that cells get cut, as in HPA."""
    centers: list[np.ndarray] = []
    min_gap = 1.5 * radius
    for _ in range(n * 200):
        if len(centers) == n:
            break
        p = rng.uniform(0.04 * size, 0.96 * size, size=2)
        if all(np.hypot(*(p - q)) >= min_gap for q in centers):
            centers.append(p)
    return np.array(centers, dtype=np.float32)


def layout_cells(
    rng: np.random.Generator, size: int, n_cells: int
) -> tuple[np.ndarray, np.ndarray, list[Cell]]:
    """Instance masks (uint16 cells, uint16 nuclei) and the per-cell geometry."""
    radius = size * np.sqrt(0.6 / (n_cells * np.pi))
    centers = _place_centers(rng, size, n_cells, radius)
    best = np.full((size, size), np.inf, dtype=np.float32)
    labels = np.zeros((size, size), dtype=np.uint16)
    wobble = smooth_noise(rng, (size, size), radius * 0.6) * 0.08
    params = []
    for i, center in enumerate(centers, start=1):
        axes = tuple(radius * rng.uniform(0.85, 1.3, size=2))
        angle = rng.uniform(0, np.pi)
        reach = int(1.35 * max(axes)) + 2
        y0, y1 = max(0, int(center[0]) - reach), min(size, int(center[0]) + reach)
        x0, x1 = max(0, int(center[1]) - reach), min(size, int(center[1]) + reach)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dist = _ellipse_distance(yy, xx, center, axes, angle) + wobble[y0:y1, x0:x1]
        region = best[y0:y1, x0:x1]
        win = (dist < 1.0) & (dist < region)
        region[win] = dist[win]
        labels[y0:y1, x0:x1][win] = i
        params.append((center, axes, angle, (y0, y1, x0, x1), dist))

    nuclei = np.zeros_like(labels)
    cells: list[Cell] = []
    for i, (center, axes, angle, box, dist) in enumerate(params, start=1):
        y0, y1, x0, x1 = box
        mask = labels[y0:y1, x0:x1] == i
        if mask.sum() < 0.15 * np.pi * radius**2:
            labels[y0:y1, x0:x1][mask] = 0  # a sliver squeezed out by its neighbours: drop it
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        nuc_axes = (axes[0] * rng.uniform(0.38, 0.48), axes[1] * rng.uniform(0.38, 0.48))
        nuc_center = center + rng.normal(0, 0.06 * radius, size=2).astype(np.float32)
        nuc_dist = _ellipse_distance(yy, xx, nuc_center, nuc_axes, angle + rng.normal(0, 0.3))
        nuc_dist = nuc_dist + smooth_noise(rng, mask.shape, radius * 0.3) * 0.05
        nucleus = (nuc_dist < 1.0) & mask
        if nucleus.sum() < 10:
            labels[y0:y1, x0:x1][mask] = 0
            continue
        nuclei[y0:y1, x0:x1][nucleus] = i
        cells.append(
            Cell(
                cell_id=i,
                center=center,
                radius=float(radius),
                box=box,
                mask=mask,
                nucleus=nucleus,
                cell_dist=dist,
                nuc_dist=nuc_dist,
                nuc_center=nuc_center - np.array([y0, x0], dtype=np.float32),
                nuc_radius=float(np.mean(nuc_axes)),
            )
        )
    # Renumber 1..n so instance ids are dense.
    remap = np.zeros(labels.max() + 1, dtype=np.uint16)
    for new_id, cell in enumerate(cells, start=1):
        remap[cell.cell_id] = new_id
        cell.cell_id = new_id
    return remap[labels], remap[nuclei], cells
