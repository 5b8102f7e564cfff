"""The submission CSV: reading the sample submission, formatting rows, writing them resumably."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.errors import InputError
from hpa.fsio import disk_full_as_error, move_into_place, write_text
from hpa.inputs import read_table
from hpa.submission.predictions import COLUMNS


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """`ID,ImageWidth,ImageHeight,...` with positive integer sizes; the rows to predict, in order."""
    path = Path(path)
    if not path.exists():  # a FIFO or folder: named by read_table
        raise InputError(f"missing sample submission {path}; pass sample_submission=FILE")
    frame = read_table(path, str(path), ",".join(COLUMNS))
    missing = {"ID", "ImageWidth", "ImageHeight"} - set(frame.columns)
    if missing:
        raise InputError(f"{path} lacks column(s) {sorted(missing)}; expected {','.join(COLUMNS)}")
    for column in ("ImageWidth", "ImageHeight"):
        sizes = pd.to_numeric(frame[column], errors="coerce")
        bad = frame["ID"][sizes.isna() | (sizes <= 0) | (sizes % 1 != 0)]
        if not bad.empty:
            raise InputError(f"{path}: {column} of ID {bad.iloc[0]} is not a positive integer")
        frame[column] = sizes.astype(int)
    dup = frame["ID"][frame["ID"].duplicated()]
    if not dup.empty:
        raise InputError(f"{path}: ID {dup.iloc[0]} appears more than once")
    return frame[["ID", "ImageWidth", "ImageHeight"]]


def prediction_string(masks: Sequence[str], probs: np.ndarray, min_confidence: float = 0.0) -> str:
    """`class confidence mask` for every (cell, class); each cell's mask text is reused.

    `min_confidence` > 0 leaves out a cell's classes below it, but never the cell's top class, so
    every cell stays in the file. The metric ranks detections per class, so a left-out triple
    only costs recall at the very bottom of that class's ranking (below the floor).
    """
    if min_confidence < 0:
        raise InputError(f"min_confidence={min_confidence}: use a value >= 0")
    parts = []
    for mask, row in zip(masks, probs, strict=True):
        keep = row >= min_confidence
        if len(row):
            keep[int(np.argmax(row))] = True
        parts.extend(f"{c} {row[c]:.6g} {mask}" for c in np.flatnonzero(keep))
    return " ".join(parts)


class SubmissionWriter:
    """Streams rows to a hidden partial file and renames it to `path` once every row is in.

    A killed run resumes: with the same `fingerprint`, rows already in the partial file are kept
    and `done` says how many to skip; anything else starts over.
    """

    def __init__(
        self, path: str | Path, ids: Sequence[str], fingerprint: dict[str, Any], resume: bool = True
    ):
        self.path = Path(path)
        self.ids = list(ids)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.meta = self.path.with_name(f".{self.path.name}.partial.json")
        if self.path.is_dir():
            raise InputError(f"submission={self.path} is a folder; pass the CSV file to write")
        stamp = json.dumps(fingerprint, sort_keys=True, default=str)
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.done = self._resumable_rows(stamp) if resume else 0
            if self.done == 0:
                write_text(self.meta, stamp)
                with open(self.partial, "w", newline="") as f:
                    csv.writer(f, lineterminator="\n").writerow(COLUMNS)

    def _resumable_rows(self, stamp: str) -> int:
        """Complete rows of a previous identical run, in sample-submission order (0 if none)."""
        if not (self.partial.exists() and self.meta.exists()) or self.meta.read_text() != stamp:
            return 0
        text = self.partial.read_text()
        lines = text.split("\n")[:-1]  # a last line without its newline was cut off mid-write
        if not lines or lines[0] != ",".join(COLUMNS):
            return 0
        rows = [line.split(",", 1)[0] for line in lines[1:]]
        if rows != self.ids[: len(rows)]:
            return 0
        keep = sum(len(line) + 1 for line in lines)
        with open(self.partial, "r+") as f:
            f.truncate(len(text[:keep].encode()))
        return len(rows)

    def write(self, sample_id: str, width: int, height: int, prediction: str) -> None:
        # Opened per row: each row is on disk before the next image starts, ready for a resume.
        with self._writing(), open(self.partial, "a", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow([sample_id, width, height, prediction])

    def commit(self) -> Path:
        """Move the finished file into place (flushed first); the partial files go."""
        with self._writing():
            move_into_place(self.partial, self.path)
        self.meta.unlink(missing_ok=True)
        return self.path

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A full disk or a read-only folder: one line naming it (the rows so far are kept)."""
        try:
            with disk_full_as_error(self.path.parent):
                yield
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise self._unwritable(err) from None
            raise

    def _unwritable(self, err: OSError) -> InputError:
        return InputError(
            f"cannot write the submission in {self.path.parent} ({err.strerror}); "
            "pass submission= a path in a writable folder"
        )
