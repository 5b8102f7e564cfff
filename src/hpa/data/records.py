"""The sample table: train.csv rows -> IDs and multi-hot targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.errors import InputError
from hpa.inputs import read_table
from hpa.labels import NUM_CLASSES, parse_labels, to_multi_hot


def read_records(csv_path: str | Path) -> pd.DataFrame:
    """`ID,Label` -> frame with `ID`, `Label` (normalised `0|5|8`) and `labels` (list of ids)."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise InputError(
            f"missing {csv_path}; point data.root at a folder with train.csv (ID,Label)"
        )
    frame = read_table(csv_path, str(csv_path), "columns ID,Label", dtype={"ID": str, "Label": str})
    missing = {"ID", "Label"} - set(frame.columns)
    if missing:
        raise InputError(
            f"{csv_path} lacks column(s) {sorted(missing)} (has {list(frame.columns)}); expected ID,Label"
        )
    if frame.empty:
        raise InputError(f"{csv_path} has no rows")
    labels = [
        parse_labels(text, where=f"{csv_path.name} row {i + 2} (ID {sid})")
        for i, (sid, text) in enumerate(zip(frame["ID"], frame["Label"], strict=True))
    ]
    dup = frame["ID"][frame["ID"].duplicated()]
    if not dup.empty:
        raise InputError(
            f"{csv_path}: ID {dup.iloc[0]} appears more than once; keep one row per sample"
        )
    frame = frame.copy()
    frame["labels"] = labels
    frame["Label"] = ["|".join(map(str, ids)) for ids in labels]
    return frame.reset_index(drop=True)


def targets(records: pd.DataFrame) -> np.ndarray:
    """N x 19 float32 multi-hot matrix."""
    if len(records) == 0:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    return np.stack([to_multi_hot(ids) for ids in records["labels"]])
