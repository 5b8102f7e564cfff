"""The JSON files Kaggle's CLI reads: dataset-metadata.json and kernel-metadata.json."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpa.errors import InputError

COMPETITION = "hpa-single-cell-image-classification"
PLACEHOLDER_USER = "your-kaggle-username"
# Kaggle's rules for a dataset or kernel slug; titles are 6 to 50 characters.
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")
OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")  # a user name (or organization)


# The GPU a pushed notebook asks for (kernel-metadata.json's `machine_shape`, which the kaggle CLI
# passes on unchecked): the shapes `kaggle kernels push --accelerator` documents today. T4: Kaggle's
# torch (cu128, sm_75 and up) runs on it; the P100 (sm_60) it cannot.
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"
ACCELERATORS = (
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "NvidiaL4",
    "NvidiaL4X1",
    "NvidiaTeslaA100",
    "NvidiaH100",
    "NvidiaRtxPro6000",
)
UNUSABLE_ACCELERATORS = {
    "nvidiateslap100": "a P100 (sm_60): today's torch has no sm_60 kernels and cannot run on it"
}
# `original`: every new version of a pushed notebook keeps the Docker image of its first version,
# the image kaggle_image.txt and the bundle were checked against; a later image (another torch)
# cannot break it. `latest` takes the current image: use it after updating kaggle_image.txt to it.
DEFAULT_PINNING = "original"
PINNINGS = ("original", "latest")


def kaggle_config_file() -> Path:
    """Where the kaggle CLI reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, or on Linux
    without that folder $XDG_CONFIG_HOME/kaggle (~/.config/kaggle)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    home = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not home.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(xdg) / "kaggle" / "kaggle.json"
    return home / "kaggle.json"


def default_user() -> str:
    """The Kaggle user in metadata: $KAGGLE_USERNAME, else kaggle.json's `username` (as Kaggle's
    CLI reads them), else a placeholder."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    try:
        user = json.loads(kaggle_config_file().read_text()).get("username")
    except (OSError, ValueError, AttributeError):
        user = None
    return user if isinstance(user, str) and user else PLACEHOLDER_USER


def check_accelerator(accelerator: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]+", accelerator):
        raise InputError(
            f"--accelerator {accelerator!r}: use a Kaggle machine shape such as NvidiaTeslaT4"
        )
    why = UNUSABLE_ACCELERATORS.get(accelerator.lower())
    if why:
        raise InputError(f"--accelerator {accelerator} asks for {why}; use {DEFAULT_ACCELERATOR}")
    if accelerator not in ACCELERATORS:
        raise InputError(
            f"--accelerator {accelerator}: not a machine shape the kaggle CLI knows; use one of "
            f"{', '.join(ACCELERATORS)}"
        )
    return accelerator


def check_slug(slug: str, what: str) -> str:
    if not SLUG.match(slug):
        raise InputError(
            f"{what} {slug!r} is not a Kaggle slug: use 3-50 lowercase letters, digits and hyphens"
        )
    return slug


def check_dataset(ref: str, what: str) -> str:
    """`ref` if it names a Kaggle data set as OWNER/SLUG, else InputError naming `what`."""
    owner, sep, slug = ref.partition("/")
    if not sep or not OWNER.match(owner) or not SLUG.match(slug):
        raise InputError(
            f"{what} {ref!r} is not a Kaggle data set: use OWNER/SLUG (the SLUG 3-50 lowercase "
            "letters, digits and hyphens), as in the data set's URL kaggle.com/datasets/OWNER/SLUG"
        )
    return ref


def check_user(user: str) -> str:
    """A Kaggle user name as it goes into OWNER/SLUG ids; else one line naming it."""
    if not OWNER.match(user or ""):
        raise InputError(
            f"Kaggle user {user!r} is not a user name: use letters, digits, '-' and '_' (your "
            "name as in kaggle.com/NAME); set it with --user or KAGGLE_USERNAME"
        )
    return user


def dataset_metadata(user: str, slug: str, title: str) -> dict[str, Any]:
    check_user(user)
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


def kernel_metadata(
    kernel: Kernel,
    user: str,
    datasets: list[str],
    accelerator: str = DEFAULT_ACCELERATOR,
    pinning: str = DEFAULT_PINNING,
) -> dict[str, Any]:
    """Internet is off explicitly: code-competition submissions must run without it."""
    check_user(user)
    if pinning not in PINNINGS:
        raise InputError(f"--pinning {pinning!r}: use one of {', '.join(PINNINGS)}")
    gpu = {"machine_shape": check_accelerator(accelerator)} if kernel.gpu else {}
    return {
        "id": f"{user}/{kernel_slug(kernel)}",
        "title": kernel.title,
        "code_file": kernel.notebook,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": kernel.gpu,
        "enable_tpu": False,
        **gpu,
        "enable_internet": False,
        "docker_image_pinning_type": pinning,
        "dataset_sources": datasets,
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
        "model_sources": [],
    }
