"""Being stopped: SIGTERM ends a command with one line saying how to go on, and no orphans.

`graceful_sigterm(hint)` turns SIGTERM (what `kill`, SLURM, Kubernetes and Kaggle send first)
into an exception raised in the main thread, so that `finally` blocks and context managers run as
for Ctrl-C: a process pool waits for the samples in flight, finished rows are flushed, temp
files are removed. The command then ends with `stopped by SIGTERM; <hint>` and exit status 143
(128 + 15, what a shell reports for a process SIGTERM ended), never a traceback.

`die_with_parent` is for worker initializers: a worker dies as soon as the process that started
it does, even when that one was SIGKILLed and had no chance to shut its pool down (Linux only;
elsewhere only its SIGTERM part applies).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM. A BaseException, like KeyboardInterrupt, so that
    `except Exception` handlers do not swallow it."""


@contextlib.contextmanager
def graceful_sigterm(resume_hint: str) -> Iterator[None]:
    """Inside: SIGTERM raises `Terminated`; leaving on it prints one line and exits 143.

    A second SIGTERM while the first one's cleanup runs is ignored: the cleanup (a pool waiting
    for its running tasks) is what keeps the finished work. SIGKILL remains for a hung process.
    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum, frame):
        nonlocal stopping
        if _lightning and _lightning[-1]():
            return  # Lightning noted it first: it saves last.ckpt and stops at the next batch
        if stopping:
            return
        stopping = True
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        close_progress_bars()
        print(f"stopped by SIGTERM; {resume_hint}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


# Inside Trainer.fit: whether Lightning's own handler has seen the SIGTERM (it runs ours after
# its own notifier). Then training stops at the next batch with a resumable checkpoint; before
# Lightning takes over (data set-up inside fit), ours stops the command as anywhere else.
_lightning: list[Callable[[], bool]] = []


@contextlib.contextmanager
def lightning_first(received: Callable[[], bool]) -> Iterator[None]:
    """While inside, SIGTERM is Lightning's to act on once `received()` (its notifier ran)."""
    _lightning.append(received)
    try:
        yield
    finally:
        _lightning.pop()


def close_progress_bars() -> None:
    """Close tqdm bars the unwinding left open: else they redraw at exit, after our line."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)
    for bar in list(getattr(tqdm, "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def die_with_parent(parent_pid: int | None = None) -> None:
    """Worker initializer: this process is SIGKILLed when its parent dies, and ignores SIGTERM.

    Pass the parent's pid (`initargs=(os.getpid(),)`) to also catch a parent that died before
    this ran. SIGTERM is ignored because stopping is the parent's call: a SIGTERM sent to the
    whole process group (systemd, `kill -- -PGID`) must not kill a worker mid-sample while the
    parent, stopping gracefully, waits for that sample; the workers exit when it shuts its pool.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc (an unusual build): keep working
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone: nobody will read our results


__all__ = [
    "EXIT_SIGTERM",
    "Terminated",
    "close_progress_bars",
    "die_with_parent",
    "graceful_sigterm",
    "lightning_first",
]
