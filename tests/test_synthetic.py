import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

import hpa.synthetic.generator as gen
from hpa.data.images import read_sample
from hpa.labels import NEGATIVE, parse_labels
from hpa.synthetic import SyntheticConfig, render_sample


def test_deterministic_per_seed():
    cfg = SyntheticConfig(image_size=96, seed=5)
    a, b = render_sample(cfg, 3), render_sample(cfg, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.cells, b.cells)
    c = render_sample(SyntheticConfig(image_size=96, seed=6), 3)
    assert a.sample_id != c.sample_id
    assert not np.array_equal(a.image, c.image)


def test_image_label_is_union_of_cell_labels():
    cfg = SyntheticConfig(image_size=96, seed=1, skew=0.0)
    for i in range(12):
        s = render_sample(cfg, i)
        assert len(s.cell_labels) == s.cells.max() == len(np.unique(s.cells)) - 1
        assert sorted(set().union(*map(set, s.cell_labels))) == s.image_labels
        assert all(labels for labels in s.cell_labels)


def test_nuclei_lie_inside_their_cells():
    s = render_sample(SyntheticConfig(image_size=128, seed=2), 0)
    inside = s.nuclei > 0
    np.testing.assert_array_equal(s.cells[inside], s.nuclei[inside])


def _green_by_compartment(class_id, seed=0):
    gen_labels = gen.sample_image_labels
    gen.sample_image_labels = lambda rng, skew: [class_id]
    try:
        s = render_sample(SyntheticConfig(image_size=192, seed=seed, noise=0.0), 0)
    finally:
        gen.sample_image_labels = gen_labels
    green = s.image[..., 1].astype(float)
    nucleus = s.nuclei > 0
    cytoplasm = (s.cells > 0) & ~nucleus
    return green[nucleus].mean(), green[cytoplasm].mean(), green[s.cells == 0].mean()


@pytest.mark.parametrize(
    "class_id,where",
    [(0, "nucleus"), (2, "nucleus"), (16, "cytoplasm"), (6, "cytoplasm"), (14, "cytoplasm")],
)
def test_green_pattern_sits_in_its_compartment(class_id, where):
    nuc, cyto, _ = _green_by_compartment(class_id)
    assert (nuc > cyto) if where == "nucleus" else (cyto > nuc)


def test_negative_has_no_protein_signal():
    nuc, cyto, background = _green_by_compartment(NEGATIVE)
    assert max(nuc, cyto) < background + 12


def test_real_skew_makes_nucleoplasm_most_common():
    rng = np.random.default_rng(0)
    counts = np.zeros(19)
    for _ in range(3000):
        counts[gen.sample_image_labels(rng, 1.0)] += 1
    assert counts.argmax() == 0
    assert 0.3 < counts[0] / 3000 < 0.5
    assert counts[11] < counts[16] / 10


def test_cli_writes_contract_layout(tmp_path):
    out = tmp_path / "syn"
    cmd = [
        sys.executable,
        "-m",
        "hpa.synthetic",
        f"out={out}",
        "n_images=6",
        "seed=4",
        "image_size=80",
        "bit_depth=16",
        "workers=1",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    train = pd.read_csv(out / "train.csv")
    cells = pd.read_csv(out / "cells.csv")
    sub = pd.read_csv(out / "sample_submission.csv")
    assert list(train.columns) == ["ID", "Label"] and len(train) == 6
    assert list(cells.columns) == ["ID", "cell_id", "Label"]
    assert list(sub.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert (sub["ImageWidth"] == 80).all()
    for sid, label in zip(train["ID"], train["Label"], strict=True):
        mask = cv2.imread(str(out / "masks" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint16 and mask.shape == (80, 80)
        mine = cells[cells["ID"] == sid]
        assert sorted(mine["cell_id"]) == sorted(np.unique(mask[mask > 0]))
        union = sorted(set().union(*(parse_labels(t) for t in mine["Label"])))
        assert union == parse_labels(label)
        raw = cv2.imread(str(out / "train" / f"{sid}_green.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        assert read_sample(out / "train", sid).dtype == np.uint8


def test_cli_bad_value_exits_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "hpa.synthetic", f"out={tmp_path}", "bit_depth=12"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "bit_depth=12" in r.stderr and "Traceback" not in r.stderr
