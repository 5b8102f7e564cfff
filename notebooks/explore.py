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
# Label statistics, four-channel composites, and cells found by hpa's segmenter drawn over the
# images. On Kaggle attach the competition data and the bundle dataset; locally point
# `DATA_DIR` at any HPA-format folder (`python -m hpa.synthetic out=DIR` makes one).

# %% tags=["parameters"]
BUNDLE_DIR = "/kaggle/input/hpa-bundle"
DATA_DIR = "/kaggle/input/hpa-single-cell-image-classification"
N_IMAGES = 4
DISPLAY_SIZE = 512
SEED = 0

# %%
import subprocess
import sys

try:
    import hpa  # noqa: F401
except ImportError:  # a fresh Kaggle session: install from the attached bundle, offline
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-index", "--find-links", BUNDLE_DIR, "hpa"], check=True)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

from hpa.data.cells import read_instance_mask
from hpa.data.images import read_sample
from hpa.data.records import read_records
from hpa.labels import CLASS_NAMES, NUM_CLASSES
from hpa.segment.watershed import WatershedSegmenter

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


def composite(image: np.ndarray) -> np.ndarray:
    red, green, blue, yellow = (image[..., i].astype(np.float32) for i in range(4))
    rgb = np.stack([red + yellow / 2, green + yellow / 2, blue], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


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
