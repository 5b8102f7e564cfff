"""The competition metric on hand-built cases with known answers, and `python -m hpa.evaluate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.errors import InputError
from hpa.evaluate import evaluate, main
from hpa.labels import CLASS_NAMES
from hpa.submission import encode_binary_mask
from hpa.submission.metric import Detection, MeanAveragePrecision, average_precision
from hpa.synthetic import SyntheticConfig, generate_dataset
from procs import child_env

# ---- hand-built cases ------------------------------------------------------------------------

# A 20 x 20 image with three 10 x 10 cells: 1 (Nucleoplasm), 2 (Nucleoplasm + Nuclear bodies),
# 3 (Negative).
TRUTH = np.zeros((20, 20), np.uint16)
TRUTH[:10, :10], TRUTH[:10, 10:], TRUTH[10:, :10] = 1, 2, 3
CLASSES = {1: [0], 2: [0, 5], 3: [18]}


def score(detections: list[tuple[int, float, np.ndarray]], truth=TRUTH, classes=CLASSES) -> dict:
    """mAP of one image's (class, confidence, mask) detections."""
    metric = MeanAveragePrecision()
    masks = [mask for _, _, mask in detections]
    dets = [Detection(c, conf, i) for i, (c, conf, _) in enumerate(detections)]
    metric.add_image(dets, masks, truth, classes)
    return metric.result()


def cell(k: int) -> np.ndarray:
    return np.equal(TRUTH, k)


def test_perfect_predictions_score_one():
    result = score([(0, 0.9, cell(1)), (0, 0.8, cell(2)), (5, 0.7, cell(2)), (18, 0.6, cell(3))])
    assert result["mAP"] == 1.0
    assert {k for k, v in result["AP_per_class"].items() if v is not None} == {
        "Nucleoplasm",
        "Nuclear bodies",
        "Negative",
    }
    assert result["counts"]["Nucleoplasm"] == {"truth": 2, "detections": 2, "true_positives": 2}


def test_all_wrong_scores_zero():
    empty = np.zeros_like(TRUTH, bool)
    empty[10:, 10:] = True  # a region with no cell
    result = score([(5, 0.9, cell(1)), (18, 0.9, cell(2)), (0, 0.9, cell(3)), (0, 0.9, empty)])
    assert result["mAP"] == 0.0
    assert all(v in (0.0, None) for v in result["AP_per_class"].values())


def test_duplicate_detection_of_a_cell_is_a_false_positive():
    cells = {1: [0], 2: [0]}
    # Ranked: cell 1 (TP), cell 1 again (FP), cell 2 (TP): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    result = score([(0, 0.9, cell(1)), (0, 0.8, cell(1)), (0, 0.7, cell(2))], classes=cells)
    assert result["AP_per_class"]["Nucleoplasm"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert result["counts"]["Nucleoplasm"]["true_positives"] == 2


def test_iou_just_under_the_threshold_is_a_miss():
    def first_pixels(n: int) -> np.ndarray:
        mask = np.zeros(TRUTH.size, bool)
        mask[np.flatnonzero(cell(1).ravel())[:n]] = True
        return mask.reshape(TRUTH.shape)

    cells = {1: [0]}
    assert score([(0, 0.9, first_pixels(59))], classes=cells)["mAP"] == 0.0  # IoU 0.59
    assert score([(0, 0.9, first_pixels(60))], classes=cells)["mAP"] == 1.0  # IoU 0.60


def test_class_without_ground_truth_is_left_out_of_the_mean():
    result = score(
        [
            (0, 0.9, cell(1)),
            (0, 0.8, cell(2)),
            (5, 0.7, cell(2)),
            (18, 0.6, cell(3)),
            (7, 0.99, cell(1)),
        ]
    )
    assert result["AP_per_class"]["Golgi apparatus"] is None
    assert result["counts"]["Golgi apparatus"] == {"truth": 0, "detections": 1, "true_positives": 0}
    assert result["mAP"] == 1.0 and result["classes_scored"] == 3


def test_greedy_matching_goes_by_confidence_not_iou():
    """The confident, looser mask claims the cell; the tighter one that follows is a duplicate."""
    loose = cell(1) | (TRUTH == 2) & (np.arange(20)[None, :] < 13)  # IoU 100/130
    cells = {1: [0]}
    result = score([(0, 0.9, loose), (0, 0.5, cell(1))], classes=cells)
    assert result["counts"]["Nucleoplasm"]["true_positives"] == 1
    assert result["mAP"] == 1.0  # the false positive comes after full recall
    result = score([(0, 0.5, loose), (0, 0.9, TRUTH == 2)], classes=cells)  # a miss ranked first
    assert result["AP_per_class"]["Nucleoplasm"] == pytest.approx(0.5)


def test_average_precision_follows_open_images():
    # Ranked TP, FP, TP, FP with 3 truths: recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2.
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool), 3)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert average_precision(np.array([]), np.array([], bool), 2) == 0.0
    assert average_precision(np.array([0.5]), np.array([False]), 0) is None


# ---- python -m hpa.evaluate on a synthetic set -----------------------------------------------


@pytest.fixture(scope="module")
def truth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("truth")
    cfg = SyntheticConfig(n_images=4, seed=2, image_size=64, workers=1, skew=0.0)
    return generate_dataset(cfg, out, progress=False)


