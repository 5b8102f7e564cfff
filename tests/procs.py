"""Child processes for tests: their environment, and stopping one once it has reached a point."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple


def child_env(*, threads: int | None = 1, **extra: str) -> dict[str, str]:
    """This process's environment for a child: no albumentations update check, OMP_NUM_THREADS
    set to `threads` (one, so that processes sharing 2 cores do not fight; None: inherited), then
    `extra` (e.g. PYTHONUNBUFFERED="1")."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return {**env, **extra}


class Stopped(NamedTuple):
    pid: int
    returncode: int
    stdout: str
    stderr: str


def signal_when(
    cmd: list[str],
    ready: Path,
    *,
    env: dict[str, str],
    timeout_s: float,
    settle_s: float,
    sig: int = signal.SIGTERM,
    group: bool = False,
    cwd: Path | None = None,
    release: Path | None = None,
) -> Stopped:
    """Run `cmd` until `ready` exists (or it ends, or `timeout_s` pass), `settle_s` more, then send
    it `sig` (`group`: to its whole process group) and wait up to `timeout_s` for it to end.

    The command runs in a session of its own, so `os.killpg(stopped.pid, 0)` afterwards tells
    whether any of its processes outlived it. Its output goes to files, not pipes: a command that
    writes much before it is ready never blocks on a full pipe. `release`: a file created right
    after the signal (tests/faultboot.py's MARKER.go), so a paused pool worker, which leaves
    SIGTERM to its parent, finishes its sample and the parent's shutdown is not held up by it."""
    # Read back in text mode, as `text=True` pipes would be: universal newlines, locale encoding.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(settle_s)
            if not group:
                proc.send_signal(sig)
            else:  # a group that has ended already: the caller's checks say so
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            if release is not None:
                release.touch()
            proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:  # it did not end in time: none of it outlives the test
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        err.seek(0)
        return Stopped(proc.pid, proc.returncode, out.read(), err.read())
