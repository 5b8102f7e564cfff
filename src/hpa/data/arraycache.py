"""A store of fixed-shape uint8 rows in one file, addressed by key, safe to kill at any time.

Files in its folder: `data.u8` (the rows back to back), `index.json` (row -> key and a signature
of the key's source), `state.u8` (one byte per row: 0 to do, 1 done, 2 bad; a row becomes done
only after its pixels are flushed), `manifest.json` (how it was made; written last, so a folder
without one is unfinished). hpa.data.cache builds the image cache on it; cell crops can too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpa.fsio import write_json

TODO, DONE, BAD = 0, 1, 2
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class CacheError(Exception):
    """A cache that must not be read: missing, made differently, or damaged. The text says why."""


@dataclass
class Diff:
    """Samples whose source files appeared, changed or disappeared since the cache was made."""

    new: list[str]
    changed: list[str]
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.removed)

    def __str__(self) -> str:
        parts = [f"{len(v)} {k} (e.g. {v[0]})" for k, v in vars(self).items() if v]
        return ", ".join(parts)


class ArrayCache:
    """Fixed-shape uint8 rows in one file, addressed by key; see the module docstring."""

    def __init__(self, folder: Path, manifest: dict[str, Any], keys: list, signatures: list):
        self.folder = folder
        self.manifest = manifest
        self.item_shape = tuple(manifest["item_shape"])
        self.row_bytes = int(np.prod(self.item_shape))
        self._file = None
        self._pid = None
        self._load_index(keys, signatures)

    def _load_index(self, keys: list, signatures: list) -> None:
        self.keys, self.signatures = keys, signatures
        self.rows = {k: r for r, k in enumerate(keys) if k is not None}  # None: a removed sample
        self.state = np.zeros(len(keys), np.uint8)
        with open(self.state_path, "rb") as f:
            on_disk = np.frombuffer(f.read(len(keys)), np.uint8)
        self.state[: len(on_disk)] = on_disk

    data_path = property(lambda self: self.folder / "data.u8")
    state_path = property(lambda self: self.folder / "state.u8")
    index_path = property(lambda self: self.folder / "index.json")
    report_path = property(lambda self: self.folder / "report.csv")

    @classmethod
    def open(cls, folder: Path, expect: dict[str, Any]) -> ArrayCache:
        """An existing cache whose manifest has every `expect` entry; else CacheError."""
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            index = json.loads((folder / "index.json").read_text())
        except FileNotFoundError:
            raise CacheError(f"no cache in {folder}") from None
        except (OSError, ValueError) as err:
            raise CacheError(f"unreadable cache in {folder} ({err})") from None
        for key, value in expect.items():
            if manifest.get(key) != value:
                raise CacheError(
                    f"{folder} was made with {key}={manifest.get(key)!r}, need {value!r}"
                )
        cache = cls(folder, manifest, index["keys"], index["signatures"])
        if cache.data_path.stat().st_size < len(cache.keys) * cache.row_bytes:
            raise CacheError(f"{cache.data_path} is shorter than its index; the cache is damaged")
        return cache

    @classmethod
    def create(cls, folder: Path, manifest: dict[str, Any]) -> ArrayCache:
        """A new empty cache (replacing whatever was in `folder`); rows come from `sync`."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").unlink(missing_ok=True)  # first out, last in: marks complete
        for name in ("data.u8", "state.u8"):
            (folder / name).write_bytes(b"")
        write_json(folder / "index.json", {"keys": [], "signatures": []}, indent=1)
        write_json(folder / "manifest.json", manifest, indent=1)
        return cls(folder, manifest, [], [])

    def live_rows(self, value: int) -> list[int]:
        """Rows that hold a current sample and have state `value`."""
        return [r for r in self.rows.values() if self.state[r] == value]

    def diff(self, sources: dict[str, str]) -> Diff:
        old = dict(zip(self.rows, (self.signatures[r] for r in self.rows.values()), strict=True))
        return Diff(
            new=[k for k in sources if k not in old],
            changed=[k for k in sources if k in old and old[k] != sources[k]],
            removed=[k for k in old if k not in sources],
        )

    def sync(self, sources: dict[str, str]) -> Diff:
        """Make the rows match `sources` (key -> signature): changed rows to redo, new ones appended."""
        diff = self.diff(sources)
        if not diff:
            return diff
        # Order matters for a kill at any point: rows are reset before the index names the new
        # source, and the files grow before the index refers to the new rows.
        self.mark([self.rows[k] for k in diff.changed], TODO)
        start, end = len(self.keys), len(self.keys) + len(diff.new)
        with open(self.data_path, "r+b") as f:
            f.truncate(max(end * self.row_bytes, os.fstat(f.fileno()).st_size))
        with open(self.state_path, "r+b") as f:
            f.seek(start)
            f.write(bytes(end - start))
        keys = [None if k in diff.removed else k for k in self.keys] + diff.new
        signatures = [sources.get(k, "") if k else "" for k in keys]
        write_json(self.index_path, {"keys": keys, "signatures": signatures}, indent=1)
        self._load_index(keys, signatures)
        return diff

    def mark(self, rows: list[int], value: int) -> None:
        """Set rows' state once their pixels are on disk (fdatasync first: safe on power loss too)."""
        if not rows:
            return
        with open(self.data_path, "r+b") as data, open(self.state_path, "r+b") as state:
            _fdatasync(data.fileno())
            for row in sorted(rows):
                state.seek(row)
                state.write(bytes([value]))
            if value == TODO:  # a reset must land before the index names the new source
                state.flush()
                _fdatasync(state.fileno())
        self.state[rows] = value

    def read(self, row: int) -> np.ndarray:
        """A fresh writable array (augmentations may work in place)."""
        if self._pid != os.getpid():  # DataLoader workers each open their own file
            # Kept open for the life of the reader: one open per sample would double the cost.
            self._file = open(self.data_path, "rb", buffering=0)  # noqa: SIM115
            self._pid = os.getpid()
        out = np.empty(self.item_shape, np.uint8)
        if hasattr(os, "preadv"):
            n = os.preadv(self._file.fileno(), [out], row * self.row_bytes)
        else:
            self._file.seek(row * self.row_bytes)
            n = self._file.readinto(out)
        if n != self.row_bytes:
            raise CacheError(
                f"{self.data_path}: row {row} is truncated; re-run python -m hpa.prepare"
            )
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}


def write_row(data_path: Path, row: int, item: np.ndarray) -> None:
    """Write one row in place (prepare's worker processes call this; the main process marks it)."""
    with open(data_path, "r+b") as f:
        f.seek(row * item.nbytes)
        f.write(np.ascontiguousarray(item).data)
