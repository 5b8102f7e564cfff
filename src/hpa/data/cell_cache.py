"""The cell-crop cache: every image's crops cut once into `.hpa_cache/<image_dir>_cells_<size>/`.

Layout: `manifest.json` (the crop recipe: version, size, margin, where masks come from) and one
`{ID}.{signature}.npy` per image (N x S x S x 4 uint8, its cells by ascending id). The signature
hashes the image's channel files and its mask file (names, sizes, mtimes), so an image or mask
that changes gets new crops and its old file goes. One .npy per image rather than the image
cache's single file of fixed rows, because the number of cells varies from image to image.
`build_cell_cache` is resumable: a killed run keeps every image it finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hpa.data.cache import cache_dir, scan_sources
from hpa.data.cells import crop_cells, read_instance_mask
from hpa.data.images import read_sample
from hpa.errors import InputError
from hpa.fsio import atomic_path, write_json
from hpa.signals import die_with_parent

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the crop recipe changes: older caches are rebuilt, never read
MASK_SOURCES = ("auto", "masks", "segmenter")


@dataclass
class CellCache:
    """A built crop cache: sample ID -> its crops file."""

    folder: Path
    size: int
    files: dict[str, Path]

    def load(self, sample_id: str) -> np.ndarray:
        # Memory-mapped: a DataLoader worker reads only the crop it needs.
        return np.load(self.files[sample_id], mmap_mode="r")


@dataclass
class _Job:
    image_dir: Path
    sample_id: str
    mask_path: Path | None  # None: segment the image
    segmenter: Callable[[], Any] | None  # makes a segmenter (picklable: it runs in workers)
    size: int
    margin: float
    out: Path


def _crop_sample(job: _Job) -> int:
    image = read_sample(job.image_dir, job.sample_id)
    if job.mask_path is not None:
        labels = read_instance_mask(job.mask_path, image.shape[:2])
    else:
        labels = job.segmenter().segment(image).cells
    crops, _ = crop_cells(image, labels.astype(np.int32, copy=False), job.size, job.margin)
    with atomic_path(job.out) as tmp, open(tmp, "wb") as f:
        np.save(f, crops)  # to a file object: np.save would append .npy to a path
    return len(crops)


def build_cell_cache(
    root: str | Path,
    ids: Sequence[str],
    size: int,
    margin: float,
    image_dir: str = "train",
    masks: str = "auto",
    mask_dir: str = "masks",
    segmenter: Callable[[], Any] | None = None,
    segmenter_key: str = "",
    workers: int = 0,
    progress: bool = True,
    cache_root: str | Path | None = None,
) -> CellCache:
    """Crop every cell of `ids` (those not cropped yet) and return the cache.

    Masks come from `root/mask_dir/{ID}.png` (`masks=masks`), from `segmenter`
    (`masks=segmenter`), or from that folder when it exists, else the segmenter (`masks=auto`).
    `segmenter` is a picklable callable returning a configured segmenter (the entry point composes
    it from the `segmenter` config group); `segmenter_key` names its settings in the manifest, so
    crops cut with other settings are not reused.
    """
    root = Path(root)
    if masks not in MASK_SOURCES:
        raise InputError(f"data.cell_masks={masks!r}: use one of {', '.join(MASK_SOURCES)}")
    if masks == "masks" and not (root / mask_dir).is_dir():
        raise InputError(
            f"data.cell_masks=masks but {root / mask_dir} does not exist; use cell_masks=auto"
        )
    use_masks = masks == "masks" or (masks == "auto" and (root / mask_dir).is_dir())
    if not use_masks and segmenter is None:
        raise InputError(
            f"no cell masks in {root / mask_dir} and no segmenter configured; add the masks or "
            "train through `python -m hpa.train data=cells` (segmenter=watershed by default)"
        )
    manifest = {
        "format": "hpa-cells",
        "version": CACHE_VERSION,
        "image_dir": image_dir,
        "size": int(size),
        "margin": float(margin),
        "mask_source": f"{mask_dir}/" if use_masks else f"segmenter:{segmenter_key}",
    }
    folder = _open_folder(
        cache_dir(root, image_dir, size, kind="cells", cache_root=cache_root), manifest
    )
    signatures = _signatures(root, image_dir, ids, root / mask_dir if use_masks else None)
    files = {sid: folder / f"{sid}.{signatures[sid]}.npy" for sid in ids}
    on_disk: dict[str, list[Path]] = {}
    for path in folder.glob("*.npy"):
        on_disk.setdefault(path.name.rsplit(".", 2)[0], []).append(path)
    todo = [sid for sid in ids if files[sid] not in on_disk.get(sid, [])]
    for sid in todo:  # crops of an older version of this image or mask
        for old in on_disk.get(sid, []):
            old.unlink()
    if todo:
        _crop_all(root, todo, files, manifest, use_masks, mask_dir, segmenter, workers, progress)
    return CellCache(folder, int(size), files)


def _crop_all(
    root, todo, files, manifest, use_masks, mask_dir, segmenter, workers, progress
) -> None:
    jobs = []
    for sid in todo:
        mask_path = root / mask_dir / f"{sid}.png" if use_masks else None
        if mask_path is not None and not mask_path.exists():
            raise InputError(
                f"missing cell mask {mask_path}; add it or set data.cell_masks=segmenter"
            )
        jobs.append(
            _Job(
                root / manifest["image_dir"],
                sid,
                mask_path,
                segmenter,
                manifest["size"],
                manifest["margin"],
                files[sid],
            )
        )
    folder = files[todo[0]].parent
    log.info(
        "cell crops: cropping %d images into %s (masks: %s)",
        len(jobs),
        folder,
        manifest["mask_source"],
    )
    bar = tqdm(
        total=len(jobs), desc=f"cell crops {manifest['size']}px", unit="img", disable=not progress
    )
    if workers > 1 and len(jobs) > 4:
        pool = ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))
        with pool:
            for _ in pool.map(_crop_sample, jobs, chunksize=4):
                bar.update()
    else:
        for job in jobs:
            _crop_sample(job)
            bar.update()
    bar.close()


def _signatures(
    root: Path, image_dir: str, ids: Sequence[str], mask_dir: Path | None
) -> dict[str, str]:
    """ID -> hash of its channel files' and mask's (name, size, mtime)."""
    sources = scan_sources(root / image_dir) if (root / image_dir).is_dir() else {}
    out = {}
    for sid in ids:
        parts = [sources.get(sid, "missing")]
        if mask_dir is not None:
            mask = mask_dir / f"{sid}.png"
            parts.append(
                f"{mask.stat().st_size}:{mask.stat().st_mtime_ns}" if mask.exists() else "none"
            )
        out[sid] = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
    return out


def _open_folder(folder: Path, manifest: dict[str, Any]) -> Path:
    """The cache folder for `manifest`: reused if its manifest matches, else emptied first."""
    path = folder / "manifest.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old == manifest:
            return folder
        log.info("cell crops: %s was made with other settings (%s); rebuilding it", folder, old)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest, indent=1)
    return folder
