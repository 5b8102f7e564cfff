"""The Kaggle-shaped environment test (make test-kaggle): what a Kaggle notebook would do.

A Python 3.12 env holding exactly src/hpa/kaggle/kaggle_image.txt (built once by
scripts/kaggle_env.py, then reused from the cache) gets the bundle installed with no index and
no pip configuration, so anything missing from the bundle fails the install. Then the doctor
runs there, and the Kaggle notebooks are executed there with papermill: kaggle_train on a tiny
synthetic set, kaggle_inference with the model it exported, to a checked submission.

The first run downloads about 3 GB (torch 2.10 and its CUDA wheels) and takes several minutes;
the bundle's dependencies come from the package index on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpa.labels import NUM_CLASSES
from hpa.submission.encoding import decode_binary_mask

pytestmark = [pytest.mark.kaggle_env, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "hpa-kaggle"


def kaggle_vars(python: Path) -> dict[str, str]:
    """A notebook's environment: no pip configuration or index (so offline), nothing of ours."""
    skip = ("PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PYTHONNOUSERSITE="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        MPLBACKEND="Agg",
        PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run(python: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(python), *args], cwd=cwd, env=kaggle_vars(python), capture_output=True, text=True
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"python {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def new_env(dest: Path) -> Path:
    """A throwaway env over the cached Kaggle image (built on first use: several minutes)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "kaggle_env.py"), "overlay", str(dest)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(done.stdout.strip().splitlines()[-1])


def own_dists(python: Path) -> set[str]:
    """Distributions installed into the throwaway env itself, not seen through the Kaggle image."""
    site = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=python.parent
    )
    return {p.name.split("-")[0].lower() for p in Path(site.stdout.strip()).glob("*.dist-info")}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kaggle")


@pytest.fixture(scope="module")
def bundle(work) -> Path:
    out = work / "bundle"
    done = subprocess.run(
        [sys.executable, "-m", "hpa.kaggle", "bundle", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install --no-index --find-links /kaggle/input/hpa-bundle hpa" in done.stdout
    return out


@pytest.fixture(scope="module")
def kaggle(work, bundle) -> Path:
    """The Kaggle env with the bundle installed offline and a kernel registered for papermill."""
    python = new_env(work / "env")
    run(python, "-m", "pip", "install", "--no-index", "--find-links", str(bundle), "hpa", cwd=work)
    prefix = str(python.parents[1])
    run(python, *["-m", "ipykernel", "install", "--prefix", prefix, "--name", KERNEL], cwd=work)
    return python


def papermill(python: Path, notebook: str, out: Path, params: dict, cwd: Path) -> None:
    params_file = out.with_suffix(".yaml")
    params_file.write_text(yaml.safe_dump(params))
    source = str(ROOT / "notebooks" / notebook)
    args = ["-k", KERNEL, "-f", str(params_file), "--cwd", str(cwd), "--log-output"]
    run(python, "-m", "papermill", source, str(out), *args, cwd=cwd)


def test_offline_install_takes_only_what_kaggle_lacks_from_the_bundle(kaggle, bundle):
    bundled = {w.name.split("-")[0].lower() for w in bundle.glob("*.whl")}
    installed = own_dists(kaggle) - {"pip"}
    assert "hpa" in installed
    # Everything installed came from the bundle; nothing of Kaggle's image was replaced.
    assert installed <= bundled
    assert {"hydra_core", "iterative_stratification"} <= installed


def test_doctor_passes_in_the_kaggle_env(kaggle, work):
    done = run(kaggle, "-m", "hpa.doctor", "--output", str(work), cwd=work, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    assert "OK   torch 2.10" in done.stdout


def test_doctor_names_what_a_bare_kaggle_env_lacks(work, bundle):
    python = new_env(work / "bare")
    pip_install = ["-m", "pip", "install", "--no-index", "--find-links", str(bundle)]
    run(python, *pip_install, "--no-deps", "hpa", cwd=work)  # hpa alone, as if pip were misused
    doctor = ["-m", "hpa.doctor", "--bundle", str(bundle), "--output", str(work)]
    done = run(python, *doctor, cwd=work, check=False)
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL hydra-core is not installed") for line in failed), done.stdout
    assert all(f"--find-links {bundle}" in line for line in failed)


@pytest.fixture(scope="module")
def model_dataset(kaggle, work) -> Path:
    """kaggle_train.ipynb, run in the Kaggle env on a tiny synthetic set."""
    synthetic = ["-m", "hpa.synthetic", "n_images=60", "image_size=64", "seed=0"]
    run(kaggle, *synthetic, f"out={work / 'data'}", cwd=work)
    out = work / "hpa-model"
    params = {
        "BUNDLE_DIR": str(work / "bundle"),
        "DATA_DIR": str(work / "data"),
        "OUTPUT_DIR": str(work / "run"),
        "MODEL_DATASET_DIR": str(out),
        "OVERRIDES": [
            "trainer=cpu",
            "model.backbone=resnet18",
            "data.image_size=64",
            "data.batch_size=16",
            "data.num_workers=0",
            "trainer.max_epochs=1",
        ],
    }
    papermill(kaggle, "kaggle_train.ipynb", work / "train_out.ipynb", params, cwd=work)
    return out


def test_train_notebook_exports_a_model_dataset(model_dataset):
    assert sorted(p.name for p in model_dataset.iterdir()) == [
        "config.json",
        "dataset-metadata.json",
        "model.safetensors",
    ]
    config = json.loads((model_dataset / "config.json").read_text())
    assert config["versions"]["torch"].startswith("2.10")


def test_inference_notebook_writes_a_valid_submission(kaggle, model_dataset, work):
    synthetic = ["-m", "hpa.synthetic", "n_images=3", "image_size=256", "split=test", "seed=5"]
    run(kaggle, *synthetic, f"out={work / 'test'}", cwd=work)
    submission = work / "out" / "submission.csv"
    submission.parent.mkdir()
    params = {
        "BUNDLE_DIR": str(work / "bundle"),
        "MODEL_DIRS": [str(model_dataset)],
        "INPUT_DIR": str(work / "test" / "test"),
        "SAMPLE_SUBMISSION": str(work / "test" / "sample_submission.csv"),
        "SUBMISSION": str(submission),
    }
    papermill(kaggle, "kaggle_inference.ipynb", work / "inference_out.ipynb", params, cwd=work)

    sample = pd.read_csv(params["SAMPLE_SUBMISSION"])
    result = pd.read_csv(submission, keep_default_na=False)
    assert list(result.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert list(result["ID"]) == list(sample["ID"])
    n_predictions = 0
    for row in result.itertuples():
        tokens = row.PredictionString.split()
        assert len(tokens) % 3 == 0
        for cls, confidence, mask in zip(tokens[::3], tokens[1::3], tokens[2::3], strict=True):
            assert 0 <= int(cls) < NUM_CLASSES and 0.0 <= float(confidence) <= 1.0
            decoded = decode_binary_mask(mask, row.ImageHeight, row.ImageWidth)
            assert decoded.shape == (row.ImageHeight, row.ImageWidth) and decoded.any()
            n_predictions += 1
    assert n_predictions > 0
