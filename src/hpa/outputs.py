"""What a command may write: one mechanism for every command's outputs.

- **Ownership.** Each output a command claims is recorded in the manifest `.hpa-outputs.json`
  of its folder (`{name: command}`). A command overwrites, replaces or removes only what that
  manifest says it wrote itself; never a file by its name pattern. A folder that holds anything
  else is refused before any work starts, and so is an output another command owns (a training
  run's `metrics.json` for `hpa.evaluate`) or one that is also the command's input.
- **One writer.** Each output (file or folder) has a lock, `.<name>.hpa-lock` beside it, taken
  before the first write and released on any exit (a POSIX record lock: the kernel drops it when
  the process dies, so a SIGKILL leaves no stale lock, and forked workers never hold it). A second writer stops at once with one line naming the
  holder's PID.

Commands use `output(...)` for a file they write (in place or atomically through hpa.fsio) and
`replace_folder(...)` for a folder they build whole; `claim_folder(...)` for a folder they
fill over time (a cache, a run). A new command that goes through these inherits every rule.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from hpa.errors import InputError
from hpa.fsio import atomic_dir, disk_full_as_error, write_json

MANIFEST = ".hpa-outputs.json"
LOCK_SUFFIX = ".hpa-lock"
# Markers earlier versions left in folders they made: such a folder is theirs whole.
LEGACY_MARKERS = {".hpa-synthetic": "hpa.synthetic", ".hpa-kernel-output": "hpa.kaggle output"}
_MAX_MANIFEST = 4 << 20  # a manifest is a few hundred bytes; a larger one is not ours


# --- ownership ----------------------------------------------------------------------------


def manifest(folder: str | Path) -> dict[str, str]:
    """`{name: command}` of what hpa wrote in `folder`; {} when it has no (valid) manifest."""
    path = Path(folder) / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > _MAX_MANIFEST:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): str(v) for k, v in files.items()}


def owner(path: str | Path) -> str | None:
    """The command that wrote `path`, as its folder's manifest (or a legacy marker) says."""
    path = Path(path)
    files = manifest(path.parent)
    return files.get(path.name) if files else _legacy_owner(path.parent)


def _legacy_owner(folder: Path) -> str | None:
    return next((c for m, c in LEGACY_MARKERS.items() if (folder / m).is_file()), None)


def record(path: str | Path, command: str) -> None:
    """Write down in `path`'s folder that `command` owns `path` (an update under a lock)."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder / f".{MANIFEST}{LOCK_SUFFIX}", wait=True):
        files = manifest(folder)
        if files.get(path.name) == command:
            return
        files[path.name] = command
        write_json(folder / MANIFEST, {"files": dict(sorted(files.items()))})


def _is_ours_always(name: str) -> bool:
    """Bookkeeping files every hpa command may leave in a folder it writes."""
    return name == MANIFEST or name.endswith(LOCK_SUFFIX) or name in LEGACY_MARKERS


def foreign(folder: str | Path, command: str | None = None) -> list[str]:
    """Entries of `folder` that `command` (None: any hpa command) did not write, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = manifest(folder)
    # A folder from before manifests: its marker says an hpa command made all of it.
    legacy = None if files else _legacy_owner(folder)
    theirs = []
    for entry in folder.iterdir():
        name = entry.name
        if _is_ours_always(name):
            continue
        who = files.get(name, legacy)
        if who is None or (command is not None and who != command):
            theirs.append(name)
    return sorted(theirs)


