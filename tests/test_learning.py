"""The models learn: true labels beat shuffled ones, and trained image and cell models beat an
untrained one end to end (train, predict a fresh test set, score it). One module-scoped set of
trainings (tests/learning.py) serves both tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpa.evaluate import evaluate
from hpa.submission.writer import read_sample_submission
from hpa.synthetic import SyntheticConfig, generate_dataset
from learning import MIN_DIFF, MIN_RATIO, fit, learning_pair
from predicting import check_format, run_predict
from untrained_model import export_untrained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    """Seed 0 of the learning check: an image model trained on the true labels and one on the
    labels shuffled across images, then a cell-level model on the same set (32 px crops)."""
    tmp = tmp_path_factory.mktemp("learned")
    real, fake = learning_pair(tmp, seed=0)
    fit(tmp / "data", tmp / "cell", 0, "data=cells", image_size=32)
    return {
        "real": real,
        "fake": fake,
        "image_model": tmp / "real" / "model",
        "cell_model": tmp / "cell" / "model",
    }


def test_model_learns_far_better_than_shuffled_labels(learned):
    """Same pipeline, same data: true labels must beat labels shuffled across images, by a bound
    measured over seeds (tests/learning.py has the runs; scripts/learning_margin.py repeats them)."""
    real, fake = learned["real"], learned["fake"]
    assert real > fake + MIN_DIFF and real > MIN_RATIO * fake, (real, fake)


def test_trained_models_beat_untrained_ones_end_to_end(learned, tmp_path):
    """Predict a fresh synthetic test set with the trained image and cell models, score it."""
    image_model, cell_model = learned["image_model"], learned["cell_model"]
    assert '"level": "cell"' in (cell_model / "config.json").read_text()
    cfg = SyntheticConfig(
        n_images=20, seed=99, image_size=64, cells_per_image=(1, 3), split="test", workers=1
    )
    truth = generate_dataset(cfg, tmp_path / "test", progress=False)
    sample = read_sample_submission(truth / "sample_submission.csv")

    def score(models: list[Path], name: str) -> float:
        out = tmp_path / f"{name}.csv"
        check_format(run_predict(models, truth, out, "segmenter=truth"), sample)
        return evaluate(out, truth, progress=False)["mAP"]

    untrained = score([export_untrained(tmp_path / "untrained", "image", 64)], "untrained")
    scores = {
        "image": score([image_model], "image"),
        "cell": score([cell_model], "cell"),
        "both": score([image_model, cell_model], "both"),
    }
    print(f"untrained {untrained:.4f}, trained {scores}")
    for name, value in scores.items():
        assert value > untrained + 0.1, (name, value, untrained)
