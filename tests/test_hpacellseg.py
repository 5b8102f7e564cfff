"""segmenter=hpacellseg against the real HPA-Cell-Segmentation 0.1.8 (its wheel in ../shared/wheels).

Its weights are not available here, so stand-in networks with known outputs take the U-Nets'
place: the nuclei net marks bright blue, the cell net bright red, yellow or blue. hpacellseg's own
pre-processing, `pred_nuclei`, `pred_cells` and `label_cell` then run unchanged through the
adapter, and the masks must be what those outputs imply.
"""

from __future__ import annotations

import importlib
import logging
import math
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from hpa.errors import InputError
from hpa.segment import build_segmenter
from hpa.segment.hpacellseg import HPACellSegmenter, hpacellseg_problems
from hpa.segment.hpacellseg_compat import patch_rescale, scaled_label_cell
from hpa.segment.matching import iou_matrix, match_instances
from hpa.synthetic import SyntheticConfig, generate_dataset, render_sample
from untrained_model import export_untrained

WHEEL = (
    Path(__file__).resolve().parents[2] / "shared" / "wheels" / "hpacellseg-0.1.8-py3-none-any.whl"
)
REAL_IDS = ["000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0", "a34d8680-bb99-11e8-b2b9-ac1f6b6435d0"]

# hpacellseg's input normalisation (cellsegmentator.NORMALIZE), undone by the stand-ins.
MEAN = torch.tensor([124.0, 117.0, 104.0]) / 255
STD = 1 / (0.0167 * 255)


class ThresholdNet(torch.nn.Module):
    """A stand-in U-Net: P(class 2) = sigmoid(sharpness x (max of `channels` - threshold)).

    Class 1 (borders) is never predicted, class 0 takes the rest. Pixel-wise, so its output does
    not depend on the resolution it runs at. Module level: torch.save pickles it by name.
    """

    def __init__(self, channels: list[int], threshold: float, sharpness: float) -> None:
        super().__init__()
        self.channels, self.threshold, self.sharpness = channels, threshold, sharpness
        self.register_buffer("mean", MEAN[None, :, None, None].clone())  # a tensor to map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = (x * STD + self.mean)[:, self.channels].amax(1, True)
        logit = self.sharpness * (value - self.threshold)
        return torch.cat([torch.zeros_like(logit), torch.full_like(logit, -30.0), logit], 1)


def nuclei_net() -> ThresholdNet:
    return ThresholdNet([2], threshold=0.25, sharpness=30.0)  # input (blue, blue, blue)


def cell_net() -> ThresholdNet:
    return ThresholdNet([0, 1, 2], threshold=0.15, sharpness=15.0)  # (red, yellow, blue)


class Sizes(torch.nn.Module):
    """Records the input size of every forward pass (what resolution the network saw)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return self.net(x)


# ---- the real package, installed as users do (pip install --no-deps) ----------------------------


@pytest.fixture(scope="session")
def hpacellseg(tmp_path_factory):
    """hpacellseg 0.1.8 from its wheel, importable for this session only."""
    if not WHEEL.is_file():
        pytest.skip(f"hpacellseg wheel not found at {WHEEL} (a user's clone has no ../shared)")
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(target), str(WHEEL)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(target))
    for name in [m for m in sys.modules if m.split(".")[0] == "hpacellseg"]:
        del sys.modules[name]
    yield importlib.import_module("hpacellseg")
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.split(".")[0] == "hpacellseg"]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """The stand-ins pickled whole, as hpacellseg's weight files are."""
    folder = tmp_path_factory.mktemp("weights")
    paths = folder / "nuclei.pth", folder / "cell.pth"
    torch.save(nuclei_net(), paths[0])
    torch.save(cell_net(), paths[1])
    return paths


@pytest.fixture(scope="session")
def segmenter(hpacellseg, weights):
    def make(**options) -> HPACellSegmenter:
        return build_segmenter(
            "hpacellseg",
            nuclei_model=str(weights[0]),
            cell_model=str(weights[1]),
            allow_pickle=True,
            **options,
        )

    return make


