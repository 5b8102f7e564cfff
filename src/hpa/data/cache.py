"""The decode-once cache: every sample of an image folder, resized once, in one file of uint8 rows.

Layout: `ROOT/.hpa_cache/<image_dir>_<size>/`, or with `data.cache_dir` (for a read-only root such
as Kaggle's /kaggle/input) `<cache_dir>/<root name>-<hash of its path>/<image_dir>_<size>/`, holds
- `data.u8`: row r = sample r as size x size x 4 uint8 (red, green, blue, yellow), back to back;
- `index.json`: row -> sample ID and a signature of its source files (names, sizes, mtimes);
- `state.u8`: one byte per row (0 to do, 1 done, 2 bad), set only after the row's pixels are
  flushed, so a killed run never leaves a half-written row that reads as done;
- `manifest.json`: how the cache was made (format version, size, channels, interpolation, source);
- `report.csv`: the samples `python -m hpa.prepare` skipped, with the file and the reason.
Other kinds of rows (the cell crops) get their own sibling folder with the same scheme.

Why one file of rows rather than one .npy per sample: measured on 512 px samples in page cache,
a row read with `os.preadv` into a fresh array takes ~36 us, the same as a plain read of those
bytes (~42 us), while `np.load` of a per-sample .npy takes ~84 us (open + header parse). One file
also means one inode instead of 22k per size, and random reads need no page-table warm-up
(a memmap pays one page fault per 4 KiB on first touch in every DataLoader worker).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpa.data.arraycache import DONE, TODO, ArrayCache, CacheError  # noqa: F401
from hpa.data.images import CHANNELS, EXTENSIONS
from hpa.errors import InputError

if TYPE_CHECKING:  # the protocol only; importing dataset would pull torch into prepare's workers
    from hpa.data.dataset import SampleSource

log = logging.getLogger(__name__)

CACHE_ROOT = ".hpa_cache"
# Bump when the pixels a cache holds would change (read_sample's scaling or resize): older caches
# are then reported stale and rebuilt, never read.
CACHE_VERSION = 1

_CHANNEL_FILE = re.compile(
    rf"^(?P<id>.+)_(?:{'|'.join(CHANNELS)})(?:{'|'.join(re.escape(e) for e in EXTENSIONS)})$"
)


def cache_dir(
    root: str | Path,
    image_dir: str,
    size: int,
    kind: str = "images",
    cache_root: str | Path | None = None,
) -> Path:
    """Where the cache of `root/image_dir` at `size` px lives (kind: images, or e.g. cells).

    Inside the data root by default; under `cache_root` when given (data.cache_dir), in a folder
    per data root so that several roots can share one cache location without colliding.
    """
    name = image_dir.strip("/").replace("/", "__")
    tag = f"{name}_{size}" if kind == "images" else f"{name}_{kind}_{size}"
    if cache_root is None:
        return Path(root) / CACHE_ROOT / tag
    resolved = Path(root).expanduser().resolve()
    key = hashlib.blake2b(str(resolved).encode(), digest_size=4).hexdigest()
    return Path(cache_root).expanduser() / f"{resolved.name or 'root'}-{key}" / tag


def prepare_hint(root: str | Path, image_dir: str, size: int, cache_root=None) -> str:
    """The command that builds (or finishes) this cache."""
    where = f" data.cache_dir={cache_root}" if cache_root is not None else ""
    return (
        f"python -m hpa.prepare data.root={root} data.image_dir={image_dir} "
        f"data.image_size={size}{where}"
    )


def archive_hint(root: str | Path, size: int) -> str:
    """The command that adds a size to a data root made from the competition's archive."""
    return f"python -m hpa.kaggle data --out {root} --sizes {size}"


def cached_sizes(root: str | Path, image_dir: str, cache_root: str | Path | None = None) -> list:
    """The sizes (px) at which root/image_dir has a finished image cache."""
    base = cache_dir(root, image_dir, 0, cache_root=cache_root).parent
    prefix = cache_dir(root, image_dir, 0, cache_root=cache_root).name[:-1]
    if not base.is_dir():
        return []
    found = (
        p.name[len(prefix) :]
        for p in base.iterdir()
        if p.name.startswith(prefix) and (p / "manifest.json").is_file()
    )
    return sorted(int(s) for s in found if s.isdigit())


class NoRawImages:
    """The fallback of a cache-only data root (`hpa.kaggle data` without --keep-images)."""

    def __init__(self, image_dir: str | Path, size: int, hint: str):
        self.image_dir, self.size, self.hint = Path(image_dir), size, hint
        self.description = f"no raw images ({self.image_dir} is missing)"

    def load(self, sample_id: str) -> np.ndarray:
        raise InputError(
            f"sample {sample_id} is not in the {self.size} px cache and there are no raw images "
            f"in {self.image_dir}; run `{self.hint}` to finish the cache"
        )


