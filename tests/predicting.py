"""`hpa.predict` called in-process on a test set, as the prediction tests run it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa.predict import main


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
