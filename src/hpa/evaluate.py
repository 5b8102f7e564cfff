"""python -m hpa.evaluate submission=FILE truth_dir=DIR: the competition metric on a truth set."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hpa.cli import compose
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import write_json
from hpa.outputs import output
from hpa.signals import graceful_sigterm
from hpa.submission.metric import MeanAveragePrecision
from hpa.submission.predictions import decode_masks, parse_prediction_string, read_submission
from hpa.submission.truth import TruthSet


def evaluate(
    submission: str | Path,
    truth_dir: str | Path,
    iou_threshold: float = 0.6,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `submission` against `truth_dir`; truth images it lacks count as all missed."""
    if not 0.5 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold={iou_threshold}: use a value in (0.5, 1]")
    frame = read_submission(submission).set_index("ID")
    truth = TruthSet(truth_dir)
    extra = sorted(set(frame.index) - set(truth.ids))
    if extra:
        raise InputError(
            f"submission {submission} has {len(extra)} ID(s) without ground truth in {truth_dir}, "
            f"e.g. {extra[0]}; score it against the data set it was predicted from"
        )
    metric = MeanAveragePrecision(iou_threshold)
    for sample_id in tqdm(truth.ids, desc="evaluate", unit="img", disable=not progress):
        mask = truth.mask(sample_id)
        detections, masks = [], []
        if sample_id in frame.index:
            row = frame.loc[sample_id]
            where = f"submission row {sample_id}"
            size = (int(row["ImageHeight"]), int(row["ImageWidth"]))
            if size != mask.shape:
                raise InputError(
                    f"{where}: ImageHeight x ImageWidth {size[0]}x{size[1]} but the truth mask is "
                    f"{mask.shape[0]}x{mask.shape[1]}; masks must be at full image resolution"
                )
            detections, texts = parse_prediction_string(row["PredictionString"], where=where)
            masks = decode_masks(texts, *size, where=where)
        metric.add_image(detections, masks, mask, truth.cell_classes.get(sample_id, {}))
    result = metric.result()
    result.update(
        iou_threshold=iou_threshold,
        n_images=len(truth.ids),
        n_images_submitted=len(frame),
        submission=str(submission),
        truth_dir=str(truth_dir),
    )
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{name:42s} {'-' if ap is None else f'{ap:.4f}'}"
        for name, ap in result["AP_per_class"].items()
    ]
    score = "n/a (no class has ground truth)" if result["mAP"] is None else f"{result['mAP']:.4f}"
    lines.append(
        f"mAP {score} over {result['classes_scored']} classes, {result['n_images']} images"
    )
    return "\n".join(lines)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("evaluate", sys.argv[1:] if argv is None else argv)
    for key in ("submission", "truth_dir"):
        if not cfg.get(key):
            raise InputError(
                f"{key} is not set; run `python -m hpa.evaluate submission=FILE truth_dir=DIR`"
            )
    out = Path(cfg.metrics) if cfg.metrics else Path(cfg.submission).with_name("metrics.json")
    # Beside the submission, metrics.json may be a training run's own: hpa.outputs refuses it.
    claim = output(
        out,
        "metrics",
        "hpa.evaluate",
        inputs=[cfg.submission, cfg.truth_dir],
        named_by_user=bool(cfg.metrics),
    )
    with claim, graceful_sigterm(f"{out} is unchanged; run the same command again"):
        result = evaluate(
            cfg.submission, cfg.truth_dir, float(cfg.iou_threshold), bool(cfg.progress)
        )
        write_json(out, result)  # atomic: never half a metrics.json
    print(report(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
