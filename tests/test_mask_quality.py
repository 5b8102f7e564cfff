"""scripts/mask_quality.py: the competition metric against mask IoU, on a tiny synthetic set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from hpa.segment.matching import iou_matrix

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mask_quality.py"


@pytest.fixture(scope="module")
def mask_quality():
    spec = importlib.util.spec_from_file_location("mask_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mask_quality"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["mask_quality"]


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("mode", ["shrunk", "grown"])
@pytest.mark.parametrize("target", [0.9, 0.6, 0.5])
def test_a_cell_is_shrunk_or_grown_to_the_iou_asked(mask_quality, mode, target):
    truth = np.zeros((80, 90), np.uint16)
    truth[disc(truth.shape, (30, 40), 14)] = 1
    truth[disc(truth.shape, (60, 60), 9)] = 2
    mask = mask_quality.perturbed(truth, 1, mode, target)
    iou, _, _ = iou_matrix(mask.astype(np.uint8), truth)
    area = (truth == 1).sum()
    assert target <= iou[0, 0] < target + 2 / area  # at the target, never below it
    inside = (mask & (truth == 1)).sum()
    if mode == "shrunk":
        assert inside == mask.sum()  # a shrunk mask stays inside its cell
    else:
        assert inside == area  # a grown one keeps all of it


def test_the_metric_is_perfect_at_iou_1_and_vanishes_under_the_threshold(mask_quality, capsys):
    targets = [1.0, 0.8, 0.7, 0.6, 0.5]
    rows = mask_quality.main(["--images", "3", "--size", "128", "--targets", *map(str, targets)])
    out = capsys.readouterr().out
    assert out.count("\n| ") == 1 + 2 * (len(targets) - 1) + 1  # header + rows, printed
    by_mode = {m: [r for r in rows if r.masks == m or r.target == 1.0] for m in ("shrunk", "grown")}
    for mode, found in by_mode.items():
        assert [r.target for r in found] == targets, mode
        assert found[0].map_perfect == 1.0 and found[0].counted == 1.0
        assert 0.0 < found[0].map_noisy < 1.0  # the noisy classifier costs something
        assert found[-1].counted == 0.0 and found[-1].map_perfect <= 0.01  # all under 0.6
        assert found[-1].map_noisy <= 0.01
        for key in ("map_perfect", "map_noisy", "counted", "mean_iou"):
            values = [getattr(r, key) for r in found]
            assert values == sorted(values, reverse=True), (mode, key, values)  # monotone
        assert 0.0 < found[-2].map_perfect < 1.0  # at 0.6 +- 0.05 some cells count, some not
    watershed = [r for r in rows if r.masks == "watershed"]
    assert len(watershed) == 1 and watershed[0].target is None


def test_bad_targets_exit_2(mask_quality, capsys):
    with pytest.raises(SystemExit) as stop:
        mask_quality.main(["--images", "1", "--size", "64", "--targets", "0.4"])
    assert stop.value.code == 2 and "--targets" in capsys.readouterr().err