def check_consistent(seg, shape: tuple[int, int]) -> None:
    assert seg.cells.shape == shape and seg.nuclei.shape == shape
    inside = seg.nuclei > 0
    assert np.array_equal(seg.nuclei[inside], seg.cells[inside])
    edge = np.concatenate([seg.cells[0], seg.cells[-1], seg.cells[:, 0], seg.cells[:, -1]])
    assert seg.border.tolist() == sorted(set(edge.tolist()) - {0})


def worst_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """The lowest best-IoU of any true instance (0 when one is missed)."""
    iou, _, truth_ids = iou_matrix(pred, truth)
    return float(iou.max(axis=0).min()) if truth_ids.size and iou.size else 0.0


# ---- drawn cells: sizes that must scale with the image -----------------------------------------


def radius(area: float) -> float:
    return math.sqrt(area / math.pi)


# (row, col, nucleus radius, cell radius, channel of the cytoplasm, kept?) in a 2048 px image's
# pixels. label_cell drops nuclei under 2,500 px and cells under 5,500 px at 2048 px.
DRAWN = [
    (300, 300, 50, 120, 0, True),  # three plain cells, one seen only in yellow
    (300, 1750, 50, 120, 3, True),
    (1200, 300, 50, 120, 0, True),
    (750, 800, radius(3000), 120, 0, True),  # small nucleus, 1.2x the limit: kept
    (750, 1750, radius(1500), 120, 3, False),  # a blue speck, 0.6x the limit: no cell
    (1200, 1300, radius(2400), radius(3800), 0, False),  # a cell of 0.7x the limit: dropped
]


