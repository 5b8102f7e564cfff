"""What a command may read: one mechanism for every input file and every ID in a table.

- **Regular files only.** A FIFO, socket or device where an image, CSV or checkpoint should be
  would block a read forever (and ignore SIGTERM inside it); `check_regular_file` names it.
- **Reads with a time limit.** `read_bytes` reads a file in a helper thread and waits at most
  HPA_READ_TIMEOUT seconds (default 600) for it: a stalled network mount is one line naming the
  file, and SIGTERM is honoured while the read hangs (the wait is interruptible; the read is not).
- **IDs are names, not paths.** An ID from train.csv, a sample submission, a submission or an
  external listing becomes part of a file name (`<root>/train/<ID>_red.png`, a cache entry):
  `check_ids` refuses separators, `..`, absolute paths, control characters and empty IDs, so
  no ID reads or writes outside the folder it belongs to.
- **Bounded decoding.** `check_decoded_size` refuses a mask or image whose decoded size would
  exceed what its row states (a 400 KB submission must not inflate to gigabytes).
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from hpa.errors import InputError

# Anything but a plain name: a path separator (either OS's), a NUL or other control character.
_NOT_A_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def check_regular_file(path: str | Path, option: str = "file") -> Path:
    """`path` must be a regular file (links followed); else one line naming what it is."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{option}={path} does not exist") from None
    except OSError as err:
        raise InputError(f"{option}={path} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise InputError(
            f"{option}={path} is {kind}, not a regular file; reading it could block forever. "
            "Point it at the file itself"
        )
    return path


READ_TIMEOUT_ENV = "HPA_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT_S = 600.0


def env_seconds(name: str, default: float) -> float:
    """A time limit from the environment variable `name` (`default` when unset); one line when
    it is not a positive number of seconds."""
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise InputError(f"{name}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise InputError(f"{name}={text!r}: give a positive number of seconds")
    return value


def read_timeout_s() -> float:
    return env_seconds(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT_S)


def read_bytes(path: str | Path, option: str = "file", timeout_s: float | None = None) -> bytes:
    """A regular file's bytes, or one InputError line when they do not come within the limit.

    The read runs in a daemon thread: a read stuck in a stalled mount cannot be interrupted, but
    the command no longer waits on it (a daemon thread does not hold the process at exit).
    """
    path = check_regular_file(path, option)
    limit = read_timeout_s() if timeout_s is None else timeout_s
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["data"] = path.read_bytes()
        except BaseException as err:  # handed to the caller as it is
            box["error"] = err
        finally:
            done.set()

    threading.Thread(target=work, name=f"read {path.name}", daemon=True).start()
    if not done.wait(limit):
        raise InputError(
            f"{option}={path} gave no data in {limit:.0f} s (a stalled network mount?); check "
            f"the mount and run the same command again ({READ_TIMEOUT_ENV}=SECONDS moves the limit)"
        )
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["data"]  # type: ignore[return-value]


def id_problem(value: object) -> str | None:
    """Why `value` cannot be a sample ID (a plain file-name part); None when it can."""
    text = str(value)
    if not text.strip():
        return "is empty"
    if _NOT_A_NAME.search(text):
        return "holds a path separator or a control character"
    if text in (".", "..") or text.startswith(".."):
        return "starts with '..'"
    if os.path.isabs(text) or re.match(r"^[A-Za-z]:", text):
        return "is an absolute path"
    return None


def check_id(value: object, where: str) -> str:
    problem = id_problem(value)
    if problem:
        raise InputError(
            f"{where}: ID {str(value)[:80]!r} {problem}; an ID is a file name part (letters, "
            "digits, '-', '_'), never a path. Fix that row"
        )
    return str(value)


def check_ids(ids: Iterable[object], source: str | Path) -> None:
    """Every ID of a table read from `source` (check_id); the first bad row is named."""
    for row, value in enumerate(ids, start=2):  # row 1 is the header
        if id_problem(value):
            check_id(value, f"{source} row {row}")


_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}


def read_table(
    path: str | Path,
    what: str,
    expected: str,
    *,
    id_column: str | None = "ID",
    dtype: object = None,
    keep_default_na: bool = False,
):
    """A CSV read the one way: a regular file, parsed by pandas, its IDs checked (check_ids).

    `what` names the file as the user gave it (`oof=PATH`, `submission PATH`); `expected` says
    which columns it should have. A file pandas cannot parse is one InputError line.
    """
    import pandas as pd

    path = Path(path)
    check_regular_file(path, what.split("=", 1)[0] if "=" in what else "file")
    if dtype is None:
        dtype = {id_column: str} if id_column else None
    data = read_bytes(path, what.split("=", 1)[0] if "=" in what else "file")
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=dtype,
            keep_default_na=keep_default_na,
            compression=_COMPRESSION.get(path.suffix.lower()),  # what pandas infers from a name
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{what} is not a readable CSV ({first}); expected {expected}") from None
    if id_column and id_column in frame.columns:
        check_ids(frame[id_column], path)
    return frame


def check_decoded_size(n_bytes: int, limit: int, what: str) -> None:
    """Refuse to decode more than `limit` bytes (derived from the row's stated size)."""
    if n_bytes > limit:
        raise InputError(
            f"{what} would decode to {n_bytes:,} bytes, more than its stated size allows "
            f"({limit:,}); the file is damaged or crafted. Fix or remove that row"
        )


__all__ = [
    "check_decoded_size",
    "check_id",
    "check_ids",
    "env_seconds",
    "check_regular_file",
    "id_problem",
    "read_bytes",
    "read_table",
    "read_timeout_s",
]
