"""User-facing errors: bad input ends with a short message and exit status 2, no traceback."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# The errnos of a full disk (EDQUOT: a full quota), as OSError reports them.
NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

# What torch's DataLoader puts before an exception it re-raises from a worker process.
_WORKER_MARK = "Original Traceback (most recent call last):"


class InputError(Exception):
    """Bad input from the user (file, value, config): the message names it and says what to do."""


def one_line(err: BaseException) -> str:
    """The user's message of an error, also when a DataLoader worker wrapped it in its traceback.

    torch re-raises a worker's exception as the same type with "Caught X in DataLoader worker
    process N. Original Traceback ... X: message" as its text: the message is the last line.
    """
    text = str(err)
    if _WORKER_MARK in text:
        last = text.rstrip().splitlines()[-1]
        name = type(err).__name__
        for prefix in (f"{type(err).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix) :]
        return last
    return text


def _end_progress_bars() -> None:
    from hpa.signals import close_progress_bars

    close_progress_bars()


def quiet_broken_pipe() -> None:
    """The reader of stdout went away (`python -m hpa.X --help | head`): stop writing, exit as a
    SIGPIPE-killed Unix tool does (141), no traceback. stdout is pointed at /dev/null so that the
    interpreter's final flush does not print "Exception ignored ... BrokenPipeError"."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(128 + 13)


# What SIGTERM says outside a command's own stopping point: every file hpa writes is written
# whole (hpa.fsio) or resumed (caches, predictions, checkpoints), so the rerun goes on.
STOPPED_HINT = "what was written is whole; run the same command again to go on"


def exit_on_input_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point: an `InputError`, or a disk that filled up, prints `error: ...` and
    exits with status 2; a closed stdout pipe exits quietly (quiet_broken_pipe); SIGTERM, from
    the first line to the last, ends in one line and exit 143 (hpa.signals.graceful_sigterm;
    a command's own phases name their own way to resume inside it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hpa.signals import graceful_sigterm

        try:
            with graceful_sigterm(STOPPED_HINT):
                return fn(*args, **kwargs)
        except InputError as err:
            _end_progress_bars()
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        except BrokenPipeError:
            quiet_broken_pipe()
        except OSError as err:
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and err.filename:
                # A read-only mount (Kaggle's /kaggle/input) or a folder of someone else's.
                _end_progress_bars()
                print(
                    f"error: cannot write or read {err.filename} ({err.strerror}); point the "
                    "command at a location you may write (for caches: data.cache_dir=DIR)",
                    file=sys.stderr,
                )
                sys.exit(2)
            if err.errno not in NO_SPACE:
                raise
            _end_progress_bars()
            where = f" writing {err.filename}" if err.filename else ""
            print(f"error: no space left on the disk{where}; free some space", file=sys.stderr)
            sys.exit(2)

    return wrapper
