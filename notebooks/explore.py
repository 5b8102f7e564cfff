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
# # HPA single-cell classification: look at the data before training
#
# Label statistics, four-channel composites, cells found by hpa's segmenter drawn over the
# images, and, when a model is attached, what it predicts for each cell (drawn by the same code
# as `python -m hpa.show`). On Kaggle attach the competition data and the bundle data set (and
# a model data set to see predictions): every parameter left at `auto` is found under
# `/kaggle/input`, as in the other notebooks. Locally point `DATA_DIR` at any HPA-format folder
# (`python -m hpa.synthetic out=DIR` makes one) and `MODEL_DIR` at a run's `model/` folder.

# %% tags=["parameters"]
BUNDLE_DIR = "auto"
DATA_DIR = "auto"
MODEL_DIR = "auto"  # an exported model; auto: the one attached, if any; None: no predictions
N_IMAGES = 4
DISPLAY_SIZE = 512
SEED = 0

# %%
import os
import subprocess
import sys
from pathlib import Path

try:
    import hpa  # noqa: F401
except ImportError:  # a fresh Kaggle session: install from the attached bundle, offline
    if BUNDLE_DIR == "auto":  # hpa's own search (hpa.kaggle.inputs) is not importable yet
        root = Path(os.environ.get("HPA_KAGGLE_INPUT") or "/kaggle/input")
        mounts = ("*", "competitions/*", "datasets/*/*", "notebooks/*/*")
        found = sorted({str(w.parent) for m in mounts for w in root.glob(f"{m}/hpa-*.whl")})
        if len(found) != 1:
            raise SystemExit(
                f"error: BUNDLE_DIR=auto found {len(found)} folders with hpa-*.whl under {root}; "
                "attach the bundle data set or set BUNDLE_DIR"
            )
        BUNDLE_DIR = found[0]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-index", "--find-links", BUNDLE_DIR, "hpa"], check=True)

# %%
import importlib

importlib.invalidate_caches()  # hpa may have been installed after this kernel started
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

from hpa.data.cells import read_instance_mask
from hpa.data.images import read_sample
from hpa.data.records import read_records
from hpa.errors import InputError
from hpa.kaggle.inputs import find_models, is_auto, notebook_inputs
from hpa.labels import CLASS_NAMES, NUM_CLASSES
from hpa.segment.watershed import WatershedSegmenter
from hpa.viz.draw import composite

DATA_DIR = notebook_inputs(DATA_DIR=DATA_DIR)["DATA_DIR"]
if is_auto(MODEL_DIR):  # optional: without a model the predictions section is skipped
    try:
        MODEL_DIR = str(find_models()[0])
        print(f"MODEL_DIR = {MODEL_DIR!r}  (auto)")
    except InputError:
        MODEL_DIR = None
        print("MODEL_DIR = None  (auto: no exported model attached; predictions are skipped)")
data = Path(DATA_DIR)
records = read_records(data / "train.csv")
print(f"{len(records)} images in {data / 'train.csv'}")

# %% [markdown]
# ## Labels
# The classes are very unbalanced (Mitotic spindle and Negative are rare), most images carry one
# or two labels, and some labels almost always come together.

# %%
multi_hot = np.zeros((len(records), NUM_CLASSES), dtype=int)
for row, ids in enumerate(records["labels"]):
    multi_hot[row, ids] = 1
per_class = pd.Series(multi_hot.sum(axis=0), index=CLASS_NAMES)
per_image = pd.Series(multi_hot.sum(axis=1)).value_counts().sort_index()

fig, (ax_class, ax_count) = plt.subplots(
    1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1]}
)
per_class.plot.barh(ax=ax_class, color="tab:green")
ax_class.invert_yaxis()
ax_class.set_xlabel("images")
ax_class.set_title("images per class")
per_image.plot.bar(ax=ax_count, color="tab:blue")
ax_count.set_xlabel("labels per image")
ax_count.set_title("labels per image")
fig.tight_layout()
per_class.to_frame("images").assign(share=lambda f: (f["images"] / len(records)).round(3))

# %%
together = multi_hot.T @ multi_hot
with np.errstate(invalid="ignore", divide="ignore"):
    # Row c: of the images with class c, the share that also have class k.
    share = together / np.diag(together)[:, None]
fig, ax = plt.subplots(figsize=(9, 8))
image = ax.imshow(np.nan_to_num(share), cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(NUM_CLASSES), [str(i) for i in range(NUM_CLASSES)])
ax.set_yticks(range(NUM_CLASSES), [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)])
ax.set_title("P(column class | row class)")
fig.colorbar(image, ax=ax, shrink=0.8)
fig.tight_layout()

