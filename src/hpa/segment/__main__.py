"""python -m hpa.segment root=DIR: segment a data set, time it, score it against masks/ if present."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
from omegaconf import OmegaConf

from hpa.cli import compose
from hpa.data.images import read_sample
from hpa.data.records import read_records
from hpa.errors import InputError, exit_on_input_error
from hpa.segment.factory import segmenter_from_config
from hpa.segment.matching import match_instances


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("segment_check", sys.argv[1:] if argv is None else argv, command="segment")
    if not cfg.root:
        raise InputError("root is not set; run `python -m hpa.segment root=DIR`")
    root = Path(cfg.root)
    image_dir = Path(cfg.image_dir) if cfg.image_dir else root / "train"
    ids = read_records(root / "train.csv")["ID"].tolist()[: cfg.limit]
    segmenter = segmenter_from_config(OmegaConf.to_container(cfg.segmenter, resolve=True))
    seconds, cpu, scores = [], [], []
    # CPU seconds: steadier than the wall clock on a shared machine (waiting is not counted).
    print(f"{'ID':40s} {'cells':>5s} {'F1':>6s} {'seconds':>7s} {'CPU s':>7s}")
    for sample_id in ids:
        image = read_sample(image_dir, sample_id)
        start, start_cpu = time.perf_counter(), time.process_time()
        seg = segmenter.segment(image)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        f1 = "-"
        mask_path = root / "masks" / f"{sample_id}.png"
        if mask_path.is_file():
            reference = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            scores.append(match_instances(seg.cells, reference, cfg.iou_threshold).f1)
            f1 = f"{scores[-1]:.3f}"
        print(f"{sample_id:40s} {len(seg.cell_ids):5d} {f1:>6s} {seconds[-1]:7.2f} {cpu[-1]:7.2f}")
    summary = (
        f"{len(ids)} images, median {np.median(seconds):.2f} s per image "
        f"({np.median(cpu):.2f} s CPU; segmentation only)"
    )
    if scores:
        summary += f", mean F1 {np.mean(scores):.3f} at IoU >= {cfg.iou_threshold}"
    print(summary)


if __name__ == "__main__":
    main()
