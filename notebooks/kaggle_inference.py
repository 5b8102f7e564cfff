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
# A Kaggle code-competition submission: Internet **off**. Attach three inputs (Add Input, or
# `python -m hpa.kaggle push`, which uploads and attaches them):
# 1. the bundle data set (`python -m hpa.kaggle bundle`): hpa's wheel and the wheels Kaggle lacks;
# 2. one data set per exported model (`python -m hpa.kaggle model`, or the train notebook's output);
# 3. the competition data (`hpa-single-cell-image-classification`).
#
# Nothing to type: every parameter left at `auto` is found under `/kaggle/input`, in any of
# Kaggle's layouts (`competitions/<slug>`, `datasets/<owner>/<slug>`, or the older `<slug>`);
# `MODEL_DIRS = ["auto"]` is every distinct model attached (an ensemble). If nothing fits, or two
# inputs do, the cell stops with one line naming what it found and the parameter to set.
# Every step is a command with this kernel's Python, so the notebook runs anywhere with
# `papermill kaggle_inference.ipynb out.ipynb -p NAME VALUE`.
#
# `SEGMENTER = "hpacellseg"` segments with HPA-Cell-Segmentation instead of the weight-free
# watershed: build the bundle with `--with-hpacellseg` (and `--with-wheel` pytorch_zoo's wheel),
# attach a data set holding `dpn_unet_nuclei_v1.pth` and `dpn_unet_cell_3ch_v1.pth` (found as
# `NUCLEI_MODEL`/`CELL_MODEL = "auto"`). Those files are pickled models: loading them runs code
# from them, so choose it only for weight files you trust.

# %% tags=["parameters"]
BUNDLE_DIR = "auto"
MODEL_DIRS = ["auto"]
INPUT_DIR = "auto"
SAMPLE_SUBMISSION = "auto"
SUBMISSION = "/kaggle/working/submission.csv"
SEGMENTER = "watershed"  # or "hpacellseg"
NUCLEI_MODEL = "auto"  # hpacellseg's weight files (only read when SEGMENTER = "hpacellseg")
CELL_MODEL = "auto"
# More hpa.predict options (configs/predict.yaml), each one "key=value" string, e.g.
# ["tta=d4", "tta_scales=[1.0,1.25]", "min_confidence=0.01", "image_model_cells=cam",
#  "ensemble=/kaggle/input/my-ensemble/ensemble.yaml"] (the file hpa.ensemble writes).
PREDICT_OPTIONS = []

# %%
import importlib
import os
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
# hpa is not installed yet, so `BUNDLE_DIR = "auto"` is found by this short search over the
# mounts of every layout (the same as `hpa.kaggle.inputs.find_bundle`, which finds the rest).


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
# Wheels the bundle lists in no-deps.txt (`hpa.kaggle bundle --with-hpacellseg`) install without
# their declared dependencies: hpacellseg's would add opencv-python and fetch pytorch_zoo by URL.
no_deps = Path(BUNDLE_DIR) / "no-deps.txt"
if SEGMENTER == "hpacellseg" and no_deps.is_file():
    wheels = [str(Path(BUNDLE_DIR) / name) for name in no_deps.read_text().split()]
    run("-m", "pip", "install", "--no-index", "--no-deps", *wheels)

# %% [markdown]
# ## 2. Find the models and the competition data
# With hpa installed: `auto` parameters become the paths found (one line each).

# %%
importlib.invalidate_caches()  # hpa was installed after this kernel started
from hpa.kaggle.inputs import notebook_inputs  # noqa: E402

weights = {"NUCLEI_MODEL": NUCLEI_MODEL, "CELL_MODEL": CELL_MODEL}
found = notebook_inputs(
    MODEL_DIRS=MODEL_DIRS,
    SAMPLE_SUBMISSION=SAMPLE_SUBMISSION,
    INPUT_DIR=INPUT_DIR,
    **(weights if SEGMENTER == "hpacellseg" else {}),
)
MODEL_DIRS, SAMPLE_SUBMISSION, INPUT_DIR = (
    found["MODEL_DIRS"],
    found["SAMPLE_SUBMISSION"],
    found["INPUT_DIR"],
)
SEGMENTATION, DOCTOR_SEGMENTER = [f"segmenter={SEGMENTER}"], []
if SEGMENTER == "hpacellseg":  # choosing it is the opt-in to unpickling the attached weights
    SEGMENTATION += [
        f"segmenter.nuclei_model={hydra_value(found['NUCLEI_MODEL'])}",
        f"segmenter.cell_model={hydra_value(found['CELL_MODEL'])}",
        "segmenter.allow_pickle=true",
        "segmenter.device=auto",
    ]
    DOCTOR_SEGMENTER = ["--segmenter", "hpacellseg", "--nuclei-model", found["NUCLEI_MODEL"]]
    DOCTOR_SEGMENTER += ["--cell-model", found["CELL_MODEL"]]

# %% [markdown]
# ## 3. Check the environment
# One line per check. A `FAIL` line names the mismatch (say, a library version Kaggle changed)
# and its fix, and stops the notebook here instead of deep inside prediction.

# %%
output_dir = str(Path(SUBMISSION).resolve().parent)
models = [f"--model={d}" for d in MODEL_DIRS]
run("-m", "hpa.doctor", "--bundle", BUNDLE_DIR, "--output", output_dir, *models, *DOCTOR_SEGMENTER)

# %% [markdown]
# ## 4. Segment, classify, write the submission

# %%
run(
    "-m",
    "hpa.predict",
    f"models=[{','.join(hydra_value(d) for d in MODEL_DIRS)}]",
    f"input_dir={hydra_value(INPUT_DIR)}",
    f"sample_submission={hydra_value(SAMPLE_SUBMISSION)}",
    f"submission={hydra_value(SUBMISSION)}",
    *SEGMENTATION,
    *PREDICT_OPTIONS,
)

# %%
import pandas as pd

submission = pd.read_csv(SUBMISSION, keep_default_na=False)
sample = pd.read_csv(SAMPLE_SUBMISSION)
assert list(submission["ID"]) == list(sample["ID"]), "submission rows differ from the sample's"
with_cells = (submission["PredictionString"] != "").sum()
print(f"{SUBMISSION}: {len(submission)} rows, {with_cells} with cells")
submission.head()