def draw(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, expected cells and expected nuclei of DRAWN at the scale of `shape`'s longest side."""
    scale = max(shape) / 2048
    planes = [np.zeros(shape, np.uint8) for _ in range(4)]
    cells, nuclei = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    kept = 0
    for row, col, nucleus, cell, channel, keep in DRAWN:
        centre = (round(col * scale), round(row * scale))
        cv2.circle(planes[channel], centre, round(cell * scale), 150, -1)
        cv2.circle(planes[2], centre, round(nucleus * scale), 200, -1)
        if keep:
            kept += 1
            cv2.circle(cells, centre, round(cell * scale), kept, -1)
            cv2.circle(nuclei, centre, round(nucleus * scale), kept, -1)
    planes[1][:] = 90  # green: must never reach the segmenter
    return np.stack(planes, axis=-1), cells, nuclei


@pytest.mark.parametrize(
    "shape, post_scale",
    [
        ((1728, 1728), 1.0),
        ((2048, 2048), 1.0),
        ((3072, 3072), 1.0),
        ((1536, 2048), 1.0),  # wide
        ((2048, 1280), 1.0),  # tall
        ((2048, 2048), 0.5),
        ((3072, 3072), 0.25),
        ((1536, 2048), 0.5),
    ],
)
def test_drawn_cells_are_found_at_every_size_shape_and_scale(segmenter, shape, post_scale):
    """The same field of view at any size: the same 4 cells kept, the speck and the tiny cell not."""
    image, cells, nuclei = draw((min(shape), max(shape)))
    if shape[0] > shape[1]:  # tall: the wide drawing turned
        image, cells, nuclei = (
            np.ascontiguousarray(a.swapaxes(0, 1)) for a in (image, cells, nuclei)
        )
    seg = segmenter(post_scale=post_scale).segment(image)
    check_consistent(seg, shape)
    assert len(seg.cell_ids) == 4
    assert worst_iou(seg.cells, cells) >= 0.95
    assert worst_iou(seg.nuclei, nuclei) >= 0.85


def test_label_cell_sees_every_size_scaled(hpacellseg):
    """Areas x the area factor, the closing disk's radius x its root; the package is untouched."""
    utils = importlib.import_module("hpacellseg.utils")
    names = scaled_label_cell(utils.label_cell, 0.25).__globals__
    assert names["disk"](6).shape == (7, 7) and utils.disk(6).shape == (13, 13)
    assert scaled_label_cell(utils.label_cell, 2.25).__globals__["disk"](6).shape == (19, 19)
    squares = np.zeros((100, 100), bool)
    squares[:24, :24] = squares[50:76, 50:76] = True  # 576 and 676 px
    kept = names["remove_small_objects"](squares, 2500)  # under 625 px goes
    assert kept[:24, :24].sum() == 0 and kept[50:76, 50:76].all()
    holes = np.ones((100, 100), bool)
    holes[10:25, 10:25] = holes[50:67, 50:67] = False  # 225 and 289 px
    filled = names["remove_small_holes"](holes, 1000)  # under 250 px is filled
    assert filled[10:25, 10:25].all() and not filled[50:67, 50:67].any()
    assert utils.remove_small_objects is not names["remove_small_objects"] and utils.np is np


@pytest.mark.parametrize("side, expected", [(1728, 3), (3072, 6)])
def test_sizes_as_released_would_drop_or_keep_the_wrong_cells(segmenter, side, expected):
    """Control: with label_cell's sizes unscaled (reference_size = the image's side), the drawing
    above does tell scaled from unscaled sizes: 1728 px loses the small nucleus, 3072 px keeps
    the speck and the tiny cell."""
    image, _, _ = draw((side, side))
    assert len(segmenter(reference_size=side).segment(image).cell_ids) == expected


def test_networks_see_the_image_at_scale_factor_whatever_post_scale(hpacellseg, tmp_path):
    paths = tmp_path / "nuclei.pth", tmp_path / "cell.pth"
    torch.save(Sizes(nuclei_net()), paths[0])
    torch.save(Sizes(cell_net()), paths[1])
    image, _, _ = draw((1536, 2048))
    for post_scale in (1.0, 0.5, 0.25):
        seg = build_segmenter(
            "hpacellseg",
            nuclei_model=str(paths[0]),
            cell_model=str(paths[1]),
            allow_pickle=True,
            post_scale=post_scale,
        )
        seg.segment(image)
        nets = seg._segmentator.nuclei_model, seg._segmentator.cell_model
        # 384 x 512, plus hpacellseg's padding: 32 before, up to the next multiple of 32 after
        assert [net.seen for net in nets] == [[(448, 576)], [(448, 576)]], post_scale


# ---- the adapter is hpacellseg: the same masks as the package called directly -------------------


def direct_call(hpacellseg, image: np.ndarray, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """hpacellseg as its README uses it, with only the two fixes it cannot run without."""
    cellsegmentator = importlib.import_module("hpacellseg.cellsegmentator")
    utils = importlib.import_module("hpacellseg.utils")
    from skimage import transform

    def rescale(image, scale, multichannel=False, **kwargs):
        return transform.rescale(image, scale, channel_axis=-1 if multichannel else None, **kwargs)

    monkeypatch.setattr(cellsegmentator, "transform", type("T", (), {"rescale": rescale}))
    monkeypatch.setattr(np, "bool", bool, raising=False)
    package = cellsegmentator.CellSegmentator(
        nuclei_net(), cell_net(), scale_factor=0.25, device="cpu", padding=True
    )
    red, blue, yellow = (np.ascontiguousarray(image[..., c]) for c in (0, 2, 3))
    nuclei_pred = package.pred_nuclei([blue])[0]
    cell_pred = package.pred_cells([[red], [yellow], [blue]])[0]
    nuclei, cells = utils.label_cell(nuclei_pred, cell_pred)
    return np.asarray(nuclei), np.asarray(cells)


@pytest.fixture(scope="module")
def sample():
    """A synthetic 2048 px field of view with 12-20 touching cells, and its full-scale masks."""
    cfg = SyntheticConfig(image_size=2048, seed=1, cells_per_image=(12, 20), workers=1)
    return render_sample(cfg, 0)


@pytest.fixture(scope="module")
def whole(segmenter, sample):
    return segmenter().segment(sample.image)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # hpacellseg's own calls, as released
def test_adapter_gives_the_masks_of_the_package_called_directly(
    hpacellseg, sample, whole, monkeypatch
):
    nuclei, cells = direct_call(hpacellseg, sample.image, monkeypatch)
    assert np.array_equal(whole.cells, cells)
    assert np.array_equal(whole.nuclei, nuclei)
    assert len(whole.cell_ids) >= 10


@pytest.mark.parametrize("side", [1728, 2048, 3072])
def test_synthetic_cells_are_found_at_every_size(segmenter, sample, whole, side):
    """Bright blue nuclei in bright cells: the stand-ins imply the true cells and nuclei."""
    image, cells, nuclei = sample.image, sample.cells, sample.nuclei
    if side != 2048:  # the same field of view at another resolution
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        cells, nuclei = (
            cv2.resize(a, (side, side), interpolation=cv2.INTER_NEAREST) for a in (cells, nuclei)
        )
    seg = segmenter().segment(image) if side != 2048 else whole
    check_consistent(seg, (side, side))
    assert match_instances(seg.cells, cells).f1 >= 0.9
    assert match_instances(seg.nuclei, nuclei).f1 >= 0.9


def test_non_square_crop_keeps_the_cells_of_its_image(segmenter, sample, whole):
    for rows, cols in [(slice(0, 1536), slice(None)), (slice(None), slice(300, 1580))]:
        crop = segmenter().segment(np.ascontiguousarray(sample.image[rows, cols]))
        check_consistent(crop, whole.cells[rows, cols].shape)
        inner = inner_cells(whole.cells[rows, cols])  # the cells the cut does not touch
        assert len(np.unique(inner)) > 5
        assert worst_iou(crop.cells, inner) >= 0.9


def inner_cells(labels: np.ndarray) -> np.ndarray:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.where(np.isin(labels, edge), 0, labels)


@pytest.mark.parametrize("post_scale", [0.5, 0.25])
def test_reduced_scale_post_processing_agrees_with_full_scale(segmenter, sample, whole, post_scale):
    reduced = segmenter(post_scale=post_scale).segment(sample.image)
    check_consistent(reduced, whole.cells.shape)
    assert match_instances(reduced.cells, whole.cells, threshold=0.9).f1 >= 0.95
    assert match_instances(reduced.nuclei, whole.nuclei, threshold=0.8).f1 >= 0.95


# ---- the two real HPA images ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(real_fixtures, segmenter):
    """Each real image (2048 px) and its masks through the adapter."""
    from hpa.data.images import read_sample

    images = {sid: read_sample(real_fixtures / "train", sid) for sid in REAL_IDS}
    return {sid: (image, segmenter().segment(image)) for sid, image in images.items()}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("sample_id", REAL_IDS)
def test_real_images_at_2048_px_match_the_package_called_directly(
    hpacellseg, real, sample_id, monkeypatch
):
    image, seg = real[sample_id]
    check_consistent(seg, image.shape[:2])
    nuclei, cells = direct_call(hpacellseg, image, monkeypatch)
    assert np.array_equal(seg.cells, cells) and np.array_equal(seg.nuclei, nuclei)
    assert len(seg.cell_ids) >= 10


@pytest.mark.parametrize("sample_id", REAL_IDS)
def test_real_images_resized_or_cropped_keep_their_cells(segmenter, real, sample_id):
    """The same field of view at 1728 and 3072 px, and a non-square crop, against 2048 px."""
    image, whole = real[sample_id]
    for side in (1728, 3072):
        resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        seg = segmenter().segment(resized)
        check_consistent(seg, (side, side))
        back = cv2.resize(
            seg.cells.astype(np.uint16), (2048, 2048), interpolation=cv2.INTER_NEAREST
        )
        assert match_instances(back, whole.cells).f1 >= 0.8, side
    crop = segmenter().segment(np.ascontiguousarray(image[:, 256:1792]))
    check_consistent(crop, (2048, 1536))
    iou, _, _ = iou_matrix(crop.cells, inner_cells(whole.cells[:, 256:1792]))
    assert (iou.max(axis=0) >= 0.6).mean() >= 0.9  # the cells the cut does not touch


# ---- library versions the package predates ---------------------------------------------------


def test_scikit_image_without_multichannel_is_shimmed(hpacellseg):
    from skimage import transform

    cellsegmentator = importlib.import_module("hpacellseg.cellsegmentator")
    image = np.random.default_rng(0).random((40, 60, 3))
    if "multichannel" not in transform.rescale.__code__.co_varnames:
        with pytest.raises(TypeError, match="multichannel"):  # why the shim exists
            transform.rescale(image, 0.5, multichannel=True)
    patch_rescale(cellsegmentator)
    patch_rescale(cellsegmentator)  # idempotent
    shimmed = cellsegmentator.transform.rescale(image, 0.5, multichannel=True)
    assert np.allclose(shimmed, transform.rescale(image, 0.5, channel_axis=-1))
    assert cellsegmentator.transform.resize is transform.resize  # the rest passes through


class NumpyWithoutBool(types.ModuleType):
    """numpy as numpy 1.24-1.26 look to hpacellseg: no `np.bool`."""

    def __getattr__(self, name: str):
        if name == "bool":
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return getattr(np, name)


def test_numpy_without_the_bool_alias(segmenter, hpacellseg, monkeypatch):
    """label_cell uses `np.bool`, which numpy 1.24-1.26 lack: the adapter still runs."""
    utils = importlib.import_module("hpacellseg.utils")
    monkeypatch.setattr(utils, "np", NumpyWithoutBool("numpy"))
    blank = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(AttributeError, match="bool"):  # why the alias is needed
        utils.label_cell(blank, blank)
    image, cells, _ = draw((768, 1024))
    seg = segmenter().segment(image)
    assert len(seg.cell_ids) == 4 and worst_iou(seg.cells, cells) >= 0.95


# ---- devices, weights and errors ------------------------------------------------------------


def test_cuda_without_a_gpu_falls_back_to_cpu(segmenter, monkeypatch, caplog):
    """The weights are mapped to the CPU too: torch.load to cuda fails without a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image, cells, _ = draw((1024, 1024))
    for device in ("cuda", "cuda:0", "auto"):
        with caplog.at_level(logging.WARNING, logger="hpa.segment"):
            seg = segmenter(device=device)
        net = seg._segmentator.nuclei_model
        assert next(net.parameters(), torch.zeros(1)).device.type == "cpu"
        assert seg._segmentator.device == "cpu"
        assert worst_iou(seg.segment(image).cells, cells) >= 0.95
    assert "no GPU" in caplog.text
    with pytest.raises(InputError, match="device='tpu'"):
        segmenter(device="tpu")


def test_weights_load_only_after_the_opt_in(hpacellseg, weights, tmp_path):
    """A pickle that runs code: nothing runs without allow_pickle, nor in the doctor's check."""
    marker = tmp_path / "code-ran"
    payload = tmp_path / "payload.pth"
    torch.save(RunsCode(str(marker)), payload)
    with pytest.raises(InputError) as refused:
        build_segmenter("hpacellseg", nuclei_model=str(payload), cell_model=str(weights[1]))
    assert "allow_pickle=true" in str(refused.value) and "\n" not in str(refused.value)
    assert hpacellseg_problems(payload, weights[1]) == []
    assert not marker.exists()
    with pytest.raises(InputError, match="not a whole torch model"):  # opted in: it ran
        build_segmenter(
            "hpacellseg", nuclei_model=str(payload), cell_model=str(weights[1]), allow_pickle=True
        )
    assert marker.exists()


class RunsCode:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def test_weights_are_local_files_only(hpacellseg, weights, tmp_path):
    url = "https://zenodo.org/record/4665863/files/dpn_unet_nuclei_v1.pth"
    with pytest.raises(InputError, match="is a URL; hpa never downloads"):
        build_segmenter(
            "hpacellseg", nuclei_model=url, cell_model=str(weights[1]), allow_pickle=True
        )
    torch.save(cell_net().state_dict(), tmp_path / "state.pth")
    with pytest.raises(InputError, match="OrderedDict, not a whole torch model"):
        build_segmenter(
            "hpacellseg",
            nuclei_model=str(weights[0]),
            cell_model=str(tmp_path / "state.pth"),
            allow_pickle=True,
        )


@pytest.mark.parametrize(
    "save_options",
    [{}, {"_use_new_zipfile_serialization": False}, {"pickle_protocol": 4}],
    ids=["zip", "legacy", "protocol4"],
)
def test_classes_are_read_from_every_torch_file_format(hpacellseg, weights, tmp_path, save_options):
    """torch's zip format, its pre-1.6 format (as older weight files may be), pickle protocol 4."""
    from hpa.segment.hpacellseg_weights import pickled_globals

    path = tmp_path / "nuclei.pth"
    torch.save(nuclei_net(), path, **save_options)
    assert (ThresholdNet.__module__, "ThresholdNet") in pickled_globals(path)
    assert hpacellseg_problems(path, weights[1]) == []
    seg = load_standins(path, weights[1])
    assert len(seg.segment(draw((512, 512))[0]).cell_ids) == 4


def fake_zoo(root: Path, with_unet: bool) -> Path:
    """A package called pytorch_zoo: haoxusci's (with unet.DPNUnet) or PyPI's unrelated one."""
    (root / "pytorch_zoo").mkdir(parents=True)
    (root / "pytorch_zoo" / "__init__.py").write_text("")
    if with_unet:
        (root / "pytorch_zoo" / "unet.py").write_text(
            "import torch\n\nclass DPNUnet(torch.nn.Conv2d):\n    pass\n"
        )
    return root


def test_missing_pytorch_zoo_names_its_real_source(hpacellseg, weights, tmp_path, monkeypatch):
    """The real weights pickle classes of haoxusci/pytorch_zoo: say where to get them."""
    nuclei = tmp_path / "dpn_unet_nuclei_v1.pth"
    monkeypatch.syspath_prepend(str(fake_zoo(tmp_path / "haoxusci", with_unet=True)))
    try:
        torch.save(importlib.import_module("pytorch_zoo.unet").DPNUnet(3, 3, 1), nuclei)
        assert hpacellseg_problems(nuclei, weights[1]) == []
        assert isinstance(
            load_standins(nuclei, weights[1])._segmentator.nuclei_model, torch.nn.Conv2d
        )
        drop_zoo()
        monkeypatch.setattr(sys, "path", [p for p in sys.path if "haoxusci" not in p])
        for installed, says in (
            (None, "which is not installed"),
            ("pypi", "the installed pytorch_zoo lacks"),
        ):
            if installed:  # PyPI's unrelated pytorch-zoo: a pytorch_zoo without unet
                monkeypatch.syspath_prepend(str(fake_zoo(tmp_path / installed, with_unet=False)))
            with pytest.raises(InputError) as refused:
                load_standins(nuclei, weights[1])
            (problem,) = hpacellseg_problems(nuclei, weights[1])
            for message in (str(refused.value), problem):
                assert "needs the module 'pytorch_zoo.unet' (for DPNUnet)" in message
                assert says in message and "\n" not in message
                assert "haoxusci/pytorch_zoo" in message
                assert "not from the unrelated 'pytorch-zoo' on PyPI" in message
            drop_zoo()
    finally:
        drop_zoo()


def load_standins(nuclei: Path, cell: Path) -> HPACellSegmenter:
    return build_segmenter(
        "hpacellseg", nuclei_model=str(nuclei), cell_model=str(cell), allow_pickle=True
    )


def drop_zoo() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "pytorch_zoo"]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_doctor_problems_name_each_missing_piece(hpacellseg, weights, tmp_path, monkeypatch):
    assert hpacellseg_problems(*weights) == []
    missing = tmp_path / "dpn_unet_cell_3ch_v1.pth"
    (problem,) = hpacellseg_problems(weights[0], missing)
    assert "cell_model" in problem and str(missing) in problem and "does not exist" in problem
    (tmp_path / "junk.pth").write_bytes(b"not a model")
    (problem,) = hpacellseg_problems(tmp_path / "junk.pth", weights[1])
    assert "junk.pth is not a torch model file" in problem
    monkeypatch.setitem(sys.modules, "hpacellseg.cellsegmentator", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pytorch_zoo", None)
    problems = hpacellseg_problems(None, None)
    assert len(problems) == 2
    assert problems[0].startswith("hpacellseg is not installed; install hpacellseg")
    assert problems[1].startswith("pytorch_zoo is not installed") and "haoxusci" in problems[1]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"post_scale": 0.1}, "post_scale=0.1: use a value from scale_factor"),
        ({"post_scale": 1.5}, "post_scale=1.5"),
        ({"scale_factor": 0}, "scale_factor=0"),
        ({"reference_size": 10}, "reference_size=10"),
    ],
)
def test_bad_options_are_input_errors(segmenter, options, message):
    with pytest.raises(InputError, match=message):
        segmenter(**options)


