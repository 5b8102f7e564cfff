"""One image -> its cells' masks (as submission text) and 19 confidences each."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from hpa.data.cells import crop_cells
from hpa.data.images import resize
from hpa.errors import InputError
from hpa.inference.cam import cam_cell_probs
from hpa.inference.classifiers import Classifier, predict_probs
from hpa.inference.combine import cell_weights, combine
from hpa.inference.tta import augmentations
from hpa.segment.base import Segmentation, Segmenter
from hpa.submission.encoding import encode_binary_mask

CROP_MODES = ("native", "fill")
IMAGE_MODEL_CELLS = ("crops", "cam")  # how image models score cells (hpa.inference.cam)


@dataclass
class CellPredictions:
    masks: list[str]  # one encoded full-resolution mask per cell
    probs: np.ndarray  # cells x classes, in [0, 1]


@dataclass
class PredictOptions:
    tta: Sequence[str] | int
    batch_size: int
    image_model_on_cells: bool  # no cell model: classify crops with the image models too
    image_model_crop: str  # native: cells at the scale the image model trained on; fill: fill it
    cell_margin: float  # crop margin for image models on cells (cell models use their own)
    method: str
    cell_weight: float
    border_weight: float
    small_weight: float
    small_fraction: float
    tta_scales: Sequence[float] = (1.0,)  # input scales averaged (hpa.inference.tta)
    area_border: float | None = None  # x min(1, area / this) for border cells (at reference_size)
    area_interior: float | None = None  # the same for the other cells
    area_reference_size: float = 2048.0  # the image side the two areas are meant for
    image_model_cells: str = "crops"  # crops: classify cell crops | cam: class maps in the masks


def segment_sample(segmenter: Segmenter, sample_id: str, image: np.ndarray) -> Segmentation:
    """Segmenters that look masks up by ID (segmenter=truth) offer `segment_sample`."""
    by_id = getattr(segmenter, "segment_sample", None)
    return by_id(sample_id, image) if by_id is not None else segmenter.segment(image)


class Predictor:
    """Segment, crop, classify (image and cell models), combine, encode; times every stage."""

    def __init__(
        self, classifiers: Sequence[Classifier], segmenter: Segmenter, options: PredictOptions
    ):
        self.options = options
        self.segmenter = segmenter
        self.augmentations = augmentations(options.tta, options.tta_scales)
        if options.image_model_crop not in CROP_MODES:
            raise InputError(f"image_model_crop={options.image_model_crop!r}: use native or fill")
        self.image_models = [c for c in classifiers if c.level == "image"]
        # Models that take the same crops share one cropping pass: (size, margin, native scale).
        self.crop_groups: dict[tuple[int, float, bool], list[Classifier]] = defaultdict(list)
        for c in classifiers:
            if c.level == "cell":
                margin = options.cell_margin if c.cell_margin is None else float(c.cell_margin)
                self.crop_groups[(c.size, margin, False)].append(c)
        if options.image_model_cells not in IMAGE_MODEL_CELLS:
            raise InputError(
                f"image_model_cells={options.image_model_cells!r}: use one of "
                f"{', '.join(IMAGE_MODEL_CELLS)}"
            )
        # Image models scoring cells through their class maps (image_model_cells=cam).
        self.cam_models: list[Classifier] = []
        if not self.crop_groups and options.image_model_on_cells:
            native = options.image_model_crop == "native"
            if options.image_model_cells == "cam":
                self.cam_models = list(self.image_models)
            else:
                for c in self.image_models:
                    self.crop_groups[(c.size, options.cell_margin, native)].append(c)
        self.seconds: dict[str, float] = defaultdict(float)
        self.images = 0

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start

    def __call__(self, sample_id: str, image: np.ndarray) -> CellPredictions:
        self.images += 1
        with self.timed("segmentation"):
            seg = segment_sample(self.segmenter, sample_id, image)
        labels = seg.cells.astype(np.int32, copy=False)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if len(ids) == 0:
            return CellPredictions([], np.zeros((0, 0)))
        cell_prob = self.cell_probs(image, labels, ids)
        with self.timed("classification"):
            image_prob = self.image_prob(image)
        o = self.options
        probs = combine(cell_prob, image_prob, len(ids), o.method, o.cell_weight)
        probs = (
            probs
            * cell_weights(
                seg,
                ids,
                o.border_weight,
                o.small_weight,
                o.small_fraction,
                area_border=o.area_border,
                area_interior=o.area_interior,
                reference_size=o.area_reference_size,
            )[:, None]
        )
        with self.timed("encoding"):
            # Column-major labels give column-major masks, which RLE encodes without a copy (4x faster).
            fortran = np.asfortranarray(labels)
            masks = [encode_binary_mask(fortran == i) for i in ids]
        return CellPredictions(masks, np.clip(probs, 0.0, 1.0))

    def cell_probs(
        self, image: np.ndarray, labels: np.ndarray, ids: np.ndarray
    ) -> np.ndarray | None:
        """Weighted mean over cell models of their crops' probabilities (cells by ascending id)."""
        total, count = None, 0.0
        for (size, margin, native), models in self.crop_groups.items():
            with self.timed("crops"):
                # native: the factor by which the image model saw the whole image shrunk
                max_scale = size / max(image.shape[:2]) if native else None
                crops, _ = crop_cells(image, labels, size, margin, max_scale)
            with self.timed("classification"):
                weight = sum(m.weight for m in models)
                probs = self.probs(models, crops) * weight
            total, count = (probs if total is None else total + probs), count + weight
        if self.cam_models:
            with self.timed("cam"):
                weight = sum(m.weight for m in self.cam_models)
                probs = cam_cell_probs(self.cam_models, image, labels, ids, self.augmentations)
            total = probs * weight if total is None else total + probs * weight
            count += weight
        return None if total is None else total / count

    def image_prob(self, image: np.ndarray) -> np.ndarray | None:
        """Weighted mean over image models of the whole image's probabilities."""
        if not self.image_models:
            return None
        total = 0.0
        for size in sorted({m.size for m in self.image_models}):
            models = [m for m in self.image_models if m.size == size]
            weight = sum(m.weight for m in models)
            total = total + self.probs(models, resize(image, size)[None])[0] * weight
        return total / sum(m.weight for m in self.image_models)

    def probs(self, models: Sequence[Classifier], images: np.ndarray) -> np.ndarray:
        nets, weights = [m.net for m in models], [m.weight for m in models]
        return predict_probs(nets, images, self.augmentations, self.options.batch_size, weights)

    def per_image_seconds(self) -> dict[str, float]:
        return {k: v / max(1, self.images) for k, v in self.seconds.items()}
