"""Segmenters: the weight-free watershed, the hpacellseg adapter (with a fake hpacellseg), the factory."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from hpa.data.images import read_sample, to_uint8
from hpa.errors import InputError
from hpa.segment import Segmentation, build_segmenter, segmenter_from_config, segmenter_names
from hpa.segment.matching import iou_matrix, match_instances
from hpa.segment.watershed import WatershedSegmenter
from hpa.synthetic import SyntheticConfig, generate_dataset, render_sample

CONFIGS = Path(__file__).parents[1] / "src" / "hpa" / "configs" / "segmenter"
REAL = Path(__file__).parents[2] / "shared" / "fixtures" / "hpa_real"


def check_consistent(seg: Segmentation, shape: tuple[int, int]) -> None:
    """The Segmentation contract: full size, nucleus i inside cell i, border = cells on the edge."""
    assert seg.cells.shape == shape and seg.nuclei.shape == shape
    inside = seg.nuclei > 0
    assert np.array_equal(seg.nuclei[inside], seg.cells[inside])
    edge = np.concatenate([seg.cells[0], seg.cells[-1], seg.cells[:, 0], seg.cells[:, -1]])
    assert seg.border.tolist() == sorted(set(edge.tolist()) - {0})


# ---- instance matching ----------------------------------------------------------------------


def test_iou_matrix_and_one_to_one_matching():
    truth = np.zeros((10, 10), int)
    truth[:, :5], truth[:, 5:] = 1, 2
    pred = np.zeros_like(truth)
    pred[:, :4] = 7  # IoU 40/50 = 0.8 with truth 1
    pred[:, 4:6] = 8  # IoU 10/60 with truth 2: unmatched
    iou, pred_ids, truth_ids = iou_matrix(pred, truth)
    assert pred_ids.tolist() == [7, 8] and truth_ids.tolist() == [1, 2]
    assert iou[0, 0] == pytest.approx(0.8) and iou[1, 1] == pytest.approx(10 / 60)
    report = match_instances(pred, truth, threshold=0.6)
    assert (report.true_positives, report.false_positives, report.false_negatives) == (1, 1, 1)
    assert report.f1 == pytest.approx(0.5)
    assert match_instances(truth, truth).f1 == 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_iou_matrix_is_the_same_by_table_or_by_sorting(dtype):
    """Small non-negative labels index a count table; anything else goes through np.unique."""
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 9, (40, 50)).astype(dtype)
    truth = (rng.integers(0, 5, (40, 50)) * 3).astype(dtype)  # ids 0, 3, ..., 12: gaps
    by_table = iou_matrix(pred, truth)
    by_sorting = iou_matrix(pred.astype(float), truth.astype(float))  # floats: np.unique
    assert by_table[1].tolist() == list(range(1, 9)) and by_table[2].tolist() == [3, 6, 9, 12]
    for a, b in zip(by_table, by_sorting, strict=True):
        np.testing.assert_allclose(a, b)
    huge = truth.astype(np.int64) * 10**6  # ids far too big for a table
    iou, _, truth_ids = iou_matrix(pred.astype(np.int64), huge)
    assert truth_ids.tolist() == [3 * 10**6, 6 * 10**6, 9 * 10**6, 12 * 10**6]
    np.testing.assert_allclose(iou, by_table[0])


# ---- the watershed segmenter -----------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256])
def test_watershed_finds_synthetic_cells(size):
    segmenter = WatershedSegmenter()
    cfg = SyntheticConfig(image_size=size, seed=3)
    tp = fp = fn = 0
    for index in range(4):
        sample = render_sample(cfg, index)
        seg = segmenter.segment(sample.image)
        check_consistent(seg, sample.cells.shape)
        report = match_instances(seg.cells, sample.cells)
        tp, fp, fn = (
            tp + report.true_positives,
            fp + report.false_positives,
            fn + report.false_negatives,
        )
    assert 2 * tp / (2 * tp + fp + fn) >= 0.9


def test_watershed_handles_16_bit_input_and_crowded_fields():
    cfg = SyntheticConfig(
        image_size=192, seed=5, bit_depth=16, cells_per_image=(10, 16), noise=0.06
    )
    sample = render_sample(cfg, 0)
    seg = WatershedSegmenter().segment(to_uint8(sample.image))
    assert match_instances(seg.cells, sample.cells).f1 >= 0.8


def test_watershed_returns_full_resolution_for_any_shape():
    sample = render_sample(SyntheticConfig(image_size=256, seed=1), 0)
    image = cv2.resize(
        sample.image, (700, 530), interpolation=cv2.INTER_LINEAR
    )  # wide, > work_size
    truth = cv2.resize(sample.cells, (700, 530), interpolation=cv2.INTER_NEAREST)
    seg = WatershedSegmenter(work_size=256).segment(image)
    check_consistent(seg, (530, 700))
    assert match_instances(seg.cells, truth).f1 >= 0.8


def draw_cells(shape, cells, nucleus_radius=16, cell_radius=34, channel=0):
    """An image of round nuclei (blue) in round cytoplasm (`channel`: 0 red or 3 yellow)."""
    planes = [np.zeros(shape, np.uint8) for _ in range(4)]
    for cx, cy in cells:
        cv2.circle(planes[channel], (round(cx), round(cy)), cell_radius, 120, -1)
    for cx, cy in cells:
        cv2.circle(planes[2], (round(cx), round(cy)), nucleus_radius, 200, -1)
    return np.stack(planes, axis=-1)


def test_touching_nuclei_are_split_but_one_round_nucleus_is_not():
    segmenter = WatershedSegmenter()
    # Two discs overlapping with a narrow neck: two nuclei, two cells.
    seg = segmenter.segment(draw_cells((160, 160), [(62, 80), (98, 80)], 20, 40))
    assert len(np.unique(seg.nuclei)) - 1 == 2 and len(seg.cell_ids) == 2
    # An ellipse (no neck) must stay one nucleus.
    red, blue = np.zeros((160, 160), np.uint8), np.zeros((160, 160), np.uint8)
    cv2.ellipse(blue, (80, 80), (32, 18), 30, 0, 360, 200, -1)
    cv2.circle(red, (80, 80), 60, 120, -1)
    seg = segmenter.segment(np.stack([red, red * 0, blue, red * 0], axis=-1))
    assert len(seg.cell_ids) == 1 and len(np.unique(seg.nuclei)) - 1 == 1


def test_cells_cut_by_the_border_are_kept_and_marked():
    image = draw_cells((200, 200), [(100, 100), (190, 60), (40, 196)])  # two cut by the edge
    seg = WatershedSegmenter().segment(image)
    assert len(seg.cell_ids) == 3
    assert sorted(seg.border.tolist()) == sorted({int(seg.cells[60, 190]), int(seg.cells[196, 40])})
    assert int(seg.cells[100, 100]) not in seg.border


def test_blank_image_has_no_cells():
    seg = WatershedSegmenter().segment(np.zeros((96, 128, 4), np.uint8))
    assert seg.cells.shape == (96, 128) and seg.cell_ids.size == 0 and seg.border.size == 0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64, 3), np.uint8),
        np.zeros((64, 64, 4), np.uint16),
        np.zeros((64, 64), np.uint8),
    ],
)
def test_segmenter_rejects_other_layouts(image):
    with pytest.raises(InputError, match="H x W x 4 uint8"):
        WatershedSegmenter().segment(image)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real HPA fixtures not found at {REAL}")
@pytest.mark.parametrize(
    "sample_id", ["000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0", "a34d8680-bb99-11e8-b2b9-ac1f6b6435d0"]
)
def test_watershed_matches_reference_masks_on_real_images(sample_id):
    """Against HPA-Cell-Segmentation's masks: F1 >= 0.8 at IoU >= 0.6, per image."""
    image = read_sample(REAL / "train", sample_id)
    reference = cv2.imread(str(REAL / "masks" / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)
    seg = WatershedSegmenter().segment(image)
    check_consistent(seg, reference.shape)
    assert match_instances(seg.cells, reference, threshold=0.6).f1 >= 0.8


# ---- factory and configs ---------------------------------------------------------------------


def test_factory_builds_by_name_and_rejects_unknown_names_and_options():
    assert isinstance(build_segmenter("watershed", work_size=256), WatershedSegmenter)
    with pytest.raises(InputError, match="hpacellseg, truth, watershed"):
        build_segmenter("cellpose")
    with pytest.raises(InputError, match="segmenter.work_sise is not an option.*work_size"):
        build_segmenter("watershed", work_sise=256)
    with pytest.raises(InputError, match="neck_ratio"):
        build_segmenter("watershed", neck_ratio=1.5)


@pytest.mark.parametrize("name", segmenter_names())
def test_config_files_name_every_option_of_their_segmenter(name):
    """configs/segment/NAME.yaml and the dataclass agree, so neither drifts from the other."""
    import dataclasses

    from hydra.utils import get_class

    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    cls = get_class(config.pop("_target_"))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    assert set(config) == set(fields)
    for key, value in config.items():
        if fields[key].default is not dataclasses.MISSING:
            assert value == fields[key].default, key
    if name == "watershed":
        target = f"{cls.__module__}.{cls.__name__}"
        assert isinstance(segmenter_from_config({"_target_": target, **config}), WatershedSegmenter)
        # A node of an older config, {name: ..., ...}, is still read
        assert isinstance(
            segmenter_from_config({"name": name, "work_size": 256}), WatershedSegmenter
        )


# ---- hpacellseg adapter, against a fake hpacellseg --------------------------------------------


class FakeCellSegmentator:
    """Mimics hpacellseg.cellsegmentator.CellSegmentator: predictions as H x W x 3 uint8 maps."""

    instances: list = []

    def __init__(
        self, nuclei_model, cell_model, scale_factor, device, padding, multi_channel_model
    ):
        self.args = dict(
            nuclei_model=nuclei_model,
            cell_model=cell_model,
            scale_factor=scale_factor,
            device=device,
            padding=padding,
            multi_channel_model=multi_channel_model,
        )
        self.calls: list = []
        FakeCellSegmentator.instances.append(self)

    def pred_nuclei(self, images):
        self.calls.append(("pred_nuclei", images))
        return [np.dstack([np.zeros_like(b), np.zeros_like(b), b]) for b in images]

    def pred_cells(self, images):
        self.calls.append(("pred_cells", images))
        red, yellow, blue = images
        return [
            np.dstack([np.zeros_like(r), np.zeros_like(r), np.maximum(r, y)])
            for r, y in zip(red, yellow, strict=True)
        ]


def fake_label_cell(nuclei_pred, cell_pred):
    """Cells = connected bright regions of the cell map; nuclei carry their cell's id."""
    from scipy import ndimage as ndi

    cells, _ = ndi.label(cell_pred[..., 2] > 50)
    nuclei = np.where(nuclei_pred[..., 2] > 50, cells, 0)
    return nuclei.astype(np.uint16), cells.astype(np.uint16)


@pytest.fixture
def fake_hpacellseg(monkeypatch):
    package = types.ModuleType("hpacellseg")
    cellsegmentator = types.ModuleType("hpacellseg.cellsegmentator")
    utils = types.ModuleType("hpacellseg.utils")
    cellsegmentator.CellSegmentator = FakeCellSegmentator
    utils.label_cell = fake_label_cell
    package.cellsegmentator, package.utils = cellsegmentator, utils
    for name, module in [
        ("hpacellseg", package),
        ("hpacellseg.cellsegmentator", cellsegmentator),
        ("hpacellseg.utils", utils),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    FakeCellSegmentator.instances = []
    return FakeCellSegmentator


@pytest.fixture
def weights(tmp_path):
    """Two whole pickled models, as hpacellseg ships them."""
    import torch

    paths = tmp_path / "nuclei.pth", tmp_path / "cell.pth"
    for path in paths:
        torch.save(torch.nn.Conv2d(3, 3, 1), path)
    return paths


def test_hpacellseg_adapter_runs_the_models_on_the_right_channels(fake_hpacellseg, weights):
    import torch

    segmenter = build_segmenter(
        "hpacellseg", nuclei_model=str(weights[0]), cell_model=str(weights[1]), allow_pickle=True
    )
    (fake,) = fake_hpacellseg.instances
    # Loaded model objects, never paths: hpacellseg's download-if-missing code cannot run.
    assert isinstance(fake.args["nuclei_model"], torch.nn.Module)
    assert isinstance(fake.args["cell_model"], torch.nn.Module)
    assert fake.args | {"nuclei_model": 0, "cell_model": 0} == dict(
        nuclei_model=0,
        cell_model=0,
        scale_factor=0.25,
        device="cpu",
        padding=True,
        multi_channel_model=True,
    )

    # One cell seen in red, one only in yellow and cut by the bottom edge.
    image = draw_cells((120, 100), [(30, 40)], 10, 25) | draw_cells(
        (120, 100), [(75, 105)], 9, 22, 3
    )
    image[..., 1] = 7  # green must never reach the segmenter
    seg = segmenter.segment(image)
    check_consistent(seg, (120, 100))
    assert len(seg.cell_ids) == 2 and seg.border.tolist() == [int(seg.cells[105, 75])]
    (_, blue_list), (_, [red, yellow, blue]) = fake.calls
    assert np.array_equal(blue_list[0], image[..., 2])
    assert [np.array_equal(a[0], image[..., c]) for a, c in ((red, 0), (yellow, 3), (blue, 2))] == [
        True
    ] * 3


def test_hpacellseg_needs_explicit_pickle_opt_in(fake_hpacellseg, weights):
    with pytest.raises(InputError, match="allow_pickle=True"):
        build_segmenter("hpacellseg", nuclei_model=str(weights[0]), cell_model=str(weights[1]))


def test_hpacellseg_missing_weights_or_package_are_input_errors(
    fake_hpacellseg, weights, tmp_path, monkeypatch
):
    with pytest.raises(InputError, match="cell_model .*missing.pth does not exist"):
        build_segmenter(
            "hpacellseg",
            nuclei_model=str(weights[0]),
            cell_model=str(tmp_path / "missing.pth"),
            allow_pickle=True,
        )
    with pytest.raises(InputError, match="segmenter.nuclei_model is required"):
        segmenter_from_config(
            {"name": "hpacellseg", "nuclei_model": None, "cell_model": str(weights[1])}
        )
    monkeypatch.setitem(sys.modules, "hpacellseg.cellsegmentator", None)  # as if not installed
    with pytest.raises(InputError, match="install hpacellseg"):
        build_segmenter(
            "hpacellseg",
            nuclei_model=str(weights[0]),
            cell_model=str(weights[1]),
            allow_pickle=True,
        )


def test_hpacellseg_weights_needing_an_absent_module_are_input_errors(
    fake_hpacellseg, weights, tmp_path, monkeypatch
):
    """The real weights unpickle classes from pytorch_zoo: without it, a clear message."""
    import torch

    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "zoo_stand_in.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    import zoo_stand_in

    torch.save(zoo_stand_in.Net(), tmp_path / "zoo.pth")
    monkeypatch.delitem(sys.modules, "zoo_stand_in")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(module_dir)])
    with pytest.raises(InputError, match="needs the module 'zoo_stand_in'"):
        build_segmenter(
            "hpacellseg",
            nuclei_model=str(tmp_path / "zoo.pth"),
            cell_model=str(weights[1]),
            allow_pickle=True,
        )
    (tmp_path / "junk.pth").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.pth"):
        build_segmenter(
            "hpacellseg",
            nuclei_model=str(tmp_path / "junk.pth"),
            cell_model=str(weights[1]),
            allow_pickle=True,
        )


