"""Where the train notebook's cache goes on Kaggle, and whether it fits there.

/kaggle/input is read-only, so the decoded cache (hpa.data.cache) goes to a writable folder,
/kaggle/working/cache by default. It holds every training image at data.image_size px, four
channels of one byte: n_images x size x size x 4 bytes (x cells_per_image for cell crops), about
23 GB for the competition's 21,806 images at 512 px. That is checked against the free space
there before anything is decoded, so a full disk is a one-line message at the start and not an
error hours into the run.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from hpa.errors import InputError
from hpa.fsio import size_text

GIB = 2**30


@dataclass(frozen=True)
class CachePlan:
    folder: Path  # this data root's caches (<cache_dir>/<root>-<hash>/): safe to delete whole
    level: str  # image: `python -m hpa.prepare` builds it; cell: training cuts the crops
    n_images: int
    image_size: int
    needed: int  # bytes still to write (the full size less what a previous run wrote)
    free: int

    def summary(self) -> str:
        return (
            f"cache: {self.n_images} images at {self.image_size} px ({self.level} level) need "
            f"{size_text(self.needed)} more in {self.folder}; {size_text(self.free)} free"
        )


def cache_bytes(n_images: int, image_size: int, per_image: int = 1) -> int:
    return n_images * per_image * image_size * image_size * 4


def count_rows(csv_path: Path) -> int:
    try:
        with open(csv_path, newline="") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)
    except OSError as err:
        raise InputError(f"cannot read {csv_path} ({err.strerror}); check DATA_DIR") from None


def allocated(folder: Path) -> int:
    """Bytes the files under `folder` occupy on disk (a cache file is sparse until filled)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def cache_plan(overrides: list[str]) -> CachePlan:
    """The cache `python -m hpa.prepare/train OVERRIDES` would use; InputError when it cannot fit.

    `overrides` must set data.root and data.cache_dir (the notebook's DATA_DIR and CACHE_DIR).
    """
    from hpa.cli import compose
    from hpa.data.cache import cache_dir
    from hpa.fsio import free_bytes

    cfg = compose("prepare", overrides)
    data = cfg.data
    if data.get("cache_dir") is None:
        raise InputError("data.cache_dir is not set: pass data.cache_dir=/kaggle/working/cache")
    level = str(data.get("level", "image"))
    per_image = 1 if level == "image" else data.get("cells_per_image")
    size = int(data.image_size)
    kind = "images" if level == "image" else "cells"
    folder = cache_dir(data.root, data.image_dir, size, kind=kind, cache_root=data.cache_dir)
    n_images = count_rows(Path(data.root) / data.train_csv)
    Path(data.cache_dir).mkdir(parents=True, exist_ok=True)
    free = free_bytes(data.cache_dir) or 0
    if per_image is None:  # cells per image unknown until segmented: nothing to estimate
        return CachePlan(folder.parent, level, n_images, size, 0, free)
    needed = max(cache_bytes(n_images, size, int(per_image)) - allocated(folder), 0)
    if needed > free:
        fits = int(math.sqrt(free / (n_images * int(per_image) * 4))) // 32 * 32
        smaller = f"data.image_size={fits} or less, " if fits >= 32 else ""
        raise InputError(
            f"the cache of {n_images} images at {size} px needs {size_text(needed)} in "
            f"{data.cache_dir}, but {size_text(free)} are free there; use {smaller}fewer "
            "images, or a CACHE_DIR on a bigger disk"
        )
    return CachePlan(folder.parent, level, n_images, size, needed, free)


def notebook_cache_plan(overrides: list[str]) -> CachePlan:
    """`cache_plan` for a notebook cell: prints its summary; a problem stops the cell with one
    line (SystemExit shows no traceback)."""
    try:
        plan = cache_plan(overrides)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    print(plan.summary())
    return plan


__all__ = ["CachePlan", "cache_bytes", "cache_plan", "notebook_cache_plan"]