# %% [markdown]
# ## Four channels
# red: microtubules, green: the protein (what the labels describe), blue: nucleus,
# yellow: endoplasmic reticulum. The composite adds yellow to red and green.

# %%
rng = np.random.default_rng(SEED)
samples = records.iloc[rng.choice(len(records), size=min(N_IMAGES, len(records)), replace=False)]
images = {sid: read_sample(data / "train", sid, DISPLAY_SIZE) for sid in samples["ID"]}


channels = [("red", "Reds_r"), ("green", "Greens_r"), ("blue", "Blues_r"), ("yellow", "YlOrBr_r")]
fig, axes = plt.subplots(len(samples), 5, figsize=(20, 4 * len(samples)), squeeze=False)
for row, (sid, labels) in enumerate(zip(samples["ID"], samples["labels"], strict=True)):
    image = images[sid]
    axes[row, 0].imshow(composite(image))
    axes[row, 0].set_title(f"{sid[:18]}\n" + ", ".join(CLASS_NAMES[i] for i in labels), fontsize=9)
    for col, (name, cmap) in enumerate(channels, start=1):
        axes[row, col].imshow(image[..., col - 1], cmap=cmap.removesuffix("_r"))
        axes[row, col].set_title(name)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## Cells
# What `hpa.predict` classifies: cells found by the default segmenter (seeded watershed from the
# nuclei, no weights). Where the folder has ground-truth masks (`masks/{ID}.png`, as synthetic
# sets do) they are drawn beside it.

# %%
segmenter = WatershedSegmenter()
truth_dir = data / "masks"
fig, axes = plt.subplots(len(samples), 2, figsize=(12, 6 * len(samples)), squeeze=False)
for row, sid in enumerate(samples["ID"]):
    image = images[sid]
    found = segmenter.segment(image).cells
    truth_path = truth_dir / f"{sid}.png"
    truth = read_instance_mask(truth_path, image.shape[:2]) if truth_path.exists() else None
    for ax, (title, cells) in zip(
        axes[row], [("watershed", found), ("ground truth", truth)], strict=True
    ):
        ax.axis("off")
        if cells is None:
            ax.set_title("no ground-truth mask")
            continue
        overlay = composite(image).copy()
        overlay[find_boundaries(cells, mode="outer")] = (255, 255, 255)
        ax.imshow(overlay)
        ax.set_title(f"{sid[:18]}: {title}, {len(np.unique(cells)) - 1} cells")
fig.tight_layout()

# %% [markdown]
# ## Predictions
# With a model (`MODEL_DIR`), `hpa.predict` scores the cells of these images and writes a
# submission; `hpa.show` draws it: every submitted cell outlined in the colour of its top class,
# its top classes and confidences beside it, the green channel alone on the right. Where the
# folder has ground truth (`masks/` and `cells.csv`, as synthetic sets do), cells are marked
# matched, wrong class, false or missed at IoU 0.6, as the metric matches them.

# %%
import tempfile

from hpa.show import show

if MODEL_DIR is None:
    print("no model: set MODEL_DIR to an exported model folder (a run's model/) to see predictions")
else:
    work = Path(tempfile.mkdtemp(prefix="hpa-explore-"))
    sizes = [read_sample(data / "train", sid).shape[:2] for sid in samples["ID"]]
    pd.DataFrame(
        {
            "ID": samples["ID"],
            "ImageWidth": [w for _, w in sizes],
            "ImageHeight": [h for h, _ in sizes],
            "PredictionString": "",
        }
    ).to_csv(work / "sample_submission.csv", index=False)
    predict = [  # paths quoted for Hydra, so spaces or `=` in them survive
        f"models=['{MODEL_DIR}']",
        f"input_dir='{data / 'train'}'",
        f"sample_submission='{work / 'sample_submission.csv'}'",
        f"submission='{work / 'submission.csv'}'",
    ]
    subprocess.run([sys.executable, "-m", "hpa.predict", *predict], check=True)
    has_truth = (data / "masks").is_dir() and (data / "cells.csv").is_file()
    pictures = show(
        work / "submission.csv",
        data / "train",
        work / "pictures",
        truth_dir=data if has_truth else None,
        size=DISPLAY_SIZE,
        progress=False,
    )
    for path in pictures:
        picture = plt.imread(path)
        fig, ax = plt.subplots(figsize=(16, 16 * picture.shape[0] / picture.shape[1]))
        ax.imshow(picture)
        ax.axis("off")
        fig.tight_layout()
