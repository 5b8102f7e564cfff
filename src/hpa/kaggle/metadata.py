"""The JSON files Kaggle's CLI reads: dataset-metadata.json and kernel-metadata.json."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from hpa.errors import InputError

COMPETITION = "hpa-single-cell-image-classification"
PLACEHOLDER_USER = "your-kaggle-username"
# Kaggle's rules for a dataset or kernel slug; titles are 6 to 50 characters.
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")


def default_user() -> str:
    """The Kaggle user names in metadata: $KAGGLE_USERNAME (as Kaggle's CLI reads it) or a placeholder."""
    return os.environ.get("KAGGLE_USERNAME") or PLACEHOLDER_USER


def check_slug(slug: str, what: str) -> str:
    if not SLUG.match(slug):
        raise InputError(
            f"{what} {slug!r} is not a Kaggle slug: use 3-50 lowercase letters, digits and hyphens"
        )
    return slug


def dataset_metadata(user: str, slug: str, title: str) -> dict[str, Any]:
    check_slug(slug, "dataset slug")
    if not 6 <= len(title) <= 50:
        raise InputError(f"dataset title {title!r} must be 6 to 50 characters long")
    return {"id": f"{user}/{slug}", "title": title, "licenses": [{"name": "CC0-1.0"}]}


def install_cell(slug: str) -> str:
    """The notebook cell that installs the bundle with no network."""
    return f"!pip install --no-index --find-links /kaggle/input/{slug} hpa"


@dataclass(frozen=True)
class Kernel:
    """One notebook as a Kaggle kernel: what it needs attached and whether it wants a GPU."""

    notebook: str  # file under notebooks/
    title: str
    gpu: bool
    needs_models: bool


KERNELS = (
    Kernel("kaggle_inference.ipynb", "hpa inference", gpu=True, needs_models=True),
    Kernel("kaggle_train.ipynb", "hpa train", gpu=True, needs_models=False),
    Kernel("explore.ipynb", "hpa explore", gpu=False, needs_models=False),
)


def kernel_slug(kernel: Kernel) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kernel.title.lower()).strip("-")


def kernel_metadata(kernel: Kernel, user: str, datasets: list[str]) -> dict[str, Any]:
    """Internet is off explicitly: code-competition submissions must run without it."""
    return {
        "id": f"{user}/{kernel_slug(kernel)}",
        "title": kernel.title,
        "code_file": kernel.notebook,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": kernel.gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": datasets,
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
        "model_sources": [],
    }
