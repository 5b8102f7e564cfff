"""Cell and image probabilities -> one confidence per (cell, class)."""

from __future__ import annotations

import numpy as np

from hpa.errors import InputError
from hpa.segment.base import Segmentation

METHODS = ("power", "product", "mean")


def combine(
    cell: np.ndarray | None, image: np.ndarray | None, n_cells: int, method: str, cell_weight: float
) -> np.ndarray:
    """n_cells x classes confidences from cell-level (n x C) and/or image-level (C, or n x C: one
    row per cell, as hpa.ensemble passes cells of many images) probabilities.

    power:   cell^w * image^(1-w)  (w = 0.5: geometric mean; w = 1: cells only; w = 0: image only)
    product: cell * image          (what most top teams submitted)
    mean:    w * cell + (1 - w) * image
    With only one of the two, that one is used as it is.
    """
    if method not in METHODS:
        raise InputError(f"combine.method={method!r}: use one of {', '.join(METHODS)}")
    if not 0.0 <= cell_weight <= 1.0:
        raise InputError(f"combine.cell_weight={cell_weight}: use a value in [0, 1]")
    if cell is None and image is None:
        raise ValueError("need cell or image probabilities")
    if cell is None:
        return np.repeat(image[None, :], n_cells, axis=0)
    if image is None:
        return cell
    image = image if image.ndim == 2 else image[None, :]  # n x C: each cell's own image row
    if method == "power":
        out = cell**cell_weight * image ** (1.0 - cell_weight)
    elif method == "product":
        out = cell * image
    else:
        out = cell_weight * cell + (1.0 - cell_weight) * image
    return np.clip(out, 0.0, 1.0)


def cell_weights(
    segmentation: Segmentation,
    cell_ids: np.ndarray,
    border: float,
    small: float,
    small_fraction: float,
    area_border: float | None = None,
    area_interior: float | None = None,
    reference_size: float = 2048.0,
) -> np.ndarray:
    """Per-cell confidence multipliers: `border` for cells cut by the image edge, `small` for
    cells under `small_fraction` of the image's median cell area (often debris or fragments, and
    in the real test set often unannotated, which is why top teams down-weighted them).

    Area-scaled (7th place): x min(1, area / area_border) for border cells and
    x min(1, area / area_interior) for the others, the two areas meant for an image of side
    `reference_size` and scaled by (image side / reference_size)^2; None or 0 turns one off.
    """
    weights = np.ones(len(cell_ids), dtype=np.float64)
    if len(cell_ids) == 0:
        return weights
    on_border = np.isin(cell_ids, segmentation.border)
    if border != 1.0:
        weights[on_border] *= border
    areas = np.bincount(segmentation.cells.ravel(), minlength=int(cell_ids.max()) + 1)[cell_ids]
    if small != 1.0:
        weights[areas < small_fraction * np.median(areas)] *= small
    shape = segmentation.cells.shape[:2]
    return weights * area_factors(
        areas, on_border, shape, area_border, area_interior, reference_size
    )


def area_factors(
    areas: np.ndarray,
    on_border: np.ndarray,
    shape: tuple[int, ...],
    area_border: float | None,
    area_interior: float | None,
    reference_size: float = 2048.0,
) -> np.ndarray:
    """The area-scaled multipliers of cell_weights: min(1, area / area_border) for cells on the
    border, min(1, area / area_interior) for the others, the two areas meant for an image of side
    `reference_size` (the image's is max(`shape`)); None or 0 turns one off."""
    factors = np.ones(len(areas), dtype=np.float64)
    if not (area_border or area_interior):
        return factors
    if reference_size <= 0:
        raise InputError(f"downweight.area.reference_size={reference_size}: use a size > 0")
    scale = (max(shape[:2]) / reference_size) ** 2
    for where, full_area in ((on_border, area_border), (~on_border, area_interior)):
        if full_area:
            factors[where] = np.minimum(1.0, areas[where] / (full_area * scale))
    return factors
