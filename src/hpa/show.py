"""python -m hpa.show: pictures of a submission's cells, or the HTML report of a run or benchmark.

python -m hpa.show submission=FILE input_dir=DIR out=DIR [ids=[...]] [truth_dir=DIR]
python -m hpa.show run=DIR          # DIR/report.html of a training run
python -m hpa.show benchmark=DIR    # DIR/report.html of a benchmark
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from hpa.cli import check_writable, compose
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import atomic_path, write_bytes
from hpa.signals import graceful_sigterm

USAGE = "python -m hpa.show submission=FILE input_dir=DIR out=DIR (or run=DIR, or benchmark=DIR)"


def show(
    submission: str | Path,
    input_dir: str | Path,
    out: str | Path,
    ids: Sequence[str] | None = None,
    truth_dir: str | Path | None = None,
    size: int = 1024,
    top: int = 3,
    iou_threshold: float = 0.6,
    progress: bool = True,
) -> list[Path]:
    """Write out/{ID}.png for each image (all the submission's by default) and out/cells.csv;
    images are read, drawn and written one at a time. Returns the pictures' paths."""
    import pandas as pd

    from hpa.data.images import read_sample
    from hpa.submission.predictions import read_submission
    from hpa.submission.truth import TruthSet
    from hpa.viz.draw import encode_png
    from hpa.viz.predictions import picture

    frame = read_submission(submission).set_index("ID")
    wanted = list(frame.index) if ids is None else [str(i) for i in ids]
    unknown = [i for i in wanted if i not in frame.index]
    if unknown:
        raise InputError(f"ids: {unknown[0]} is not a row of {submission}; pick IDs it has")
    truth = TruthSet(truth_dir) if truth_dir else None
    if truth is not None:
        lacking = [i for i in wanted if i not in truth.ids]
        if lacking:
            raise InputError(f"truth_dir={truth_dir} has no mask for {lacking[0]}; drop truth_dir")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for sample_id in tqdm(wanted, desc="show", unit="img", disable=not progress):
        row = frame.loc[sample_id]
        height, width = int(row["ImageHeight"]), int(row["ImageWidth"])
        mask = truth.mask(sample_id) if truth is not None else None
        if mask is not None and mask.shape != (height, width):
            raise InputError(
                f"submission row {sample_id} is {height}x{width} but its truth mask is "
                f"{mask.shape[0]}x{mask.shape[1]}; masks must be at full image resolution"
            )
        image, cells = picture(
            sample_id,
            read_sample(input_dir, sample_id),
            row["PredictionString"],
            height,
            width,
            size=size,
            top=top,
            truth=mask,
            truth_classes=truth.cell_classes.get(sample_id, {}) if truth is not None else None,
            iou_threshold=iou_threshold,
        )
        written.append(write_bytes(out / f"{sample_id}.png", encode_png(image)))
        rows += [asdict(c) for c in cells]
        del image, mask  # before the next image is read: one image in memory at a time
    columns = ["ID", "cell", "top_class", "confidence", "status", "iou", "truth"]
    table = pd.DataFrame(rows, columns=columns).astype({"cell": "Int64", "top_class": "Int64"})
    with atomic_path(out / "cells.csv") as tmp:
        table.to_csv(tmp, index=False)
    return written


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("show", sys.argv[1:] if argv is None else argv)
    chosen = [k for k in ("submission", "run", "benchmark") if cfg.get(k)]
    if len(chosen) != 1:
        why = "nothing to show" if not chosen else f"{' and '.join(chosen)} are both set"
        raise InputError(f"{why}; run `{USAGE}`")
    if cfg.run or cfg.benchmark:
        from hpa.viz.report import REPORT, write_benchmark_report, write_run_report

        folder = Path(cfg.run or cfg.benchmark)
        if not folder.is_dir():
            raise InputError(
                f"{chosen[0]}={folder} is not a folder; pass the run or benchmark folder"
            )
        check_writable(folder / REPORT, chosen[0])
        write = write_run_report if cfg.run else write_benchmark_report
        print(f"wrote {write(folder)}")
        return
    for key in ("input_dir", "out"):
        if not cfg.get(key):
            raise InputError(
                f"{key} is not set; run `python -m hpa.show submission=FILE input_dir=DIR out=DIR`"
            )
    check_writable(cfg.out, "out")
    with graceful_sigterm("the pictures written so far are complete; run the same command again"):
        written = show(
            cfg.submission,
            cfg.input_dir,
            cfg.out,
            ids=None
            if cfg.ids is None
            else [cfg.ids]
            if isinstance(cfg.ids, str)
            else list(cfg.ids),
            truth_dir=cfg.truth_dir,
            size=int(cfg.size),
            top=int(cfg.top),
            iou_threshold=float(cfg.iou_threshold),
            progress=bool(cfg.progress),
        )
    print(f"wrote {len(written)} picture(s) and cells.csv to {cfg.out}")


if __name__ == "__main__":
    main()
