"""`hpa.predict` called in-process on a test set, as the prediction tests run it, and the
submission contract they check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa.labels import NUM_CLASSES
from hpa.predict import main
from hpa.submission.encoding import decode_binary_mask


def run_predict(models: list[Path], testset: Path, out: Path, *extra: str) -> pd.DataFrame:
    """Predict `testset` (a `python -m hpa.synthetic split=test` folder) with `models` into `out`,
    then `extra` overrides; the submission it wrote, IDs as text."""
    main(
        [
            f"models=[{','.join(str(m) for m in models)}]",
            f"input_dir={testset / 'test'}",
            f"sample_submission={testset / 'sample_submission.csv'}",
            f"submission={out}",
            "progress=false",
            *extra,
        ]
    )
    return pd.read_csv(out, keep_default_na=False, dtype={"ID": str})


def parse(submission: pd.DataFrame) -> dict[str, list[tuple[int, float, str]]]:
    rows = {}
    for row in submission.itertuples():
        parts = row.PredictionString.split()
        assert len(parts) % 3 == 0
        rows[row.ID] = [
            (int(parts[i]), float(parts[i + 1]), parts[i + 2]) for i in range(0, len(parts), 3)
        ]
    return rows


def check_format(submission: pd.DataFrame, sample: pd.DataFrame) -> None:
    """The contract: rows in order, masks decode to H x W, 19 classes per cell, confidences in [0, 1]."""
    assert list(submission.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert submission["ID"].tolist() == sample["ID"].tolist()
    for row, (_, triples) in zip(submission.itertuples(), parse(submission).items(), strict=True):
        masks: dict[str, list[int]] = {}
        for cls, conf, mask in triples:
            assert 0 <= cls < NUM_CLASSES and 0.0 <= conf <= 1.0
            masks.setdefault(mask, []).append(cls)
        for mask, classes in masks.items():
            assert sorted(classes) == list(range(NUM_CLASSES))
            decoded = decode_binary_mask(mask, row.ImageHeight, row.ImageWidth)
            assert decoded.shape == (row.ImageHeight, row.ImageWidth) and decoded.any()
