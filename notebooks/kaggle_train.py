# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # HPA single-cell classification: train on a Kaggle GPU
#
# Attach the bundle data set (`python -m hpa.kaggle bundle`) and the competition data; set the
# accelerator to GPU T4 (Kaggle's torch cannot run on a P100). Internet can stay off: hpa installs
# from the bundle and trains from the configs packaged inside it (`hpa/configs`, the same Hydra
# tree as `configs/` in the repo). `BUNDLE_DIR` and `DATA_DIR` left at `auto` are found under
# `/kaggle/input` in any of Kaggle's layouts.
#
# /kaggle/input is read-only, so the decoded cache goes to `CACHE_DIR` (`auto`:
# /kaggle/working/cache, beside `OUTPUT_DIR`), checked first against the free space there, and
# deleted at the end (`KEEP_CACHE = True` keeps it) so that the notebook's output stays small.
# The exported model lands in `MODEL_DATASET_DIR` (/kaggle/working/hpa-model): attach this
# notebook's output to the inference notebook (Add Input > your notebook, or "New Dataset" from
# the output); its `MODEL_DIRS = ["auto"]` finds the model there.

# %% tags=["parameters"]
BUNDLE_DIR = "auto"
DATA_DIR = "auto"
OUTPUT_DIR = "/kaggle/working/run"
MODEL_DATASET_DIR = "/kaggle/working/hpa-model"
CACHE_DIR = "auto"
KEEP_CACHE = False
# Any `python -m hpa.train` overrides. 16-mixed: Kaggle's T4 has no bf16 (the doctor says).
OVERRIDES = [
    "trainer=gpu",
    "trainer.precision=16-mixed",
    "model.backbone=efficientnet_b0",
    "data.image_size=512",
    "data.batch_size=32",
    "data.num_workers=4",
    "trainer.max_epochs=12",
]

# %%
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> None:
    """`python ARGS` with this kernel's interpreter; output shown as it comes; stop on failure."""
    print("$ python", " ".join(args), flush=True)
    with subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: python {' '.join(args)}")


# %% [markdown]
# ## 1. Install hpa from the bundle and check the environment
# hpa is not installed yet, so `BUNDLE_DIR = "auto"` is found by this short search over the
# mounts of every layout (the same as `hpa.kaggle.inputs.find_bundle`).


# %%
def find_bundle(value: str) -> str:
    """BUNDLE_DIR, or for `auto` the one attached folder holding hpa-*.whl."""
    if value != "auto":
        return value
    root = Path(os.environ.get("HPA_KAGGLE_INPUT") or "/kaggle/input")
    mounts = ("*", "competitions/*", "datasets/*/*", "notebooks/*/*")
    found = sorted({str(w.parent) for m in mounts for w in root.glob(f"{m}/hpa-*.whl")})
    if len(found) != 1:
        raise SystemExit(
            f"error: BUNDLE_DIR=auto found {len(found)} folders with hpa-*.whl under {root} "
            f"({', '.join(found) or 'attach the bundle data set'}); set BUNDLE_DIR"
        )
    print(f"BUNDLE_DIR = {found[0]!r}  (auto)")
    return found[0]


BUNDLE_DIR = find_bundle(BUNDLE_DIR)
try:
    run("-m", "pip", "install", "--no-index", "--find-links", BUNDLE_DIR, "hpa")
except RuntimeError:
    # pip could not resolve the bundle against this image: the bundle's own doctor (standard
    # library only) names each package, the version found and the range hpa needs.
    doctor = Path(BUNDLE_DIR) / "hpa_doctor.py"
    if doctor.is_file():
        subprocess.run([sys.executable, str(doctor), "--bundle", BUNDLE_DIR], check=False)
    raise
run("-m", "hpa.doctor", "--bundle", BUNDLE_DIR, "--output", str(Path(OUTPUT_DIR).parent))

# %% [markdown]
# ## 2. Find the data; check that its cache fits, and build it
# `data=default` reads the competition layout (`train.csv`, `train/{ID}_{channel}.png`) from
# `DATA_DIR`. The cache needs n_images x size x size x 4 bytes (about 23 GB for 21,806 images at
# 512 px): more than is free stops here, with the image size that would fit.

# %%
importlib.invalidate_caches()  # hpa was installed after this kernel started
from hpa.kaggle.inputs import notebook_inputs  # noqa: E402
from hpa.kaggle.train_cache import notebook_cache_plan  # noqa: E402

DATA_DIR = notebook_inputs(DATA_DIR=DATA_DIR)["DATA_DIR"]
if CACHE_DIR == "auto":
    CACHE_DIR = str(Path(OUTPUT_DIR).parent / "cache")
DATA = ["data=default", f"data.root={DATA_DIR}", f"data.cache_dir={CACHE_DIR}", *OVERRIDES]
cache = notebook_cache_plan(DATA)
if cache.level == "image":  # cell crops are cut by training itself, into the same CACHE_DIR
    run("-m", "hpa.prepare", *DATA)

# %% [markdown]
# ## 3. Train
# Interrupted? Rerun with `ckpt_path=<OUTPUT_DIR>/checkpoints/last.ckpt` added to OVERRIDES.

# %%
run("-m", "hpa.train", *DATA, f"paths.output_dir={OUTPUT_DIR}")

# %%
metrics = json.loads((Path(OUTPUT_DIR) / "metrics.json").read_text())
print(f"best epoch {metrics['epoch']}: val/mAP {metrics['val/mAP']:.4f}")

# %% [markdown]
# ## 4. The exported model as a data set folder (config.json, model.safetensors, metadata)
# Attached to the inference notebook, this notebook's output holds exactly one exported model
# where `auto` looks (`hpa-model/`); `run/model/` is one level deeper, so it is not counted twice.

# %%
run("-m", "hpa.kaggle", "model", "--model", f"{OUTPUT_DIR}/model", "--out", MODEL_DATASET_DIR)
if not KEEP_CACHE:
    shutil.rmtree(cache.folder, ignore_errors=True)
    print(f"removed the cache {cache.folder} (KEEP_CACHE = True keeps it)")