def test_unpadded_input_must_suit_the_networks(segmenter):
    image, cells, _ = draw((2048, 2048))
    seg = segmenter(padding=False, post_scale=0.25).segment(image)  # the nets see 512 x 512
    assert len(seg.cell_ids) == 4 and worst_iou(seg.cells, cells) >= 0.95
    with pytest.raises(InputError, match=r"432 x 432 px .* set segmenter.padding=true"):
        segmenter(padding=False, post_scale=0.25).segment(draw((1728, 1728))[0])


# ---- through hpa.predict ----------------------------------------------------------------------


def test_predict_with_hpacellseg_writes_a_valid_submission(segmenter, weights, tmp_path, capsys):
    from hpa.data.images import read_sample
    from hpa.labels import NUM_CLASSES
    from hpa.predict import main
    from hpa.submission.encoding import decode_binary_mask

    data = generate_dataset(
        SyntheticConfig(n_images=3, seed=21, image_size=256, cells_per_image=(2, 4),
                        split="test", workers=1),
        tmp_path / "data",
        progress=False,
    )  # fmt: skip
    model = export_untrained(tmp_path / "model", size=64)
    common = [
        f"models=[{model}]",
        f"input_dir={data / 'test'}",
        f"sample_submission={data / 'sample_submission.csv'}",
        "progress=false",
        "segmenter=hpacellseg",
        f"segmenter.nuclei_model={weights[0]}",
        f"segmenter.cell_model={weights[1]}",
    ]
    with pytest.raises(SystemExit) as refused:
        main([*common, f"submission={tmp_path / 'refused.csv'}"])
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and err.startswith("error: ") and "allow_pickle=true" in err
    assert "\n" not in err and not (tmp_path / "refused.csv").exists()

    main([*common, "segmenter.allow_pickle=true", f"submission={tmp_path / 'sub.csv'}"])
    submission = pd.read_csv(tmp_path / "sub.csv", keep_default_na=False, dtype={"ID": str})
    sample = pd.read_csv(data / "sample_submission.csv", keep_default_na=False, dtype={"ID": str})
    assert submission["ID"].tolist() == sample["ID"].tolist()
    direct = segmenter()
    for row in submission.itertuples():
        parts = row.PredictionString.split()
        triples = [parts[i : i + 3] for i in range(0, len(parts), 3)]
        masks: dict[str, list[int]] = {}
        for cls, conf, mask in triples:
            assert 0.0 <= float(conf) <= 1.0
            masks.setdefault(mask, []).append(int(cls))
        assert all(sorted(c) == list(range(NUM_CLASSES)) for c in masks.values())
        decoded = [decode_binary_mask(m, row.ImageHeight, row.ImageWidth) for m in masks]
        cells = direct.segment(read_sample(data / "test", row.ID)).cells
        expected = [cells == i for i in np.unique(cells) if i > 0]
        assert len(decoded) == len(expected) >= 2
        assert all(any(np.array_equal(d, e) for e in expected) for d in decoded)
        truth = cv2.imread(str(data / "masks" / f"{row.ID}.png"), cv2.IMREAD_UNCHANGED)
        assert match_instances(cells, truth).f1 >= 0.8
