"""Reading a Kaggle submission CSV back: rows, PredictionString triples and their masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.errors import InputError
from hpa.inputs import read_table
from hpa.labels import NUM_CLASSES
from hpa.submission.encoding import decode_binary_mask
from hpa.submission.metric import Detection

COLUMNS = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


def read_submission(path: str | Path) -> pd.DataFrame:
    """The submission with its columns checked; one row per ID."""
    path = Path(path)
    if not path.exists():  # a FIFO or folder: named by read_table
        raise InputError(f"submission {path} does not exist; pass submission=FILE.csv")
    frame = read_table(
        path, f"submission {path}", ",".join(COLUMNS), dtype={"ID": str, "PredictionString": str}
    )
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"submission {path} lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}"
        )
    duplicated = frame["ID"][frame["ID"].duplicated()]
    if len(duplicated):
        raise InputError(
            f"submission {path} has ID {duplicated.iloc[0]} more than once; one row per image"
        )
    for column in ("ImageWidth", "ImageHeight"):
        if not pd.api.types.is_integer_dtype(frame[column]) or (frame[column] <= 0).any():
            raise InputError(f"submission {path}: {column} must be positive integers")
    return frame


def parse_prediction_string(text: str, *, where: str) -> tuple[list[Detection], list[str]]:
    """`"class conf mask class conf mask ..."` -> detections (mask = index) and unique mask texts.

    A cell scored for several classes repeats its mask text; it is kept (and decoded) once.
    """
    parts = text.split()
    if len(parts) % 3:
        raise InputError(
            f"{where}: PredictionString has {len(parts)} fields, not triples of `class confidence mask`"
        )
    detections, masks, index = [], [], {}
    for i in range(0, len(parts), 3):
        cls, conf, mask = parts[i : i + 3]
        if not cls.isdigit() or int(cls) >= NUM_CLASSES:
            raise InputError(f"{where}: class {cls!r} is not a class id 0-{NUM_CLASSES - 1}")
        try:
            confidence = float(conf)
        except ValueError:
            raise InputError(f"{where}: confidence {conf!r} is not a number") from None
        if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
            raise InputError(f"{where}: confidence {conf} is outside [0, 1]")
        if mask not in index:
            index[mask] = len(masks)
            masks.append(mask)
        detections.append(Detection(int(cls), confidence, index[mask]))
    return detections, masks


def decode_masks(texts: list[str], height: int, width: int, *, where: str) -> list[np.ndarray]:
    """Mask texts -> H x W bool arrays (each text decoded once)."""
    masks = []
    for text in texts:
        try:
            mask = decode_binary_mask(text, height, width)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        masks.append(np.ascontiguousarray(mask.reshape(height, width)))
    return masks
