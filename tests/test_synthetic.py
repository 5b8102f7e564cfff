import subprocess
import sys
from pathlib import Path

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


# ---- benchmark options: non-expressing cells, unannotated border cells ----------------------


def test_non_expressing_cells_are_negative_and_dark():
    # noise=0, blur=0: a cell without green has exactly the background's green value.
    cfg = SyntheticConfig(image_size=96, seed=1, skew=0.0, non_expressing=0.5, noise=0, blur=0)
    silent, lit = 0, []
    for i in range(12):
        s = render_sample(cfg, i)
        expressed = sorted({c for labels in s.cell_labels for c in labels if c != NEGATIVE})
        assert s.image_labels == (expressed or [NEGATIVE])  # the union of expressing cells
        green, background = s.image[..., 1], s.image[..., 1][s.cells == 0]
        assert len(np.unique(background)) == 1
        for cell_id, labels in enumerate(s.cell_labels, start=1):
            inside = green[s.cells == cell_id]
            if labels == [NEGATIVE]:
                assert (inside == background[0]).all()
                silent += s.image_labels != [NEGATIVE]
            else:
                lit.append(inside.max() > background[0])
    assert silent > 0  # some positive images hold Negative cells
    # Expressing cells do show green (a rare pattern can fall outside its small cell).
    assert np.mean(lit) > 0.9


@pytest.mark.parametrize("options", [{}, {"non_expressing": 0.5, "negative_cells": 0.0}])
def test_without_non_expressing_every_cell_of_a_positive_image_expresses(options):
    cfg = SyntheticConfig(image_size=96, seed=1, skew=0.0, **options)
    for i in range(12):
        s = render_sample(cfg, i)
        if s.image_labels != [NEGATIVE]:
            assert all(NEGATIVE not in labels for labels in s.cell_labels)


def test_non_expressing_must_be_a_fraction():
    with pytest.raises(gen.InputError, match="non_expressing=1.5"):
        SyntheticConfig(non_expressing=1.5)


def _perfect_submission(cells: pd.DataFrame, masks: Path, path: Path) -> Path:
    """Every cell of `cells` with each of its labels at confidence 1 (empty labels skipped)."""
    from hpa.submission import encode_binary_mask

    rows = []
    for sid, mine in cells.groupby("ID"):
        mask = cv2.imread(str(masks / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        triples = [
            f"{c} 1.0 {encode_binary_mask(mask == row.cell_id)}"
            for row in mine.itertuples()
            if row.Label
            for c in parse_labels(row.Label)
        ]
        rows.append((sid, mask.shape[1], mask.shape[0], " ".join(triples)))
    columns = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def test_border_cells_are_unannotated_and_detections_on_them_are_false_positives(tmp_path):
    from hpa.evaluate import evaluate
    from hpa.submission.truth import TruthSet

    options = dict(n_images=6, seed=4, image_size=64, cells_per_image=(4, 8), workers=1)
    full = gen.generate_dataset(SyntheticConfig(**options), tmp_path / "full", progress=False)
    cut = gen.generate_dataset(
        SyntheticConfig(**options, border_truth=False), tmp_path / "cut", progress=False
    )
    read = dict(dtype={"ID": str, "Label": str}, keep_default_na=False)
    all_cells, cells = (
        pd.read_csv(full / "cells.csv", **read),
        pd.read_csv(cut / "cells.csv", **read),
    )
    assert (all_cells.Label != "").all()
    assert (all_cells[["ID", "cell_id"]] == cells[["ID", "cell_id"]]).all().all()
    truth = TruthSet(cut)
    n_border = 0
    for sid in truth.ids:
        mask = truth.mask(sid)  # masks/ still holds every cell, border ones included
        np.testing.assert_array_equal(
            mask, cv2.imread(str(full / "masks" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        )
        edge = set(np.unique(np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])))
        mine = cells[cells["ID"].eq(sid)]
        empty = set(mine.cell_id[mine.Label == ""])
        assert empty == edge - {0}
        assert all(truth.cell_classes[sid][c] == [] for c in empty)
        n_border += len(empty)
    assert 0 < n_border < len(cells)
    # Perfect on the annotated cells: 1.0. The same plus the border cells' true labels: each
    # border detection is a false positive at confidence 1, so the score drops.
    annotated = _perfect_submission(cells, cut / "masks", tmp_path / "annotated.csv")
    everything = _perfect_submission(all_cells, cut / "masks", tmp_path / "everything.csv")
    assert evaluate(annotated, cut, progress=False)["mAP"] == 1.0
    assert evaluate(everything, cut, progress=False)["mAP"] < 1.0
    assert evaluate(everything, full, progress=False)["mAP"] == 1.0
