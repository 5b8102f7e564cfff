"""`segmenter=truth`: ground-truth cell masks read from a folder instead of segmenting.

For ablations: predicting with the true masks scores the classifier alone, so the gap to the
default segmenter is what segmentation errors cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpa.data.cells import read_instance_mask
from hpa.errors import InputError
from hpa.segment.base import Segmentation, border_ids


@dataclass
class TruthSegmenter:
    """Reads `mask_dir/{ID}.png` (uint16 cell instances, 0 = background), e.g. a synthetic set's
    `masks/`; nuclei from `nuclei_dir/{ID}.png` when given, else none."""

    mask_dir: str | Path
    nuclei_dir: str | Path | None = None

    def __post_init__(self) -> None:
        self.mask_dir = Path(self.mask_dir)
        if not self.mask_dir.is_dir():
            raise InputError(
                f"segmenter=truth: mask folder {self.mask_dir} does not exist; "
                "set segmenter.mask_dir to the folder of {ID}.png instance masks"
            )

    def segment_sample(self, sample_id: str, image: np.ndarray) -> Segmentation:
        """The true masks of `sample_id`, at the image's size."""
        path = self.mask_dir / f"{sample_id}.png"
        if not path.exists():
            raise InputError(f"segmenter=truth: missing mask {path} for sample {sample_id}")
        cells = read_instance_mask(path, image.shape[:2]).astype(np.int32)
        nuclei = np.zeros_like(cells)
        if self.nuclei_dir is not None and (Path(self.nuclei_dir) / f"{sample_id}.png").exists():
            nuclei = read_instance_mask(Path(self.nuclei_dir) / f"{sample_id}.png", image.shape[:2])
            nuclei = nuclei.astype(np.int32)
        return Segmentation(cells, nuclei, border_ids(cells))

    def segment(self, image: np.ndarray) -> Segmentation:
        raise InputError(
            "segmenter=truth looks masks up by sample ID: call segment_sample(sample_id, image)"
        )
