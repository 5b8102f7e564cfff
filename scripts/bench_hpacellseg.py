"""Seconds per image and F1 cost of hpacellseg's post-processing at reduced scale (post_scale).

    PYTHONPATH=DIR_WITH_HPACELLSEG taskset -c 0 env OMP_NUM_THREADS=1 \
        .venv/bin/python scripts/bench_hpacellseg.py [N_PER_SETTING]

hpacellseg's real pre- and post-processing with pixel-wise stand-in networks (the weights are not
available here): nuclei = bright blue, cells = bright red/yellow/blue, as in
tests/test_hpacellseg.py. Synthetic images only (hpa.synthetic), seeds unused by the tests.
Seconds exclude the networks' forward passes (timed and subtracted). F1 at IoU 0.6.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from hpa.segment import build_segmenter
from hpa.segment.matching import iou_matrix, match_instances
from hpa.synthetic import SyntheticConfig, render_sample

MEAN = torch.tensor([124.0, 117.0, 104.0]) / 255
STD = 1 / (0.0167 * 255)
SECONDS_IN_NETS = [0.0]


class ThresholdNet(torch.nn.Module):
    def __init__(self, channels, threshold, sharpness):
        super().__init__()
        self.channels, self.threshold, self.sharpness = channels, threshold, sharpness

    def forward(self, x):
        start = time.perf_counter()
        value = (x * STD + MEAN[None, :, None, None])[:, self.channels].amax(1, True)
        logit = self.sharpness * (value - self.threshold)
        out = torch.cat([torch.zeros_like(logit), torch.full_like(logit, -30.0), logit], 1)
        SECONDS_IN_NETS[0] += time.perf_counter() - start
        return out


SETTINGS = {
    "typical 2048": dict(image_size=2048, cells_per_image=(12, 20)),
    "crowded 2048": dict(image_size=2048, cells_per_image=(25, 40), noise=0.06),
    "typical 1728": dict(image_size=1728, cells_per_image=(12, 20)),
    "typical 3072": dict(image_size=3072, cells_per_image=(12, 20)),
}
SCALES = (1.0, 0.5, 0.25)


def main(n: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    folder = Path(tempfile.mkdtemp())
    torch.save(ThresholdNet([2], 0.25, 30.0), folder / "nuclei.pth")
    torch.save(ThresholdNet([0, 1, 2], 0.15, 15.0), folder / "cell.pth")
    segmenters = {
        p: build_segmenter(
            "hpacellseg",
            nuclei_model=str(folder / "nuclei.pth"),
            cell_model=str(folder / "cell.pth"),
            allow_pickle=True,
            post_scale=p,
        )
        for p in SCALES
    }
    report = {}
    for name, options in SETTINGS.items():
        counts = {p: {"full": [0, 0, 0], "truth": [0, 0, 0]} for p in SCALES}
        seconds = {p: [] for p in SCALES}
        ious = {p: [] for p in SCALES}  # IoU of each full-scale cell's match at reduced scale
        n_here = n if name.endswith("2048") else max(2, n // 2)
        for index in range(n_here):
            cfg = SyntheticConfig(seed=500 + index, workers=1, **options)
            sample = render_sample(cfg, 0)
            full = None
            for p in SCALES:
                SECONDS_IN_NETS[0] = 0.0
                start = time.perf_counter()
                seg = segmenters[p].segment(sample.image)
                seconds[p].append(time.perf_counter() - start - SECONDS_IN_NETS[0])
                full = seg if p == 1.0 else full
                iou, _, _ = iou_matrix(seg.cells, full.cells)
                ious[p].extend(iou.max(axis=0)[iou.max(axis=0) >= 0.6].tolist())
                for key, ref in (("full", full.cells), ("truth", sample.cells)):
                    m = match_instances(seg.cells, ref, 0.6)
                    c = counts[p][key]
                    c[0], c[1], c[2] = (
                        c[0] + m.true_positives,
                        c[1] + m.false_positives,
                        c[2] + m.false_negatives,
                    )
        report[name] = {
            f"post_scale={p}": {
                "images": n_here,
                "s_per_image_median": round(statistics.median(seconds[p]), 3),
                "s_per_image_min": round(min(seconds[p]), 3),
                "F1_vs_full_scale": round(f1(*counts[p]["full"]), 4),
                "mean_IoU_of_matches_vs_full_scale": round(statistics.mean(ious[p]), 4),
                "F1_vs_truth": round(f1(*counts[p]["truth"]), 4),
                "tp_fp_fn_vs_truth": counts[p]["truth"],
            }
            for p in SCALES
        }
        print(name, json.dumps(report[name], indent=1), flush=True)
    print(json.dumps(report))


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
