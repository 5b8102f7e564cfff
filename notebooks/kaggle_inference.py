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
# # HPA single-cell classification: offline inference
#
# A Kaggle code-competition submission: Internet **off**. Attach three inputs:
# 1. the bundle dataset (`python -m hpa.kaggle bundle`): hpa's wheel and the wheels Kaggle lacks;
# 2. one dataset per exported model (`python -m hpa.kaggle model`);
# 3. the competition data (`hpa-single-cell-image-classification`).
#
# Every step is a command with this kernel's Python, so the notebook runs anywhere with
# `papermill kaggle_inference.ipynb out.ipynb -p NAME VALUE`.

# %% tags=["parameters"]
BUNDLE_DIR = "/kaggle/input/hpa-bundle"
MODEL_DIRS = ["/kaggle/input/hpa-model"]
INPUT_DIR = "/kaggle/input/hpa-single-cell-image-classification/test"
SAMPLE_SUBMISSION = "/kaggle/input/hpa-single-cell-image-classification/sample_submission.csv"
SUBMISSION = "/kaggle/working/submission.csv"

# %%
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


def hydra_value(text: str) -> str:
    """Quote a path for a Hydra override, so spaces or `=` in it survive."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# %% [markdown]
# ## 1. Install hpa from the bundle, with no network
# `--no-index`: pip looks in the bundle folder only, so a missing wheel fails here, by name.

# %%
run("-m", "pip", "install", "--no-index", "--find-links", BUNDLE_DIR, "hpa")

# %% [markdown]
# ## 2. Check the environment
# One line per check. A `FAIL` line names the mismatch (say, a library version Kaggle changed)
# and its fix, and stops the notebook here instead of deep inside prediction.

# %%
output_dir = str(Path(SUBMISSION).resolve().parent)
models = [f"--model={d}" for d in MODEL_DIRS]
run("-m", "hpa.doctor", "--bundle", BUNDLE_DIR, "--output", output_dir, *models)

# %% [markdown]
# ## 3. Segment, classify, write the submission

# %%
run(
    "-m",
    "hpa.predict",
    f"models=[{','.join(hydra_value(d) for d in MODEL_DIRS)}]",
    f"input_dir={hydra_value(INPUT_DIR)}",
    f"sample_submission={hydra_value(SAMPLE_SUBMISSION)}",
    f"submission={hydra_value(SUBMISSION)}",
)

# %%
import pandas as pd

submission = pd.read_csv(SUBMISSION, keep_default_na=False)
sample = pd.read_csv(SAMPLE_SUBMISSION)
assert list(submission["ID"]) == list(sample["ID"]), "submission rows differ from the sample's"
with_cells = (submission["PredictionString"] != "").sum()
print(f"{SUBMISSION}: {len(submission)} rows, {with_cells} with cells")
submission.head()
