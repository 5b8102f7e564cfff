"""Adapter for HPA-Cell-Segmentation (`hpacellseg`), the community's reference segmenter.

Optional: the user installs hpacellseg (`pip install --no-deps`) and haoxusci/pytorch_zoo, whose
classes its pickled models need, and downloads the two weight files. Nothing here downloads
anything: we load the models from the local files named, after the user opted in with
`allow_pickle=True` (unpickling runs code), and hand hpacellseg the loaded objects, so its own
download-if-missing path never runs. `hpacellseg_compat` makes release 0.1.8 run on current
scikit-image and numpy, on non-square images, with its pixel sizes scaled to each image.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hpa.errors import InputError
from hpa.segment.base import Segmentation, border_ids, check_image
from hpa.segment.hpacellseg_compat import (
    REFERENCE_SIZE,
    patch_rescale,
    restore_rim,
    scaled_label_cell,
    size_scale,
    square_safe,
)
from hpa.segment.hpacellseg_weights import (
    ZOO_SOURCE,
    load_model,
    local_file,
    missing_classes,
    resolve_device,
)
from hpa.segment.watershed import upscale

INSTALL_HINT = (
    "install hpacellseg (HPA-Cell-Segmentation: pip install --no-deps, from its GitHub "
    "repository or a wheel; on Kaggle, a bundle built with --with-hpacellseg) and pytorch_zoo "
    "from haoxusci/pytorch_zoo on GitHub, or use the weight-free default segmenter (watershed)"
)
PICKLE_HINT = (
    "hpacellseg weights are pickled torch models, and loading them can run arbitrary code; if "
    "you trust the files, opt in with allow_pickle=True (e.g. segmenter.allow_pickle=true)"
)
_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


@dataclass
class HPACellSegmenter:
    """HPA-Cell-Segmentation's nuclei and cell U-Nets plus its `label_cell` post-processing."""

    nuclei_model: str | Path  # a local file, or auto: found among Kaggle's inputs
    cell_model: str | Path
    allow_pickle: bool = False  # the weights are pickled models: loading them runs their code
    scale_factor: float = 0.25  # the networks see the image at this scale
    device: str = "cpu"  # cpu, cuda, cuda:N or auto; cuda without a GPU falls back to cpu
    padding: bool = True  # without padding, 1728 px images fail inside hpacellseg
    multi_channel_model: bool = True  # the 3-channel (red, yellow, blue) cell model
    # label_cell runs at this fraction of the full resolution (sizes scaled to match); the masks
    # come back at full resolution. 1.0 = hpacellseg as released. Between scale_factor and 1.
    post_scale: float = 1.0
    reference_size: int = REFERENCE_SIZE  # label_cell's sizes are for images of this side
    _segmentator: Any = field(default=None, init=False, repr=False)
    _label_cell: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_options()
        self._find_attached()
        if not self.allow_pickle:
            raise InputError(PICKLE_HINT)
        paths = {
            "nuclei_model": local_file("nuclei_model", self.nuclei_model),
            "cell_model": local_file("cell_model", self.cell_model),
        }
        cellsegmentator = _import("hpacellseg.cellsegmentator")
        patch_rescale(cellsegmentator)
        self._label_cell = _import("hpacellseg.utils").label_cell
        device = resolve_device(self.device)
        segmentator_class = square_safe(cellsegmentator.CellSegmentator)
        self._segmentator = segmentator_class(
            load_model("nuclei_model", paths["nuclei_model"], device),
            load_model("cell_model", paths["cell_model"], device),
            scale_factor=self.scale_factor,
            device=device,
            padding=self.padding,
            multi_channel_model=self.multi_channel_model,
        )

    def _find_attached(self) -> None:
        """`auto` weights: the files attached under /kaggle/input (or $HPA_KAGGLE_INPUT)."""
        from hpa.kaggle.inputs import find_hpacellseg_weight, is_auto

        for name in ("nuclei_model", "cell_model"):
            if is_auto(str(getattr(self, name))):
                setattr(self, name, find_hpacellseg_weight(name))

    def _check_options(self) -> None:
        if not 0.0 < self.scale_factor <= 1.0:
            raise InputError(f"hpacellseg scale_factor={self.scale_factor}: use a value in (0, 1]")
        if not self.scale_factor <= self.post_scale <= 1.0:
            raise InputError(
                f"hpacellseg post_scale={self.post_scale}: use a value from scale_factor "
                f"({self.scale_factor}, the networks' own resolution) to 1 (full resolution)"
            )
        if self.reference_size < 64:
            raise InputError(f"hpacellseg reference_size={self.reference_size}: use >= 64 px")
        if not _DEVICE.fullmatch(str(self.device)):
            raise InputError(f"hpacellseg device={self.device!r}: use cpu, cuda, cuda:N or auto")

    def segment(self, image: np.ndarray) -> Segmentation:
        return self.segment_batch([image])[0]

    def segment_batch(self, images: list[np.ndarray]) -> list[Segmentation]:
        """Several images in one call: hpacellseg runs its networks over the list."""
        for image in images:
            check_image(image)
        work = [self._shrink(image) for image in images]
        if not self.padding:
            self._check_unpadded(work)
        red = [np.ascontiguousarray(im[..., 0]) for im in work]
        blue = [np.ascontiguousarray(im[..., 2]) for im in work]
        yellow = [np.ascontiguousarray(im[..., 3]) for im in work]
        # The networks see the image at scale_factor of the full size whatever post_scale is.
        self._segmentator.scale_factor = self.scale_factor / self.post_scale
        try:
            nuclei_pred = self._segmentator.pred_nuclei(blue)
            cell_pred = self._segmentator.pred_cells(
                [red, yellow if self.multi_channel_model else None, blue]
            )
        except TypeError as err:
            if "multichannel" not in str(err):
                raise
            # patch_rescale covers hpacellseg 0.1.8; another release may call it elsewhere.
            raise InputError(
                f"hpacellseg does not run on this scikit-image ({err}); install a version of "
                "hpacellseg that passes channel_axis=-1 to skimage.transform.rescale"
            ) from None
        results = []
        for image, small, nuc, cell in zip(images, work, nuclei_pred, cell_pred, strict=True):
            results.append(self._label(nuc, cell, small.shape[:2], image.shape[:2]))
        return results

    def _check_unpadded(self, work: list[np.ndarray]) -> None:
        """The U-Nets halve their input 5 times: unpadded, it must be a multiple of 32 px."""
        scale = self.scale_factor / self.post_scale
        for image in work:
            rows, cols = (round(side * scale) for side in image.shape[:2])
            if rows % 32 or cols % 32:
                raise InputError(
                    f"hpacellseg padding=false needs the networks' input ({rows} x {cols} px at "
                    f"scale_factor={self.scale_factor}) to be a multiple of 32 px; set "
                    "segmenter.padding=true"
                )

    def _shrink(self, image: np.ndarray) -> np.ndarray:
        if self.post_scale >= 1.0:
            return image
        height, width = image.shape[:2]
        size = (max(1, round(width * self.post_scale)), max(1, round(height * self.post_scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _label(
        self,
        nuclei_pred: np.ndarray,
        cell_pred: np.ndarray,
        work_shape: tuple[int, int],
        full_shape: tuple[int, int],
    ) -> Segmentation:
        """label_cell at working scale, its sizes scaled to it; labels back at full size."""
        label_cell = scaled_label_cell(
            self._label_cell, size_scale(*work_shape, reference_size=self.reference_size)
        )
        nuclei, cells = label_cell(nuclei_pred, cell_pred)
        if np.shape(cells) != tuple(work_shape):
            raise RuntimeError(f"hpacellseg returned {np.shape(cells)} masks for {work_shape}")
        cells = upscale(restore_rim(np.asarray(cells), self.post_scale), *full_shape)
        nuclei = upscale(np.asarray(nuclei), *full_shape)
        # label_cell gives nuclei their cell's id already; enforce it so the contract holds.
        nuclei = np.where((nuclei > 0) & (cells > 0), cells, 0).astype(np.int32)
        return Segmentation(cells, nuclei, border_ids(cells))


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise InputError(f"segmenter hpacellseg needs {module} ({err}); {INSTALL_HINT}") from None


def hpacellseg_problems(
    nuclei_model: str | Path | None, cell_model: str | Path | None
) -> list[str]:
    """What stops `segmenter=hpacellseg` here, one line each ([] when nothing does).

    For `python -m hpa.doctor`: checks hpacellseg and pytorch_zoo are installed, that the weight
    files exist, and that every class their pickles name can be imported. Unpickles nothing.
    """
    problems = []
    if _spec("hpacellseg.cellsegmentator") is None:
        problems.append(f"hpacellseg is not installed; {INSTALL_HINT}")
    weights = []
    for name, value in (("nuclei_model", nuclei_model), ("cell_model", cell_model)):
        if value is None:
            continue
        try:
            weights.append(local_file(name, value))
        except InputError as err:
            problems.append(str(err))
    for path in weights:
        problems.extend(missing_classes(path))
    if not weights and _spec("pytorch_zoo") is None:  # files given: their classes were checked
        problems.append(f"pytorch_zoo is not installed; hpacellseg's weights need it: {ZOO_SOURCE}")
    return problems


def _spec(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
