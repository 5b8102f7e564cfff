"""Self-training: oof per-cell predictions -> soft per-cell targets (hpa.pseudo), and cell-level
training that reads them (data.cell_targets)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.data.cells import read_cell_targets
from hpa.data.datamodule import HPADataModule
from hpa.errors import InputError
from hpa.labels import NEGATIVE, NUM_CLASSES
from hpa.pseudo import COLUMNS, label_noise, main, pseudo_targets, read_oof
from hpa.synthetic import SyntheticConfig, generate_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weak_set(tmp_path_factory):
    """Positive images where 40% of the cells express nothing (true label Negative)."""
    root = tmp_path_factory.mktemp("weak") / "data"
    cfg = SyntheticConfig(
        n_images=24,
        seed=11,
        image_size=64,
        cells_per_image=(3, 6),
        skew=0.0,
        workers=1,
        non_expressing=0.4,
    )
    return generate_dataset(cfg, root, progress=False)


def image_table(rows: dict[str, list[int]]) -> pd.DataFrame:
    table = np.zeros((len(rows), NUM_CLASSES), np.float32)
    for i, labels in enumerate(rows.values()):
        table[i, labels] = 1
    return pd.DataFrame(table, index=list(rows), columns=COLUMNS)


def oof_frame(rows: list[tuple[str, int, dict[int, float]]]) -> pd.DataFrame:
    probs = np.zeros((len(rows), NUM_CLASSES))
    for i, (_, _, values) in enumerate(rows):
        for c, p in values.items():
            probs[i, c] = p
    frame = pd.DataFrame(probs, columns=COLUMNS)
    frame.insert(0, "fold", 0)
    frame.insert(0, "cell", [r[1] for r in rows])
    frame.insert(0, "ID", [r[0] for r in rows])
    return frame


def test_rule_by_hand():
    images = image_table({"a": [0, 5], "b": [18], "c": [2]})
    oof = oof_frame(
        [
            ("a", 0, {0: 0.8, 5: 0.1, 7: 0.9}),
            ("a", 1, {0: 0.4, 5: 0.5}),
            ("a", 2, {0: 0.04, 5: 0.05}),
            ("b", 0, {0: 0.9}),
            ("c", 0, {2: 0.2}),
        ]
    )
    out = pseudo_targets(oof, images).set_index(["ID", "cell"])[COLUMNS].to_numpy()
    # a: class 0 over its best cell 0.8, class 5 over 0.5; class 7 is not an image label.
    assert out[0, [0, 5, 7]].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert out[1, [0, 5]].tolist() == pytest.approx([0.5, 1.0])
    assert out[2, [0, 5]].tolist() == pytest.approx([0.05, 0.1])
    assert out[:3, NEGATIVE].tolist() == pytest.approx([0.0, 0.0, 0.9])  # 1 - the largest
    assert out[3].tolist() == np.eye(NUM_CLASSES)[NEGATIVE].tolist()  # Negative image
    assert out[4, 2] == 1.0 and out[4, NEGATIVE] == 0.0  # one cell keeps its image's labels
    mixed = pseudo_targets(oof, images, alpha=0.5, floor=0.2).set_index(["ID", "cell"])
    assert mixed.loc[("a", 2), "5"] == pytest.approx(0.5 * 1 + 0.5 * 0.2)
    assert mixed.loc[("a", 2), str(NEGATIVE)] == pytest.approx(1 - 0.6)


def weak_model_oof(root, seed: int = 0) -> pd.DataFrame:
    """Per-cell probabilities as a weakly trained model gives them: a share of the true cell
    label, a share of the image label it was trained on, and noise."""
    truth = read_cell_targets(root / "cells.csv", option="truth")
    images = pd.read_csv(root / "train.csv").set_index("ID")
    rng = np.random.default_rng(seed)
    rows = []
    for (sid, cell), true in sorted(truth.values.items()):
        image = np.zeros(NUM_CLASSES)
        image[[int(c) for c in images.loc[sid, "Label"].split("|")]] = 1
        probs = 0.5 * true + 0.25 * image + 0.25 * rng.random(NUM_CLASSES)
        rows.append((sid, cell, dict(enumerate(probs))))
    return oof_frame(rows)


def test_one_round_lowers_label_noise_and_a_shuffled_control_does_not(weak_set):
    from hpa.pseudo import image_target_table

    images = image_target_table(weak_set, "train.csv")
    truth = read_cell_targets(weak_set / "cells.csv", option="truth")
    oof = weak_model_oof(weak_set)
    noise = label_noise(pseudo_targets(oof, images), images, truth)
    inherited, pseudo = noise["inherited"], noise["pseudo"]
    assert inherited["wrong_cells"] > 0.2  # the set has non-expressing cells to find
    assert pseudo["wrong_cells"] < 0.5 * inherited["wrong_cells"]
    assert pseudo["mae"] < inherited["mae"]
    # The same probabilities on the wrong cells: hard labels no better than the inherited ones
    # (MAE alone would reward any soft target for hedging, so it is compared with the round's).
    shuffled = oof.copy()
    order = np.random.default_rng(1).permutation(len(oof))
    shuffled[COLUMNS] = oof[COLUMNS].to_numpy()[order]
    control = label_noise(pseudo_targets(shuffled, images), images, truth)["pseudo"]
    assert control["wrong_cells"] >= inherited["wrong_cells"]
    assert control["mae"] > 1.5 * pseudo["mae"]


def test_command_writes_targets_and_reports_noise(weak_set, tmp_path, capsys):
    oof_path, out = tmp_path / "oof.csv", tmp_path / "round1" / "targets.csv"
    weak_model_oof(weak_set).to_csv(oof_path, index=False)
    main([f"oof={oof_path}", f"data.root={weak_set}", f"out={out}", f"truth={weak_set}/cells.csv"])
    printed = capsys.readouterr().out
    assert "inherited" in printed and "pseudo" in printed and str(out) in printed
    written = read_cell_targets(out)
    assert written.listed is None and len(written.values) == len(read_oof(oof_path))
    with pytest.raises(SystemExit) as stop:
        main([f"oof={tmp_path / 'missing.csv'}", f"data.root={weak_set}", f"out={out}"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        main([f"oof={oof_path}", f"out={out}"])  # no data.root
    assert stop.value.code == 2


def test_oof_from_another_data_set_is_refused(weak_set):
    from hpa.pseudo import image_target_table

    oof = oof_frame([("not-an-image", 0, {0: 0.5})])
    with pytest.raises(InputError, match="not-an-image"):
        pseudo_targets(oof, image_target_table(weak_set, "train.csv"))


def cell_datamodule(root, **kwargs) -> HPADataModule:
    dm = HPADataModule(
        str(root),
        image_size=24,
        batch_size=4,
        n_folds=2,
        level="cell",
        persistent_workers=False,
        **kwargs,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_cell_dataset_reads_cell_targets(weak_set, tmp_path):
    plain = cell_datamodule(weak_set)
    keys = plain.train_set.item_keys()
    rng = np.random.default_rng(0)
    # Every other training cell gets its own random soft target.
    chosen = list(range(0, len(plain.train_set), 2))
    values = rng.random((len(chosen), NUM_CLASSES)).round(4)
    frame = pd.DataFrame(values, columns=COLUMNS)
    frame.insert(0, "cell", [keys["cell"][i] for i in chosen])
    frame.insert(0, "ID", [keys["ID"][i] for i in chosen])
    path = tmp_path / "targets.csv"
    frame.to_csv(path, index=False)
    dm = cell_datamodule(weak_set, cell_targets=str(path))
    assert dm.train_set.replaced == len(chosen)
    own = dict(zip(chosen, values, strict=True))
    for item in range(len(dm.train_set)):
        _, target = dm.train_set[item]
        expected = own.get(item, plain.train_set[item][1].numpy())
        assert np.allclose(target.numpy(), expected, atol=1e-6)
    # Validation keeps the inherited image labels (val/mAP stays comparable across rounds).
    for item in range(len(dm.val_set)):
        assert torch.equal(dm.val_set[item][1], plain.val_set[item][1])
    # The batches a training epoch sees carry them too (every row one of the dataset's).
    seen = torch.cat([y for _, y in dm.train_dataloader()]).numpy()
    expected_rows = {
        tuple(np.round(dm.train_set[i][1].numpy(), 5)) for i in range(len(dm.train_set))
    }
    assert {tuple(np.round(row, 5)) for row in seen} <= expected_rows
    assert (~np.isin(seen, [0.0, 1.0])).any(axis=1).sum() >= len(seen) // 4


def test_oracle_cells_csv_gives_the_true_cell_labels(weak_set):
    dm = cell_datamodule(weak_set, cell_targets=str(weak_set / "cells.csv"))
    truth = pd.read_csv(weak_set / "cells.csv", dtype={"ID": str})
    truth["cell"] = truth.groupby("ID")["cell_id"].rank(method="first").astype(int) - 1
    labels = truth.set_index(["ID", "cell"])["Label"]
    keys = dm.train_set.item_keys()
    assert dm.train_set.replaced == len(dm.train_set)
    for item, key in enumerate(zip(keys["ID"], keys["cell"], strict=True)):
        expected = np.zeros(NUM_CLASSES)
        expected[[int(c) for c in labels[key].split("|")]] = 1
        assert np.array_equal(dm.train_set[item][1].numpy(), expected)


def test_cell_targets_that_do_not_fit_the_masks_are_refused(weak_set, tmp_path):
    path = tmp_path / "bad.csv"
    sid = cell_datamodule(weak_set).train_set.ids[0]
    frame = pd.DataFrame([[sid, 99] + [0.5] * NUM_CLASSES], columns=["ID", "cell", *COLUMNS])
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match="cell 99"):
        HPADataModule(str(weak_set), 24, 4, n_folds=2, level="cell", cell_targets=str(path)).setup()
    with pytest.raises(InputError, match="cell-level"):
        HPADataModule(str(weak_set), 24, 4, cell_targets=str(path))
    frame[COLUMNS[0]] = 1.5
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match="from 0 to 1"):
        read_cell_targets(path)


def test_tiny_cell_training_with_cell_targets(weak_set, tmp_path):
    from hpa.cli import compose
    from hpa.train import train

    oof = weak_model_oof(weak_set)
    oof["cell"] = oof["cell"].astype(int)
    path = tmp_path / "targets.csv"
    main([f"oof={_write(oof, tmp_path / 'oof.csv')}", f"data.root={weak_set}", f"out={path}"])
    overrides = [
        "data=cells",
        f"data.root={weak_set}",
        "data.synthetic=null",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "data.n_folds=2",
        f"data.cell_targets={path}",
        "model.backbone=test_resnet",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "logger=csv",
        "threads=1",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    metrics = train(compose("train", overrides))
    assert math.isfinite(metrics["val/mAP"])
    assert (tmp_path / "run" / "oof.csv").is_file()
    assert (tmp_path / "run" / "report.html").is_file()  # report=true by default: cells drawn


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)