def test_segment_command_reports_f1_and_time_per_image(tmp_path, capsys):
    from hpa.segment.__main__ import main

    root = generate_dataset(
        SyntheticConfig(n_images=2, image_size=96, seed=4, workers=1), tmp_path, progress=False
    )
    main([f"root={root}", "segmenter.work_size=128"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("2 images, median")
    assert all(float(line.split()[2]) >= 0.9 for line in out[1:3])


def test_hpacellseg_on_a_scikit_image_it_predates_is_an_input_error(
    fake_hpacellseg, weights, monkeypatch
):
    def old_rescale(self, images):
        raise TypeError("rescale() got an unexpected keyword argument 'multichannel'")

    monkeypatch.setattr(fake_hpacellseg, "pred_nuclei", old_rescale)
    segmenter = build_segmenter(
        "hpacellseg", nuclei_model=str(weights[0]), cell_model=str(weights[1]), allow_pickle=True
    )
    with pytest.raises(InputError, match="channel_axis"):
        segmenter.segment(np.zeros((64, 64, 4), np.uint8))


# ---- scripts/tune_watershed.py: the held-out search -------------------------------------------


def test_tune_script_picks_on_one_set_and_reports_on_the_others(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "tune_watershed.py"
    spec = importlib.util.spec_from_file_location("tune_watershed", script)
    tune = importlib.util.module_from_spec(spec)
    sys.modules["tune_watershed"] = tune  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(tune)
        real = generate_dataset(  # stands in for the real fixtures: train.csv, train/, masks/
            SyntheticConfig(n_images=2, image_size=128, seed=31, workers=1),
            tmp_path,
            progress=False,
        )
        argv = ["--real", str(real), "--synthetic", "2", "--synthetic-size", "128"]
        results = tune.main([*argv, "--repeats", "1"])
    finally:
        del sys.modules["tune_watershed"]
    out = capsys.readouterr().out
    sets = [name for name in next(iter(results.scores.values()))]
    assert len(sets) == 3 and sets[-1] == "synthetic"
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| default", *(f"| {n}" for n in sets)]
    default = tune.default_setting()
    for i, name in enumerate(sets):
        row = rows[2 + i].split(" | ")[2:]
        assert [("*" in cell) for cell in row] == [j == i for j in range(3)]  # picked here only
        picked = tune.pick(results, name, default)
        assert results.scores[picked][name].f1 >= results.scores[default][name].f1
    assert "seconds per real image" in out
    with pytest.raises(SystemExit) as stop:
        tune.main(["--real", str(tmp_path / "nowhere")])
    assert stop.value.code == 2
