"""Every file hpa writes goes through here: a kill or a full disk leaves the old file or none.

One scheme for all writers: the data goes to a hidden sibling `.<stem>.tmp-<pid><suffix>` (the
suffix kept, so writers that pick a format by extension still work), is flushed, and only then
renamed over the target. `os.replace` is atomic on one file system, so readers see the previous
complete file or the new complete one. Out of space anywhere becomes `DiskFullError`: one line
naming the folder, how much was needed and how much is free (exit 2 through the entry points).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpa.errors import NO_SPACE, InputError


class DiskFullError(InputError):
    """The disk filled up while writing; the previous good file (if any) is untouched."""


def size_text(n: float) -> str:
    """A byte count as people read it, never "0.0 GiB" for a few megabytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


_mb = size_text


def free_bytes(folder: str | Path) -> int | None:
    """Free space where `folder` (or its nearest existing parent) lives; None when unknown."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full_message(folder: str | Path, needed: int | None = None) -> str:
    free = free_bytes(folder)
    need = f"needed {_mb(needed)}" if needed else "needed more"
    have = f", {_mb(free)} free" if free is not None else ""
    return (
        f"no space left on the disk of {folder} ({need}{have}); free some space or write elsewhere"
    )


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in NO_SPACE


@contextlib.contextmanager
def disk_full_as_error(folder: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn an out-of-space OSError raised inside into a one-line DiskFullError naming `folder`."""
    try:
        yield
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(disk_full_message(folder, needed)) from None
        raise


def temp_path(path: str | Path) -> Path:
    """The hidden sibling a writer of `path` fills before the rename."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on any error it is removed.

    For writers that want a file name (cv2.imwrite, savefig, DataFrame.to_csv, torch.save).
    """
    path = Path(path)
    tmp = temp_path(path)
    # The temp file goes before the error is reported, so the free space it names is real.
    with disk_full_as_error(path.parent, needed):
        try:
            yield tmp
            move_into_place(tmp, path)
        finally:
            # Ours alone: the temp name carries this process's id.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def move_into_place(src: str | Path, path: str | Path) -> Path:
    """Rename `src` (a finished temp file, or a folder) over `path`, a file flushed to disk
    first: a reader sees the old `path` or the whole new one. Every rename hpa does is this one."""
    src, path = Path(src), Path(path)
    if src.is_file():
        _fsync_file(src)
    os.replace(src, path)
    return path


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes, checksum: bool = False) -> Path:
    """`data` into `path` atomically; `checksum`: its sha256 beside it (verify_checksum)."""
    path = Path(path)
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    if checksum:
        import hashlib

        write_checksum(path, hashlib.sha256(data).hexdigest())
    return path


# --- checksums: a file's bytes as written, checked before it is used ---------------------------

CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_checksum(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksum(path: str | Path, digest: str | None = None) -> str:
    """Write `path`'s sha256 beside it (`<name>.sha256`, sha256sum's format); return it."""
    path = Path(path)
    digest = digest or file_checksum(path)
    write_bytes(checksum_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def verify_checksum(path: str | Path, option: str) -> str | None:
    """InputError when `path`'s bytes differ from the checksum written with it (a file damaged
    on disk or in a copy); its digest when they agree; None when it has no checksum (a file from
    before checksums, or one copied without it)."""
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return None
    expected = sidecar.read_text(encoding="utf-8", errors="replace")[:200].split()[:1]
    actual = file_checksum(path)
    if expected != [actual]:
        raise InputError(
            f"{option}={path} is damaged: its bytes do not match {sidecar.name} (written with "
            "it); use an intact copy, or delete both files and write it anew"
        )
    return actual


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """JSON with a final newline (as Kaggle's CLI and most tools write it)."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder to fill; on success it takes the place of `path`.

    Only call this for a `path` that hpa made itself (an export, a bundle, a generated set): a
    previous folder there is moved aside, the new one renamed in, and the old one removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: this process's id
    with disk_full_as_error(path.parent):
        tmp.mkdir(parents=True)
        try:
            yield tmp
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "CHECKSUM_SUFFIX",
    "DiskFullError",
    "checksum_path",
    "file_checksum",
    "verify_checksum",
    "write_checksum",
    "atomic_dir",
    "atomic_path",
    "disk_full_as_error",
    "disk_full_message",
    "free_bytes",
    "is_disk_full",
    "move_into_place",
    "temp_path",
    "write_bytes",
    "write_json",
    "write_text",
]
