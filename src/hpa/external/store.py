"""How converted channels are stored: one grayscale file per channel, at a chosen size and format."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hpa.data.images import read_channel, resize
from hpa.errors import InputError
from hpa.fsio import atomic_path, write_bytes

FORMATS = ("png", "jpg")
# What hpa.fsio writes before its rename (`.<stem>.tmp-<pid><suffix>`, or a folder without the
# suffix): a leftover of a killed run, never a user's file.
_STALE_TEMP = re.compile(r"^\..+\.tmp-\d+(\.[^.]+)?$")


def is_stale_temp(name: str) -> bool:
    """Whether `name` is a partial file a killed run left (hpa.fsio's temp name, or `*.part`)."""
    return name.endswith(".part") or bool(_STALE_TEMP.match(name))


@dataclass(frozen=True)
class StoreOptions:
    size: int | None  # square side in px; None keeps the source size
    format: str  # png (lossless, the competition's layout) or jpg (smaller, lossy)
    png_compression: int
    jpg_quality: int

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"format={self.format!r}: use one of {', '.join(FORMATS)}")
        if self.size is not None and self.size < 16:
            raise InputError(
                f"size={self.size}: use at least 16 px, or null to keep the source size"
            )

    @property
    def suffix(self) -> str:
        return f".{self.format}"

    def encode(self, plane: np.ndarray) -> bytes:
        if self.format == "png":
            params = [cv2.IMWRITE_PNG_COMPRESSION, self.png_compression]
        else:
            params = [cv2.IMWRITE_JPEG_QUALITY, self.jpg_quality]
        ok, buf = cv2.imencode(self.suffix, plane, params)
        if not ok:
            raise OSError(f"could not encode a {plane.shape} image as {self.format}")
        return buf.tobytes()


def decode_resized(src: Path, opts: StoreOptions) -> tuple[np.ndarray, bool]:
    """One grayscale plane at the wanted size (InputError when `src` is no image); True if resized."""
    plane = read_channel(src)
    if opts.size is not None and plane.shape != (opts.size, opts.size):
        return resize(plane, opts.size), True
    return plane, False


def convert_channel(
    src: Path, dest: Path, opts: StoreOptions, *, move_unchanged: bool = False
) -> None:
    """Decode `src`, resize, store as `dest` atomically.

    With `move_unchanged` (a finished download), a source already at the wanted size and format
    is renamed into place as it is: no generation loss, no work.
    """
    plane, resized = decode_resized(src, opts)
    if move_unchanged and not resized and has_format(src, opts.format):
        link_into_place(src, dest)
        src.unlink()
        return
    write_bytes(dest, opts.encode(plane))


def link_into_place(src: Path, dest: Path) -> None:
    """`dest` becomes a hard link to `src` (no extra disk), or a copy across file systems;
    atomically (hpa.fsio): a kill leaves the old `dest` or the new one."""
    with atomic_path(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def has_format(path: Path, fmt: str) -> bool:
    """Whether the file's bytes are PNG or JPEG, whatever its name says."""
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"\x89PNG") if fmt == "png" else head.startswith(b"\xff\xd8")
