"""Ground truth for scoring: a synthetic set's `masks/{ID}.png` and `cells.csv`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hpa.errors import InputError
from hpa.inputs import read_table
from hpa.labels import parse_labels


class TruthSet:
    """Cell instance masks and per-cell classes of a data set written by `python -m hpa.synthetic`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        mask_dir = self.root / "masks"
        cells_csv = self.root / "cells.csv"
        if not mask_dir.is_dir() or not cells_csv.is_file():
            raise InputError(
                f"truth_dir={self.root} needs masks/ and cells.csv (as `python -m hpa.synthetic` "
                "writes them); point truth_dir at such a data set"
            )
        self.ids = sorted(p.stem for p in mask_dir.glob("*.png"))
        if not self.ids:
            raise InputError(
                f"no masks in {mask_dir}; expected masks/{{ID}}.png (uint16 instances)"
            )
        self.cell_classes = read_cell_classes(cells_csv)
        unknown = sorted(set(self.cell_classes) - set(self.ids))
        if unknown:
            raise InputError(f"{cells_csv} lists ID {unknown[0]} that has no mask in {mask_dir}")

    def mask(self, sample_id: str) -> np.ndarray:
        """H x W instance labels of one image, checked against cells.csv."""
        path = self.root / "masks" / f"{sample_id}.png"
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise InputError(f"cannot read {path} as a single-channel instance mask; regenerate it")
        ids = set(np.unique(mask).tolist()) - {0}
        labelled = set(self.cell_classes.get(sample_id, {}))
        if ids != labelled:
            odd = sorted(ids ^ labelled)[0]
            raise InputError(
                f"{path} and cells.csv disagree about cell {odd} of {sample_id}: every cell in "
                "the mask needs exactly one cells.csv row; regenerate the truth set"
            )
        return mask


def read_cell_classes(path: Path) -> dict[str, dict[int, list[int]]]:
    """cells.csv -> {ID: {cell_id: [classes]}}; an empty Label is a cell nobody annotated ([]):
    it is no ground truth of any class, so a detection on it is a false positive."""
    frame = read_table(path, str(path), "ID,cell_id,Label", dtype={"ID": str, "Label": str})
    missing = {"ID", "cell_id", "Label"} - set(frame.columns)
    if missing:
        raise InputError(
            f"{path} lacks column(s) {', '.join(sorted(missing))}; expected ID,cell_id,Label"
        )
    classes: dict[str, dict[int, list[int]]] = {}
    for row in frame.itertuples(index=False):
        where = f"{path.name} row {row.ID} cell {row.cell_id}"
        try:
            cell_id = int(row.cell_id)
        except (TypeError, ValueError):
            raise InputError(f"{where}: cell_id {row.cell_id!r} is not an integer") from None
        cells = classes.setdefault(row.ID, {})
        if cell_id in cells:
            raise InputError(f"{where}: duplicate row; each cell appears once")
        cells[cell_id] = parse_labels(row.Label, where=where) if row.Label.strip() else []
    return classes
