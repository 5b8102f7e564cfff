"""The default segmenter: seeded watershed on the stains, no weights, at reduced scale."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

from hpa.errors import InputError
from hpa.segment.base import Segmentation, border_ids, check_image


@dataclass
class WatershedSegmenter:
    """Nuclei from the blue channel; cells grown from them over the red and yellow channels.

    Every size below is relative to the nucleus size measured on each image (the median nucleus
    area, or its diameter), and every threshold is relative to that image's own background and
    Otsu levels, so one setting serves 1728-3072 px HPA fields of view, other exposures, and
    small synthetic images. The thresholds come from a held-out search against
    HPA-Cell-Segmentation's masks (scripts/tune_watershed.py: picked on one real image, reported
    on the other and on synthetic images; docs/segmentation.md); the rest were chosen on
    synthetic sets, inside ranges where the result does not change much.
    """

    work_size: int = 512  # longest side of the working image; smaller images are used as they are
    # Thresholds: the fraction of the way from the background level (2nd percentile) to Otsu's.
    nucleus_threshold: float = 0.3  # of the blue channel; low enough for dim nuclei
    cell_threshold: float = 0.35  # of max(red, yellow); cell edges are much dimmer than bodies
    # Touching nuclei split where the neck is narrower than neck_ratio x the smaller lobe.
    neck_ratio: float = 0.5
    min_lobe: float = 0.3  # x nucleus radius: thinner bumps never split off
    min_nucleus: float = (
        0.2  # x median nucleus area: smaller blue specks inside the image are dropped
    )
    min_border_nucleus: float = 0.05  # the same for nuclei cut by the image border
    cell_smooth: float = 0.1  # x nucleus diameter: Gaussian sigma before the cell threshold
    split_smooth: float = 0.06  # x nucleus diameter: sigma of the signal whose valleys split cells
    min_cell: float = 0.5  # x median nucleus area: smaller cells are dropped

    def __post_init__(self) -> None:
        if self.work_size < 64:
            raise InputError(f"segment work_size={self.work_size}: use at least 64 px")
        if not 0.0 < self.neck_ratio < 1.0:
            raise InputError(f"segment neck_ratio={self.neck_ratio}: use a value in (0, 1)")

    def segment(self, image: np.ndarray) -> Segmentation:
        check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.work_size / max(height, width))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        planes = small.astype(np.float32) / 255.0
        nuclei, diameter = self.find_nuclei(planes[..., 2])
        cells, nuclei = self.grow_cells(planes, nuclei, diameter)
        cells = upscale(cells, height, width)
        return Segmentation(cells, upscale(nuclei, height, width), border_ids(cells))

    def find_nuclei(self, blue: np.ndarray) -> tuple[np.ndarray, float]:
        """Nucleus instances at working scale and the typical nucleus diameter in pixels."""
        smooth = filters.gaussian(blue, 1.0)
        if np.ptp(smooth) < 1e-3:  # a blank channel: no nuclei, hence no cells
            return np.zeros(blue.shape, np.int32), 0.0
        mask = smooth > above_background(smooth, self.nucleus_threshold)
        mask = ndi.binary_fill_holes(ndi.binary_opening(mask, morphology.disk(1)))
        components, n = ndi.label(mask)
        if n == 0:
            return np.zeros(blue.shape, np.int32), 0.0
        areas = np.bincount(components.ravel())[1:]
        # Median over the bigger blobs: specks must not drag the size estimate down.
        typical = float(np.median(areas[areas >= 0.1 * areas.max()]))
        min_area = np.full(n + 1, self.min_nucleus * typical)
        min_area[border_ids(components)] = self.min_border_nucleus * typical
        keep = np.bincount(components.ravel(), minlength=n + 1) >= min_area
        keep[0] = False
        mask = keep[components]
        radius = np.sqrt(typical / np.pi)
        dist = filters.gaussian(ndi.distance_transform_edt(mask), max(1.0, 0.1 * radius))
        markers = split_markers(dist, mask, self.neck_ratio, self.min_lobe * radius)
        return segmentation.watershed(-dist, markers, mask=mask).astype(np.int32), 2.0 * radius

    def grow_cells(
        self, planes: np.ndarray, nuclei: np.ndarray, diameter: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cells flooded from the nuclei; the nuclei relabelled to their cell's id."""
        if nuclei.max() == 0:
            return nuclei, nuclei
        signal = np.maximum(planes[..., 0], planes[..., 3])  # microtubules or ER mark the cytoplasm
        body = filters.gaussian(signal, max(1.0, self.cell_smooth * diameter))
        nucleus_area = np.pi * (diameter / 2) ** 2
        # Only small holes: in a confluent field the gaps between cells are holes too.
        foreground = body > above_background(body, self.cell_threshold)
        foreground = fill_small_holes(foreground | (nuclei > 0), nucleus_area)
        # Brightest paths first: touching cells part along the dim valley between them.
        valleys = -filters.gaussian(signal, max(1.0, self.split_smooth * diameter))
        cells = segmentation.watershed(valleys, nuclei, mask=foreground)
        cells = fill_label_holes(drop_small(cells, self.min_cell * nucleus_area))
        cells, _, _ = segmentation.relabel_sequential(cells)
        # The watershed kept each nucleus's id for its cell, so a nucleus takes its cell's new id.
        return cells, np.where(nuclei > 0, cells, 0)


def above_background(signal: np.ndarray, fraction: float) -> float:
    """The level `fraction` of the way from the background (2nd percentile) to Otsu's threshold."""
    background = float(np.percentile(signal, 2))
    return background + fraction * (float(filters.threshold_otsu(signal)) - background)


def split_markers(
    dist: np.ndarray, mask: np.ndarray, neck_ratio: float, min_peak: float
) -> np.ndarray:
    """One marker per lobe of the distance map whose neck is narrow relative to the lobe.

    h-maxima of log(distance) with h = -log(neck_ratio) keeps a peak when saddle / peak <=
    neck_ratio: the same test for every nucleus size. A blob left without a marker (too thin for
    `min_peak`, e.g. a nucleus cut by the border) becomes one marker of its own.
    """
    peaks = morphology.h_maxima(np.log1p(dist), -np.log(neck_ratio)).astype(bool)
    markers, n = ndi.label(peaks & mask & (dist >= min_peak))
    components, n_components = ndi.label(mask)
    has_marker = np.zeros(n_components + 1, bool)
    has_marker[components[markers > 0]] = True
    lonely = mask & ~has_marker[components]
    extra, _ = ndi.label(lonely)
    return np.where(lonely, extra + n, markers)


def fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill enclosed background regions smaller than max_area (works on every scikit-image)."""
    holes, _ = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
    small = np.bincount(holes.ravel()) < max_area
    small[0] = False
    return mask | small[holes]


def drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Background enclosed by a single instance joins it."""
    filled = labels.copy()
    for idx, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        region = filled[box]
        inside = ndi.binary_fill_holes(labels[box] == idx)
        region[inside & (region == 0)] = idx
    return filled


def upscale(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label image (ids stay exact)."""
    rows = ((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.intp)
    rows = np.minimum(rows, labels.shape[0] - 1)
    cols = np.minimum(cols, labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]].astype(np.int32)
