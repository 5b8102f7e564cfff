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
# Attach the bundle dataset (`python -m hpa.kaggle bundle`) and the competition data; turn the
# GPU accelerator on. Internet can stay off: hpa installs from the bundle and trains from the
# configs packaged inside it (`hpa/configs`, the same Hydra tree as `configs/` in the repo).
# The exported model lands in `MODEL_DATASET_DIR`: make it a dataset ("New Dataset" from this
# notebook's output) and attach it to the inference notebook.

# %% tags=["parameters"]
BUNDLE_DIR = "/kaggle/input/hpa-bundle"
DATA_DIR = "/kaggle/input/hpa-single-cell-image-classification"
OUTPUT_DIR = "/kaggle/working/run"
MODEL_DATASET_DIR = "/kaggle/working/hpa-model"
# Any `python -m hpa.train` overrides. 16-mixed: Kaggle's P100/T4 have no bf16 (the doctor says).
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
import json
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

# %%
run("-m", "pip", "install", "--no-index", "--find-links", BUNDLE_DIR, "hpa")
run("-m", "hpa.doctor", "--bundle", BUNDLE_DIR, "--output", str(Path(OUTPUT_DIR).parent))

# %% [markdown]
# ## 2. Train
# `data=default` reads the competition layout (`train.csv`, `train/{ID}_{channel}.png`) from
# `data.root`. Interrupted? Rerun with `ckpt_path=<OUTPUT_DIR>/checkpoints/last.ckpt` added.

# %%
run(
    "-m",
    "hpa.train",
    "data=default",
    f"data.root={DATA_DIR}",
    f"paths.output_dir={OUTPUT_DIR}",
    *OVERRIDES,
)

# %%
metrics = json.loads((Path(OUTPUT_DIR) / "metrics.json").read_text())
print(f"best epoch {metrics['epoch']}: val/mAP {metrics['val/mAP']:.4f}")

# %% [markdown]
# ## 3. The exported model as a dataset folder (config.json, model.safetensors, metadata)

# %%
run("-m", "hpa.kaggle", "model", "--model", f"{OUTPUT_DIR}/model", "--out", MODEL_DATASET_DIR)
