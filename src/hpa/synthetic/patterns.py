"""One green (protein) pattern per class, drawn where that compartment is in a cell.

Each pattern takes the cell's geometry and returns a box-sized float image in [0, 1]. They are
deliberately distinct in place (nucleus, rim, cytoplasm, edge) and texture (fill, blobs, dots,
threads, lines) so that a model can learn them, as a biologist tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from hpa.synthetic.cells import Cell, smooth_noise


@dataclass
class Context:
    """What patterns may copy or scale by: the cell's red/yellow structures and line width."""

    red: np.ndarray  # box-sized microtubule pattern of this cell
    yellow: np.ndarray  # box-sized ER pattern of this cell
    unit: float  # pixels per "thin line" at this image size


Pattern = Callable[[np.random.Generator, Cell, Context], np.ndarray]


def _canvas(cell: Cell) -> np.ndarray:
    return np.zeros(cell.mask.shape, dtype=np.uint8)


def _points_in(rng: np.random.Generator, region: np.ndarray, n: int) -> np.ndarray:
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return np.zeros((0, 2), dtype=np.int32)
    idx = rng.integers(0, len(ys), size=n)
    return np.stack([ys[idx], xs[idx]], axis=1)


def _dots(rng, cell, region, n, radius, value=255) -> np.ndarray:
    canvas = _canvas(cell)
    r = max(1, int(round(radius)))
    for y, x in _points_in(rng, region, n):
        cv2.circle(canvas, (int(x), int(y)), r, value, -1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _cytoplasm(cell: Cell) -> np.ndarray:
    return cell.mask & ~cell.nucleus


def _near_nucleus(cell: Cell, lo: float, hi: float) -> np.ndarray:
    return _cytoplasm(cell) & (cell.nuc_dist > lo) & (cell.nuc_dist < hi)


def nucleoplasm(rng, cell, ctx):
    tex = 0.85 + 0.15 * smooth_noise(rng, cell.mask.shape, cell.nuc_radius * 0.3)
    return cell.nucleus * np.clip(tex, 0, 1) * 0.75


def nuclear_membrane(rng, cell, ctx):
    band = np.abs(cell.nuc_dist - 0.9) < 0.12
    return (band & cell.mask).astype(np.float32)


def _nucleoli_sites(rng, cell, n):
    return _points_in(rng, cell.nuc_dist < 0.55, n)


def nucleoli(rng, cell, ctx):
    """One to three large solid blobs inside the nucleus."""
    canvas = _canvas(cell)
    for y, x in _nucleoli_sites(rng, cell, rng.integers(1, 4)):
        axes = (max(2, int(cell.nuc_radius * rng.uniform(0.22, 0.3))),) * 2
        cv2.ellipse(canvas, (int(x), int(y)), axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def fibrillar_center(rng, cell, ctx):
    canvas = _canvas(cell)
    r = max(1, int(round(cell.nuc_radius * 0.045)))
    for y, x in _nucleoli_sites(rng, cell, rng.integers(2, 5)):
        spread = cell.nuc_radius * 0.14
        for dy, dx in rng.normal(0, spread, size=(rng.integers(4, 8), 2)):
            cv2.circle(canvas, (int(x + dx), int(y + dy)), r, 255, -1, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * cell.nucleus


def nuclear_speckles(rng, cell, ctx):
    canvas = _canvas(cell)
    for y, x in _points_in(rng, cell.nuc_dist < 0.85, rng.integers(12, 22)):
        axes = (
            max(1, int(cell.nuc_radius * rng.uniform(0.06, 0.11))),
            max(1, int(cell.nuc_radius * rng.uniform(0.03, 0.06))),
        )
        cv2.ellipse(
            canvas, (int(x), int(y)), axes, rng.uniform(0, 180), 0, 360, 220, -1, cv2.LINE_AA
        )
    return canvas.astype(np.float32) / 255.0 + 0.15 * cell.nucleus


def nuclear_bodies(rng, cell, ctx):
    """A few (3-6) small round dots spread over the nucleus."""
    return _dots(rng, cell, cell.nuc_dist < 0.8, rng.integers(3, 7), cell.nuc_radius * 0.1)


def endoplasmic_reticulum(rng, cell, ctx):
    return ctx.yellow.copy()


def golgi(rng, cell, ctx):
    side = rng.uniform(0, 2 * np.pi)
    cy = cell.nuc_center[0] + np.sin(side) * cell.nuc_radius * 1.25
    cx = cell.nuc_center[1] + np.cos(side) * cell.nuc_radius * 1.25
    canvas = _canvas(cell)
    for _ in range(rng.integers(6, 12)):
        dy, dx = rng.normal(0, cell.radius * 0.09, size=2)
        axes = (max(1, int(cell.radius * 0.06)), max(1, int(cell.radius * 0.03)))
        cv2.ellipse(
            canvas,
            (int(cx + dx), int(cy + dy)),
            axes,
            rng.uniform(0, 180),
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
        )
    return (canvas.astype(np.float32) / 255.0) * _cytoplasm(cell)


def _curve(rng, start, direction, length, steps, bend):
    pts, p, a = [start], np.array(start, dtype=np.float32), direction
    for _ in range(steps):
        a += rng.normal(0, bend)
        p = p + length / steps * np.array([np.cos(a), np.sin(a)])
        pts.append(p.copy())
    return np.array(pts, dtype=np.int32)


def intermediate_filaments(rng, cell, ctx):
    """Wavy filaments wound around the nucleus (a perinuclear cage)."""
    canvas = _canvas(cell)
    t = max(1, int(round(ctx.unit)))
    cy, cx = cell.nuc_center
    for _ in range(rng.integers(6, 10)):
        r = cell.nuc_radius * rng.uniform(1.2, 2.2)
        a0 = rng.uniform(0, 2 * np.pi)
        angles = a0 + np.linspace(0, rng.uniform(1.5, 3.0), 24)
        rr = r * (1 + 0.12 * np.sin(angles * rng.uniform(3, 6)))
        pts = np.stack([cx + rr * np.cos(angles), cy + rr * np.sin(angles)], axis=1).astype(
            np.int32
        )
        cv2.polylines(canvas, [pts], False, 255, t, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * _cytoplasm(cell)


def actin_filaments(rng, cell, ctx):
    """Straight parallel stress fibres spanning the cell."""
    canvas = _canvas(cell)
    t = max(1, int(round(ctx.unit)))
    h, w = canvas.shape
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)])
    n = np.array([-d[1], d[0]])
    center = np.array([w / 2, h / 2])
    spacing = cell.radius * 0.16
    for k in np.arange(-6, 7):
        c = center + n * k * spacing
        p0, p1 = (c - d * 2 * cell.radius).astype(int), (c + d * 2 * cell.radius).astype(int)
        cv2.line(canvas, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 230, t, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * cell.mask


def microtubules(rng, cell, ctx):
    return ctx.red.copy()


def mitotic_spindle(rng, cell, ctx):
    """Two poles with fibres fanning between them, across the cell centre."""
    canvas = _canvas(cell)
    t = max(1, int(round(ctx.unit)))
    cy, cx = cell.nuc_center
    angle = rng.uniform(0, np.pi)
    half = cell.nuc_radius * 1.1
    p0 = np.array([cx - np.cos(angle) * half, cy - np.sin(angle) * half])
    p1 = np.array([cx + np.cos(angle) * half, cy + np.sin(angle) * half])
    normal = np.array([-np.sin(angle), np.cos(angle)])
    for k in np.linspace(-1, 1, 9):
        mid = (p0 + p1) / 2 + normal * k * half * 0.7
        pts = np.array([p0, mid, p1]).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 255, t, cv2.LINE_AA)
    for p in (p0, p1):
        cv2.circle(
            canvas,
            (int(p[0]), int(p[1])),
            max(2, int(cell.nuc_radius * 0.15)),
            255,
            -1,
            cv2.LINE_AA,
        )
    return (canvas.astype(np.float32) / 255.0) * cell.mask


def centrosome(rng, cell, ctx):
    canvas = _canvas(cell)
    side = rng.uniform(0, 2 * np.pi)
    r = max(1, int(round(cell.nuc_radius * 0.12)))
    for k in range(rng.integers(1, 3)):
        dist = cell.nuc_radius * (1.2 + 0.15 * k)
        y = cell.nuc_center[0] + np.sin(side + 0.3 * k) * dist
        x = cell.nuc_center[1] + np.cos(side + 0.3 * k) * dist
        cv2.circle(canvas, (int(x), int(y)), r, 255, -1, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * cell.mask


def plasma_membrane(rng, cell, ctx):
    inner = cv2.distanceTransform(np.pad(cell.mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    width = max(1.5, cell.radius * 0.07)
    return ((inner > 0) & (inner <= width)).astype(np.float32)


def mitochondria(rng, cell, ctx):
    canvas = _canvas(cell)
    t = max(1, int(round(ctx.unit)))
    seg = cell.radius * 0.08
    for y, x in _points_in(rng, _cytoplasm(cell), rng.integers(40, 70)):
        a = rng.uniform(0, np.pi)
        p1 = (int(x + np.cos(a) * seg), int(y + np.sin(a) * seg))
        cv2.line(canvas, (int(x), int(y)), p1, 200, t, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * _cytoplasm(cell)


def aggresome(rng, cell, ctx):
    canvas = _canvas(cell)
    side = rng.uniform(0, 2 * np.pi)
    r = max(2, int(cell.radius * 0.2))
    dist = cell.nuc_radius + r * 0.9
    y = cell.nuc_center[0] + np.sin(side) * dist
    x = cell.nuc_center[1] + np.cos(side) * dist
    cv2.circle(canvas, (int(x), int(y)), r, 255, -1, cv2.LINE_AA)
    return (canvas.astype(np.float32) / 255.0) * _cytoplasm(cell)


def cytosol(rng, cell, ctx):
    tex = 0.85 + 0.15 * smooth_noise(rng, cell.mask.shape, cell.radius * 0.3)
    return _cytoplasm(cell) * np.clip(tex, 0, 1) * 0.6


def vesicles(rng, cell, ctx):
    return _dots(rng, cell, _cytoplasm(cell), rng.integers(15, 35), cell.radius * 0.035)


def negative(rng, cell, ctx):
    return np.zeros(cell.mask.shape, dtype=np.float32)


# Index = class id (hpa.labels.CLASS_NAMES).
PATTERNS: tuple[Pattern, ...] = (
    nucleoplasm,
    nuclear_membrane,
    nucleoli,
    fibrillar_center,
    nuclear_speckles,
    nuclear_bodies,
    endoplasmic_reticulum,
    golgi,
    intermediate_filaments,
    actin_filaments,
    microtubules,
    mitotic_spindle,
    centrosome,
    plasma_membrane,
    mitochondria,
    aggresome,
    cytosol,
    vesicles,
    negative,
)


def microtubule_network(rng: np.random.Generator, cell: Cell, unit: float) -> np.ndarray:
    """Red channel: curved filaments radiating from the nucleus to the cell edge."""
    canvas = _canvas(cell)
    t = max(1, int(round(unit)))
    cy, cx = cell.nuc_center
    for a in rng.uniform(0, 2 * np.pi, size=rng.integers(18, 28)):
        start = (cx + np.cos(a) * cell.nuc_radius * 0.8, cy + np.sin(a) * cell.nuc_radius * 0.8)
        pts = _curve(rng, start, a, cell.radius * 1.4, 10, 0.15)
        cv2.polylines(canvas, [pts], False, 200, t, cv2.LINE_AA)
    base = 0.18 * cell.mask
    return np.maximum(canvas.astype(np.float32) / 255.0 * cell.mask, base)


def er_network(rng: np.random.Generator, cell: Cell) -> np.ndarray:
    """Yellow channel: a reticular texture, densest around the nucleus."""
    tex = smooth_noise(rng, cell.mask.shape, cell.radius * 0.08)
    mesh = np.clip(1.0 - np.abs(tex) * 2.2, 0, 1)  # ridges of the noise look like a network
    falloff = np.clip(1.3 - 0.9 * cell.cell_dist, 0.2, 1.0)
    return (0.15 + 0.85 * mesh * falloff) * _cytoplasm(cell) + 0.1 * cell.nucleus