def submission_from_truth(truth_dir: Path, path: Path, relabel=lambda c: c, skip: int = 0) -> Path:
    """Every truth cell, once per class (after `relabel`), confidence 1: a submission."""
    import cv2

    cells = pd.read_csv(truth_dir / "cells.csv", dtype={"ID": str, "Label": str})
    rows = []
    for sample_id in sorted(cells.ID.unique())[skip:]:
        mask = cv2.imread(str(truth_dir / "masks" / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)
        triples = []
        for row in cells[cells["ID"].eq(sample_id)].itertuples():
            text = encode_binary_mask(mask == row.cell_id)
            triples += [f"{relabel(int(c))} 1.0 {text}" for c in row.Label.split("|")]
        rows.append((sample_id, mask.shape[1], mask.shape[0], " ".join(triples)))
    frame = pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])
    frame.to_csv(path, index=False)
    return path


def test_submission_built_from_the_truth_scores_one(truth_dir, tmp_path, capsys):
    submission = submission_from_truth(truth_dir, tmp_path / "submission.csv")
    main([f"submission={submission}", f"truth_dir={truth_dir}", "progress=false"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mAP"] == 1.0
    assert set(metrics["AP_per_class"]) == set(CLASS_NAMES)
    assert all(v in (1.0, None) for v in metrics["AP_per_class"].values())
    assert metrics["counts"]["Negative"].keys() == {"truth", "detections", "true_positives"}
    assert "mAP 1.0000" in capsys.readouterr().out


def test_shuffled_classes_score_low(truth_dir, tmp_path):
    submission = submission_from_truth(
        truth_dir, tmp_path / "shuffled.csv", relabel=lambda c: (c + 7) % 19
    )
    assert evaluate(submission, truth_dir, progress=False)["mAP"] < 0.5


def test_truth_images_missing_from_the_submission_count_as_missed(truth_dir, tmp_path):
    submission = submission_from_truth(truth_dir, tmp_path / "partial.csv", skip=1)
    result = evaluate(submission, truth_dir, progress=False)
    assert 0.0 < result["mAP"] < 1.0
    assert sum(c["true_positives"] for c in result["counts"].values()) < sum(
        c["truth"] for c in result["counts"].values()
    )


def test_submission_ids_without_truth_are_an_input_error(truth_dir, tmp_path):
    submission = submission_from_truth(truth_dir, tmp_path / "extra.csv")
    frame = pd.read_csv(submission)
    frame.loc[len(frame)] = ["not-a-truth-id", 64, 64, ""]
    frame.to_csv(submission, index=False)
    with pytest.raises(InputError, match="not-a-truth-id"):
        evaluate(submission, truth_dir, progress=False)


@pytest.mark.parametrize(
    "prediction, message",
    [
        ("0 1.0", "not triples"),
        ("19 0.5 eNoLCAgIMAEABJkBdQ==", "class '19'"),
        ("0 high eNoL", "confidence"),
        ("0 1.5 eNoLCAgIMAEABJkBdQ==", "outside"),
        ("0 0.5 ###", "base64"),
    ],
)
def test_malformed_prediction_strings_are_input_errors(truth_dir, tmp_path, prediction, message):
    submission = submission_from_truth(truth_dir, tmp_path / "bad.csv")
    frame = pd.read_csv(submission)
    frame.loc[0, "PredictionString"] = prediction
    frame.to_csv(submission, index=False)
    with pytest.raises(InputError, match=message):
        evaluate(submission, truth_dir, progress=False)


def test_wrong_image_size_is_an_input_error(truth_dir, tmp_path):
    submission = submission_from_truth(truth_dir, tmp_path / "size.csv")
    frame = pd.read_csv(submission)
    frame.loc[0, "ImageWidth"] = 2048
    frame.to_csv(submission, index=False)
    with pytest.raises(InputError, match="full image resolution"):
        evaluate(submission, truth_dir, progress=False)


def test_cli_bad_input_exits_2_without_traceback(truth_dir, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpa.evaluate",
            f"submission={tmp_path / 'none.csv'}",
            f"truth_dir={truth_dir}",
        ],
        capture_output=True,
        text=True,
        env=child_env(threads=None),
    )
    assert run.returncode == 2
    assert "none.csv does not exist" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("side", [32, 100])
def test_mask_encoded_at_another_size_is_an_input_error(truth_dir, tmp_path, side):
    """The mask text stores run lengths only: one made for a 32x32 (or 100x100) image decoded as
    the row's 64x64 was garbage (or a pycocotools traceback). Now it names the row and sizes."""
    submission = submission_from_truth(truth_dir, tmp_path / "masksize.csv")
    frame = pd.read_csv(submission, dtype={"ID": str})
    small = np.zeros((side, side), bool)
    small[4:12, 4:12] = True
    frame.loc[0, "PredictionString"] = f"0 0.9 {encode_binary_mask(small)}"
    frame.to_csv(submission, index=False)
    sample_id = frame.loc[0, "ID"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpa.evaluate",
            f"submission={submission}",
            f"truth_dir={truth_dir}",
            "progress=false",
        ],
        capture_output=True,
        text=True,
        env=child_env(threads=None),
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and sample_id in line
    assert f"{side}x{side}" in line and "64x64" in line
    assert not (tmp_path / "metrics.json").exists()
