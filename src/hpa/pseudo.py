"""python -m hpa.pseudo oof=FILE data.root=DIR out=FILE: soft per-cell targets for self-training.

Cells inherit their image's labels, but in a labelled image some cells do not show a class (or
any protein at all). Out-of-fold per-cell predictions (the merged oof.csv of a cell-level
multirun over every fold: each cell predicted by a model that never trained on its image) say
which cells do. The rule, per image with labels L (Negative aside):

- a class not in L: 0 (image labels are trusted as the upper bound: a cell cannot show a class
  its image lacks);
- a class c in L: clip(p_c / max of p_c over the image's cells, floor, 1). Some cell of the image
  shows c (the image label is the union of its cells), so the most confident cell is anchored
  at 1 and the others are scaled relative to it: this calibrates away how sure the weakly
  trained model is of each class overall, and a one-cell image keeps its image labels exactly;
- mixed with the inherited label: alpha * inherited + (1 - alpha) * the above (alpha=0: all
  pseudo; alpha=1: nothing changes);
- Negative: 1 - the largest of those, so a cell that shows none of its image's classes becomes
  Negative (a non-expressing cell), one that clearly shows one does not.

A Negative image keeps Negative for every cell. The CSV written is what `data.cell_targets`
reads (ID, cell, 0..18). With `truth=DIR/cells.csv` (a synthetic set's true cell labels) it
prints the label noise of the inherited and of the new targets against the truth.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from hpa.cli import compose
from hpa.data.cells import CellTargets, read_cell_targets
from hpa.data.records import read_records, targets
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import atomic_path
from hpa.inputs import read_table
from hpa.labels import NEGATIVE, NUM_CLASSES
from hpa.outputs import output

COLUMNS = [str(c) for c in range(NUM_CLASSES)]


def read_oof(path: str | Path) -> pd.DataFrame:
    """A per-cell oof.csv (ID, cell, [fold,] 0..18) of a cell-level run or multirun."""
    path = Path(path)
    if not path.exists():  # a FIFO or folder: named by read_table
        raise InputError(f"oof={path} does not exist; give the oof.csv of a data=cells run")
    frame = read_table(path, f"oof={path}", "ID, cell and 0..18", keep_default_na=True)
    needed = {"ID", "cell", *COLUMNS}
    if not needed <= set(frame.columns):
        raise InputError(
            f"oof={path} has columns {list(frame.columns)}: it needs ID, cell and 0..18, as the "
            "oof.csv of a cell-level run (python -m hpa.train data=cells) has them"
        )
    if not pd.api.types.is_integer_dtype(frame["cell"]) or (frame["cell"] < 0).any():
        raise InputError(f"oof={path}: column cell must hold cell positions (whole numbers >= 0)")
    probs = frame[COLUMNS].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise InputError(f"oof={path}: columns 0..18 must be probabilities from 0 to 1")
    if frame.duplicated(["ID", "cell"]).any():
        raise InputError(f"oof={path}: a cell appears twice; merge folds keeping one row per cell")
    return frame


def pseudo_targets(
    oof: pd.DataFrame, image_targets: pd.DataFrame, alpha: float = 0.0, floor: float = 0.0
) -> pd.DataFrame:
    """Soft per-cell targets (ID, cell, 0..18) by the module's rule. `image_targets`: one row
    per image ID (index) with the 19 multi-hot columns of its labels."""
    missing = sorted(set(oof["ID"]) - set(image_targets.index))
    if missing:
        raise InputError(
            f"oof has {len(missing)} image ID(s) not in the training labels, e.g. {missing[0]}; "
            "give the data.root the oof predictions were made on"
        )
    inherited = image_targets.loc[oof["ID"], COLUMNS].to_numpy(np.float64)
    probs = oof[COLUMNS].to_numpy(np.float64)
    labelled = inherited[:, :NEGATIVE] > 0
    # The most confident cell of the image, per class.
    best = oof[["ID"]].join(oof[COLUMNS[:NEGATIVE]]).groupby("ID").transform("max").to_numpy()
    anchored = np.where(best > 1e-6, probs[:, :NEGATIVE] / np.maximum(best, 1e-6), 1.0)
    positive = np.where(labelled, np.clip(anchored, floor, 1.0), 0.0)
    positive = alpha * inherited[:, :NEGATIVE] + (1 - alpha) * positive
    negative = 1.0 - positive.max(axis=1)
    out = np.concatenate([positive, negative[:, None]], axis=1)
    negative_image = ~labelled.any(axis=1)
    out[negative_image] = inherited[negative_image]  # Negative images stay Negative
    frame = pd.DataFrame(out, columns=COLUMNS)
    frame.insert(0, "cell", oof["cell"].to_numpy())
    frame.insert(0, "ID", oof["ID"].to_numpy())
    return frame


def label_noise(
    cell_targets: pd.DataFrame, image_targets: pd.DataFrame, truth: CellTargets
) -> dict[str, Any]:
    """Inherited and given targets against the true cell labels, on the cells both cover:
    mean absolute error per target value, and the share of cells whose hard label set
    (targets >= 0.5) is not the true one."""
    keys = list(zip(cell_targets["ID"], cell_targets["cell"].astype(int), strict=True))
    rows = [i for i, key in enumerate(keys) if key in truth.values]
    if not rows:
        raise InputError(
            f"truth={truth.path} labels none of the oof's cells; give the cells.csv of the same "
            "data set"
        )
    true = np.stack([truth.values[keys[i]] for i in rows]).astype(np.float64)
    given = cell_targets[COLUMNS].to_numpy(np.float64)[rows]
    inherited = image_targets.loc[cell_targets["ID"].to_numpy()[rows], COLUMNS].to_numpy()

    def noise(values: np.ndarray) -> dict[str, float]:
        wrong = ((values >= 0.5) != (true >= 0.5)).any(axis=1)
        return {"mae": float(np.abs(values - true).mean()), "wrong_cells": float(wrong.mean())}

    return {"cells": len(rows), "inherited": noise(inherited), "pseudo": noise(given)}


def report(noise: dict[str, Any]) -> str:
    lines = [f"label noise on {noise['cells']} cells with true labels:"]
    lines.append(f"{'':10s} {'MAE':>8s} {'wrong cells':>12s}")
    for name in ("inherited", "pseudo"):
        n = noise[name]
        lines.append(f"{name:10s} {n['mae']:8.4f} {100 * n['wrong_cells']:11.1f}%")
    return "\n".join(lines)


def image_target_table(root: str | Path, train_csv: str) -> pd.DataFrame:
    records = read_records(Path(root) / train_csv)
    return pd.DataFrame(targets(records), index=records["ID"].to_numpy(), columns=COLUMNS)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("pseudo", sys.argv[1:] if argv is None else argv)
    for key in ("oof", "data.root", "out"):
        if not OmegaConf.select(cfg, key):
            raise InputError(
                f"{key} is not set; run `python -m hpa.pseudo oof=FILE data.root=DIR out=FILE`"
            )
    out = Path(cfg.out)
    inputs = [cfg.oof, Path(cfg.data.root) / cfg.data.train_csv, cfg.get("truth")]
    with output(out, "out", "hpa.pseudo", inputs=inputs):
        images = image_target_table(cfg.data.root, cfg.data.train_csv)
        oof = read_oof(cfg.oof)
        result = pseudo_targets(oof, images, alpha=float(cfg.alpha), floor=float(cfg.floor))
        with atomic_path(out) as tmp:
            result.to_csv(tmp, index=False, float_format="%.5f")
    if cfg.truth:
        truth = read_cell_targets(cfg.truth, option="truth")
        print(report(label_noise(result, images, truth)))
    print(f"wrote {out} ({len(result)} cells); train with data.cell_targets={out}")


if __name__ == "__main__":
    main()
