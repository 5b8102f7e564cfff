"""hpa.fsio: a write that fails midway leaves the previous file (or folder) as it was, no temp."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpa.errors import InputError
from hpa.fsio import (
    DiskFullError,
    atomic_dir,
    atomic_path,
    disk_full_as_error,
    write_bytes,
    write_json,
    write_text,
)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    assert write_json(target, {"mAP": 0.5}) == target
    assert json.loads(target.read_text()) == {"mAP": 0.5}
    write_text(tmp_path / "a.txt", "données")
    write_bytes(tmp_path / "b.bin", b"\0\1")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "données"
    assert listing(tmp_path) == ["a.txt", "b.bin", "metrics.json"]


def test_an_error_inside_atomic_path_keeps_the_previous_file(tmp_path):
    target = tmp_path / "submission.csv"
    target.write_text("previous,complete\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".csv" and tmp.name.startswith(".")
        tmp.write_text("half a fi")
        raise RuntimeError("killed midway")
    assert target.read_text() == "previous,complete\n"
    assert listing(tmp_path) == ["submission.csv"]


def test_a_full_disk_midway_is_a_one_line_error_naming_the_folder(tmp_path, monkeypatch):
    target = tmp_path / "out" / "report.csv"
    target.parent.mkdir()
    target.write_text("previous report\n")

    def half_then_enospc(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    with pytest.raises(DiskFullError) as info:
        write_text(target, "a new report, longer than the old one\n" * 100)
    assert isinstance(info.value, InputError)  # so entry points exit 2 with one line
    message = str(info.value)
    assert str(target.parent) in message and "no space left" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert target.read_text() == "previous report\n"
    assert listing(target.parent) == ["report.csv"]


def test_other_os_errors_pass_through(tmp_path):
    with pytest.raises(PermissionError), disk_full_as_error(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.whl").write_text("old")
    with atomic_dir(out) as tmp:
        assert not (tmp / "old.whl").exists()
        (tmp / "new.whl").write_text("new")
        assert (out / "old.whl").exists()  # the old folder stays until the new one is whole
    assert listing(out) == ["new.whl"]
    assert listing(tmp_path) == ["bundle", "bundle/new.whl"]


def test_atomic_dir_failing_midway_keeps_the_previous_folder(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.whl").write_text("old")
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        (tmp / "new.whl").write_text("half")
        raise OSError(errno.EIO, "I/O error")
    assert (out / "old.whl").read_text() == "old"
    assert listing(tmp_path) == ["bundle", "bundle/old.whl"]


def test_a_real_full_disk_keeps_the_previous_file(tmp_path):
    """On a 64 KiB tmpfs (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("mounts a tmpfs (Linux)")
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        target = disk / "cache.bin"
        write_bytes(target, b"old" * 1000)
        with pytest.raises(DiskFullError, match=str(disk)):
            write_bytes(target, b"x" * 200_000)
        assert target.read_bytes() == b"old" * 1000
        assert listing(disk) == ["cache.bin"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