def scan_sources(folder: str | Path) -> dict[str, str]:
    """Sample ID -> signature of its channel files (name, size, mtime): the staleness check."""
    files: dict[str, list[str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _CHANNEL_FILE.match(entry.name)
            if match and not entry.name.startswith(".") and entry.is_file():
                stat = entry.stat()
                files.setdefault(match["id"], []).append(
                    f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}"
                )
    return {
        sid: hashlib.blake2b("|".join(sorted(parts)).encode(), digest_size=8).hexdigest()
        for sid, parts in sorted(files.items())
    }


def image_manifest(image_dir: str, size: int) -> dict[str, Any]:
    """What an image cache must have been made with to be read for (image_dir, size)."""
    return {
        "format": "hpa-cache",
        "version": CACHE_VERSION,
        "kind": "images",
        "image_dir": image_dir,
        "item_shape": [size, size, len(CHANNELS)],
        "dtype": "uint8",
        "channels": list(CHANNELS),
        "interpolation": "area (cv2.INTER_AREA; linear when enlarging)",
    }


class CachedImages:
    """A SampleSource reading prepared rows; samples the cache lacks come from `fallback`."""

    def __init__(self, cache: ArrayCache, fallback: SampleSource):
        self.cache, self.fallback = cache, fallback
        done = len(cache.live_rows(DONE))
        size = cache.item_shape[0]
        self.description = (
            f"cache {cache.folder} ({done} samples prepared at {size} px from "
            f"{cache.manifest.get('source', '?')}; anything else is decoded from raw files)"
        )

    def load(self, sample_id: str) -> np.ndarray:
        row = self.cache.rows.get(sample_id)
        if row is None or self.cache.state[row] != DONE:
            return self.fallback.load(sample_id)
        return self.cache.read(row)


def open_cache(
    root: str | Path,
    image_dir: str,
    size: int,
    fallback: SampleSource,
    cache_root: str | Path | None = None,
) -> CachedImages | None:
    """The cache of root/image_dir at size px if it matches the files there, else None (logged)."""
    folder = cache_dir(root, image_dir, size, cache_root=cache_root)
    hint = prepare_hint(root, image_dir, size, cache_root)
    if not (folder / "manifest.json").exists():
        log.info("data: no cache in %s; `%s` builds one for much faster loading", folder, hint)
        return None
    try:
        cache = ArrayCache.open(folder, image_manifest(image_dir, size))
    except CacheError as err:
        log.warning("data: not using the cache: %s; re-run `%s`. Reading raw files.", err, hint)
        return None
    # A cache-only root (made from the competition's zip, no raw images): nothing to compare.
    source = Path(root) / image_dir
    diff = cache.diff(scan_sources(source)) if source.is_dir() else None
    if diff:
        log.warning(
            "data: cache %s is stale, its source files differ: %s; re-run `%s`. Reading raw files.",
            folder,
            diff,
            hint,
        )
        return None
    todo = len(cache.live_rows(TODO))
    if todo:
        log.warning(
            "data: cache %s is incomplete (%d of %d samples not prepared: interrupted?); those are "
            "decoded from raw files until `%s` finishes it",
            folder,
            todo,
            len(cache.rows),
            hint,
        )
    return CachedImages(cache, fallback)


def keep_freed_memory() -> None:
    """Let glibc reuse freed buffers instead of giving them back to the OS after every batch.

    A cached sample goes through several fresh 1 MB arrays (read, augment, channels-first). With
    glibc's defaults the heap is trimmed after each batch and those pages fault in again, which
    costs more than the read itself: measured at 512 px, 511 -> 256 page faults and ~1.3x the
    samples/s. Forked DataLoader workers inherit the setting. A no-op without glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: serve arrays up to 32 MiB from the heap


def open_cache_only(
    root: str | Path, image_dir: str, size: int, cache_root: str | Path | None = None
) -> CachedImages:
    """The cache of a root without raw images (root/image_dir missing); one line if it has none.

    Such a root comes from `python -m hpa.kaggle data`: caches and CSVs, no PNGs. A size it was
    not made at cannot be read; the message names the command that makes it.
    """
    folder = Path(root) / image_dir
    hint = archive_hint(root, size)
    cached = open_cache(root, image_dir, size, NoRawImages(folder, size, hint), cache_root)
    if cached is not None:
        return cached
    sizes = cached_sizes(root, image_dir, cache_root)
    if not sizes:
        raise InputError(
            f"missing image folder {folder}; set data.root (and data.image_dir) to your data, "
            f"or get the competition's data with `{hint}`"
        )
    raise InputError(
        f"{root} has no raw images ({folder} is missing), only caches at "
        f"{', '.join(map(str, sizes))} px; for data.image_size={size} run `{hint}` (or unpack the "
        "images there and run python -m hpa.prepare)"
    )
