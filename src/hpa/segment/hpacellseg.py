"""Adapter for HPA-Cell-Segmentation (`hpacellseg`), the community's reference segmenter.

Optional: the user installs hpacellseg (and `pytorch_zoo`, which its pickled models import) and
downloads the two weight files themselves. Nothing here downloads anything: we load the models
ourselves and hand hpacellseg the loaded objects, so its own download-if-missing path never runs.
The weights are whole pickled models, which `torch.load` only opens with `weights_only=False`;
unpickling can run code, so the user must opt in with `allow_pickle=True`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpa.errors import InputError
from hpa.segment.base import Segmentation, border_ids, check_image

INSTALL_HINT = (
    "install hpacellseg (HPA-Cell-Segmentation, from its GitHub repository) and pytorch_zoo, "
    "or use the weight-free default segmenter (watershed)"
)


@dataclass
class HPACellSegmenter:
    """HPA-Cell-Segmentation's nuclei and cell U-Nets plus its `label_cell` post-processing."""

    nuclei_model: str | Path
    cell_model: str | Path
    allow_pickle: bool = False  # the weights are pickled models: loading them runs their code
    scale_factor: float = 0.25
    device: str = "cpu"
    padding: bool = True  # without padding, 1728 px images fail inside hpacellseg
    multi_channel_model: bool = True  # the 3-channel (red, yellow, blue) cell model
    _segmentator: Any = field(default=None, init=False, repr=False)
    _label_cell: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.allow_pickle:
            raise InputError(
                "hpacellseg weights are pickled torch models, and loading them can run arbitrary "
                "code; if you trust the files, opt in with allow_pickle=True "
                "(e.g. segmenter.allow_pickle=true)"
            )
        paths = {"nuclei_model": Path(self.nuclei_model), "cell_model": Path(self.cell_model)}
        for name, path in paths.items():
            if not path.is_file():
                raise InputError(
                    f"hpacellseg {name} {path} does not exist; download dpn_unet_nuclei_v1.pth and "
                    "dpn_unet_cell_3ch_v1.pth yourself and point nuclei_model / cell_model at them"
                )
        cellsegmentator = _import("hpacellseg.cellsegmentator")
        self._label_cell = _import("hpacellseg.utils").label_cell
        self._segmentator = cellsegmentator.CellSegmentator(
            _load_model(paths["nuclei_model"], self.device),
            _load_model(paths["cell_model"], self.device),
            scale_factor=self.scale_factor,
            device=self.device,
            padding=self.padding,
            multi_channel_model=self.multi_channel_model,
        )

    def segment(self, image: np.ndarray) -> Segmentation:
        return self.segment_batch([image])[0]

    def segment_batch(self, images: list[np.ndarray]) -> list[Segmentation]:
        """Several images in one call: hpacellseg runs its networks over the list."""
        for image in images:
            check_image(image)
        red = [np.ascontiguousarray(im[..., 0]) for im in images]
        blue = [np.ascontiguousarray(im[..., 2]) for im in images]
        yellow = [np.ascontiguousarray(im[..., 3]) for im in images]
        try:
            nuclei_pred = self._segmentator.pred_nuclei(blue)
            cell_pred = self._segmentator.pred_cells(
                [red, yellow if self.multi_channel_model else None, blue]
            )
        except TypeError as err:
            if "multichannel" not in str(err):
                raise
            # Released hpacellseg calls skimage.transform.rescale(multichannel=True), which
            # scikit-image 0.19 replaced by channel_axis.
            raise InputError(
                f"hpacellseg does not run on this scikit-image ({err}); install a version of "
                "hpacellseg that passes channel_axis=-1 to skimage.transform.rescale"
            ) from None
        results = []
        for nuc, cell in zip(nuclei_pred, cell_pred, strict=True):
            nuclei, cells = self._label_cell(nuc, cell)
            cells = np.asarray(cells, dtype=np.int32)
            # label_cell gives nuclei their cell's id already; enforce it so the contract holds.
            nuclei = np.where((np.asarray(nuclei) > 0) & (cells > 0), cells, 0).astype(np.int32)
            results.append(Segmentation(cells, nuclei, border_ids(cells)))
        return results


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise InputError(f"segmenter hpacellseg needs {module} ({err}); {INSTALL_HINT}") from None


def _load_model(path: Path, device: str) -> Any:
    """Unpickle a whole torch model (the user opted in), mapped to `device`."""
    import torch

    try:
        return torch.load(path, map_location=torch.device(device), weights_only=False)
    except ModuleNotFoundError as err:
        raise InputError(
            f"cannot unpickle {path}: it needs the module {err.name!r}; {INSTALL_HINT}"
        ) from None
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise InputError(
            f"cannot load {path} as a pickled torch model ({type(err).__name__}: {err}); "
            "re-download the hpacellseg weights"
        ) from None