def same_path(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` name one file or folder (links and `..` included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(
    path: str | Path,
    option: str,
    command: str,
    *,
    inputs: Iterable[str | Path | None] = (),
    named_by_user: bool = True,
) -> Path:
    """Refuse, before any work, an output that is not this command's to write.

    `inputs`: the files and folders the command reads; the output may be none of them, nor lie
    inside a folder among them that is not an output folder (None entries are skipped).
    `named_by_user=False` for a name the command chose itself (metrics.json beside a
    submission): an existing file there must be this command's own.
    """
    from hpa.cli import check_writable

    path = Path(path)
    check_writable(path, option)
    for source in inputs:
        if source is not None and str(source) and same_path(path, source):
            raise InputError(
                f"{option}={path} is also an input of {command} ({source}); it would be "
                f"overwritten by its own output. Pass another {option}"
            )
    who = owner(path)
    if who is not None and who != command:
        raise InputError(
            f"{option}={path} belongs to {who} (its {MANIFEST} says so); {command} will not "
            f"overwrite it. Pass another {option}"
        )
    if not named_by_user and path.exists() and who != command:
        raise InputError(
            f"{path} exists and was not written by {command}; nothing was changed. Pass "
            f"{option}=ANOTHER_FILE or move it away"
        )
    return path


@contextlib.contextmanager
def output(
    path: str | Path,
    option: str,
    command: str,
    *,
    inputs: Iterable[str | Path | None] = (),
    named_by_user: bool = True,
) -> Iterator[Path]:
    """Check `path` (check_output), hold its lock while inside, and record it as `command`'s.

    Recorded before the work (a partial output a rerun resumes is this command's too); a run
    that ends without writing it takes the record back, and the manifest when it made it.
    """
    path = check_output(path, option, command, inputs=inputs, named_by_user=named_by_user)
    with lock(path, option):
        had = manifest(path.parent)
        with disk_full_as_error(path.parent):
            record(path, command)
        try:
            yield path
        finally:
            if not path.exists():
                _unrecord(path, had)


def _unrecord(path: Path, had: dict[str, str]) -> None:
    """Put `path`'s folder's manifest back as it was for `path` (`had`: before the record)."""
    folder = path.parent
    with contextlib.suppress(OSError), _flock(folder / f".{MANIFEST}{LOCK_SUFFIX}", wait=True):
        files = manifest(folder)
        if path.name in had:
            files[path.name] = had[path.name]
        else:
            files.pop(path.name, None)
        if files:
            write_json(folder / MANIFEST, {"files": dict(sorted(files.items()))})
        elif not had:  # the manifest was ours alone: it goes with the record
            (folder / MANIFEST).unlink(missing_ok=True)


def check_folder(folder: str | Path, option: str, command: str) -> Path:
    """`folder` may be written by `command`: absent, empty, or holding only what it wrote."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option}={folder} is a file, not a folder; pass a new or empty folder")
    theirs = foreign(folder, command)
    if theirs:
        shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
        raise InputError(
            f"{option}={folder} holds files {command} did not write ({shown}); nothing was "
            "changed. Pass a new or empty folder"
        )
    return folder


@contextlib.contextmanager
def claim_folder(
    folder: str | Path,
    option: str,
    command: str,
    *,
    inputs: Iterable[str | Path | None] = (),
    allow_foreign: bool = False,
) -> Iterator[Path]:
    """A folder `command` fills over time (resumable): checked, locked while inside, created.

    `allow_foreign`: the folder may also hold the user's files (a data root that gets a cache
    beside its images); `command` then touches only the names it records.
    """
    folder = Path(folder)
    check_output(folder, option, command, inputs=inputs)
    if not allow_foreign:
        check_folder(folder, option, command)
    with lock(folder, option):
        with disk_full_as_error(folder):
            folder.mkdir(parents=True, exist_ok=True)
        yield folder


def claim_names(folder: str | Path, names: Iterable[str], command: str) -> None:
    """Record that `command` writes `names` (top-level entries) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder / f".{MANIFEST}{LOCK_SUFFIX}", wait=True):
        files = manifest(folder)
        new = {n: command for n in names if files.get(n) != command}
        if new:
            write_json(folder / MANIFEST, {"files": dict(sorted({**files, **new}.items()))})


@contextlib.contextmanager
def replace_folder(
    folder: str | Path,
    option: str,
    command: str,
    *,
    inputs: Iterable[str | Path | None] = (),
) -> Iterator[Path]:
    """Build `folder` whole in a temp sibling; on success it takes the place of the old one.

    Refused before any work unless `folder` is absent, empty or holds only what `command`
    wrote, so the folder moved aside and removed holds nothing of anyone else's. The new folder
    gets a manifest naming everything in it as `command`'s.
    """
    folder = Path(folder)
    check_output(folder, option, command, inputs=inputs)
    check_folder(folder, option, command)
    with lock(folder, option):
        check_folder(folder, option, command)  # again, now that no other hpa writes it
        with atomic_dir(folder) as tmp:
            yield tmp
            names = [p.name for p in tmp.iterdir() if not _is_ours_always(p.name)]
            claim_names(tmp, names, command)


def remove_owned(folder: str | Path, command: str) -> None:
    """Remove `folder` if everything in it is `command`'s; else leave it and say why."""
    folder = Path(folder)
    theirs = foreign(folder, command)
    if theirs:
        raise InputError(
            f"{folder} holds files {command} did not write ({', '.join(theirs[:3])}); it was "
            "left as it is"
        )
    shutil.rmtree(folder)


# --- one writer ---------------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def _holder(lockfile: Path) -> str:
    try:
        text = lockfile.read_text(encoding="utf-8", errors="replace")[:64].strip()
    except OSError:
        return "unknown"
    return text.split()[0] if text else "unknown"


@contextlib.contextmanager
def _flock(lockfile: Path, *, wait: bool = False, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `lockfile` (created, removed when released).

    A lock file that was removed and made anew between our open and our lock is not the one
    the others see: we check it is still the file at that path, else start over.
    """
    while True:
        fd = os.open(lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            # A POSIX record lock, not flock: it belongs to this process alone, so the workers
            # a command forks do not hold it after a SIGKILL of their parent.
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(
                    f"{what or lockfile} is being written by another hpa process (pid "
                    f"{_holder(lockfile)}); wait for it to finish, or choose another output"
                ) from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lockfile).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the holder's pid is for messages: a full disk is fine
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lockfile)
        os.close(fd)


@contextlib.contextmanager
def lock(path: str | Path, option: str = "output") -> Iterator[None]:
    """Hold the one-writer lock of `path` (a file or folder, existing or not) while inside."""
    path = Path(path)
    with disk_full_as_error(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _flock(lock_path(path), what=f"{option}={path}"):
        yield


__all__ = [
    "MANIFEST",
    "check_folder",
    "check_output",
    "claim_folder",
    "claim_names",
    "foreign",
    "lock",
    "lock_path",
    "manifest",
    "output",
    "owner",
    "record",
    "remove_owned",
    "replace_folder",
    "same_path",
]
