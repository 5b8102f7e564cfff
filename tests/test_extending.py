"""Extending without editing hpa: a user's own loss, optimizer and segmenter, each a class or
function in a module of theirs (tests/user_parts.py) and a YAML file in a folder of theirs,
found by `hydra.searchpath=[file://DIR]` and chosen as `loss=NAME`, `optimizer=NAME`,
`segmenter=NAME` (CONTRACT.md, docs/extending.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.errors import InputError
from hpa.submission.encoding import decode_binary_mask
from hpa.synthetic import SyntheticConfig, generate_dataset
from predicting import check_format, parse
from procs import child_env
from tiny_train import tiny
from user_parts import quadrants

TESTS = Path(__file__).parent


def user_configs(folder: Path, trace: Path) -> Path:
    """The user's YAML files: loss/traced.yaml, optimizer/momentum.yaml, segmenter/quadrants.yaml."""
    files = {
        "loss/traced.yaml": f"_target_: user_parts.TracedBCE\ntrace: {trace}\nscale: 2.0\n",
        "optimizer/momentum.yaml": (
            "_target_: user_parts.momentum_sgd\n_partial_: true\nlr: 0.05\nmomentum: 0.9\n"
        ),
        "segmenter/quadrants.yaml": f"_target_: user_parts.QuadrantSegmenter\ntrace: {trace}\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    # The user's module is on PYTHONPATH, as their own package would be.
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=child_env(PYTHONPATH=path),
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """One tiny training with the user's loss and optimizer: (run folder, configs, trace)."""
    root = tmp_path_factory.mktemp("extending")
    trace = root / "trace.txt"
    configs = user_configs(root / "my_configs", trace)
    out = root / "run"
    done = run(
        "hpa.train",
        f"hydra.searchpath=[file://{configs}]",
        "loss=traced",
        "optimizer=momentum",
        *tiny(tiny_dataset, out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, configs, trace


def test_training_runs_the_users_loss_and_optimizer(trained):
    out, _, trace = trained
    assert "loss (8, 19)" in trace.read_text().splitlines()  # the user's forward ran
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = ckpt["optimizer_states"]
    group = state["param_groups"][0]
    assert group["momentum"] == 0.9 and "betas" not in group  # SGD's, not AdamW's
    assert any("momentum_buffer" in s for s in state["state"].values())
    assert ckpt["hyper_parameters"]["loss"]["_target_"] == "user_parts.TracedBCE"


def test_predict_cuts_cells_with_the_users_segmenter(trained, tmp_path):
    out, configs, trace = trained
    testset = generate_dataset(
        SyntheticConfig(n_images=2, seed=5, image_size=64, split="test", workers=1),
        tmp_path / "test",
        progress=False,
    )
    before = trace.read_text()
    submission = tmp_path / "sub.csv"
    done = run(
        "hpa.predict",
        f"hydra.searchpath=[file://{configs}]",
        "segmenter=quadrants",
        f"models=[{out / 'model'}]",
        f"input_dir={testset / 'test'}",
        f"sample_submission={testset / 'sample_submission.csv'}",
        f"submission={submission}",
        "progress=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert trace.read_text()[len(before) :].count("segment 64x64\n") == 2
    sub = pd.read_csv(submission, keep_default_na=False, dtype={"ID": str})
    check_format(sub, pd.read_csv(testset / "sample_submission.csv", dtype={"ID": str}))
    expected = quadrants((64, 64))
    for row_id, triples in parse(sub).items():
        masks = {decode_binary_mask(m, 64, 64).tobytes() for _, _, m in triples}
        assert masks == {(expected == i).astype(np.uint8).tobytes() for i in (1, 2, 3, 4)}, row_id


def test_a_users_option_that_its_target_does_not_take_is_one_line(trained, tiny_dataset):
    _, configs, _ = trained
    done = run(
        "hpa.train",
        f"hydra.searchpath=[file://{configs}]",
        "loss=traced",
        "+loss.gamma=2",
        *tiny(tiny_dataset, None),
    )
    assert done.returncode == 2
    assert "loss.gamma is not an option of user_parts.TracedBCE" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_augmentation_step_of_the_users_runs_beside_albumentations_names():
    from hpa.data.transforms import build_transform

    transform = build_transform(
        [
            {"name": "HorizontalFlip", "p": 1.0},
            {"_target_": "user_parts.DarkGreen", "factor": 0.5, "p": 1.0},
        ]
    )
    image = np.zeros((8, 8, 4), np.uint8)
    image[:, :4, 1] = 200  # green on the left half
    out = transform(image=image)["image"]
    assert (out[:, 4:, 1] == 100).all() and (out[:, :4, 1] == 0).all()  # flipped, then darkened
    with pytest.raises(InputError, match="data.augment step.factr is not an option"):
        build_transform([{"_target_": "user_parts.DarkGreen", "factr": 0.5}])
