"""hpa.signals: SIGTERM becomes one line and exit 143 after cleanup; workers die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpa.signals import EXIT_SIGTERM, graceful_sigterm
from procs import child_env

ENV = child_env(threads=None, PYTHONUNBUFFERED="1")


def start(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def test_sigterm_runs_cleanup_then_exits_143_with_one_line():
    proc = start(
        """
        import time
        from hpa.signals import graceful_sigterm

        with graceful_sigterm("run the same command to go on"):
            try:
                print("ready", flush=True)
                try:
                    time.sleep(60)
                except Exception:
                    print("swallowed by except Exception", flush=True)
            finally:
                print("cleanup ran", flush=True)
        """
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_SIGTERM == 143
    assert err == "stopped by SIGTERM; run the same command to go on\n"
    assert out == "cleanup ran\n"


def test_the_previous_handler_is_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with graceful_sigterm("hint"):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_die_with_a_sigkilled_parent():
    """Without die_with_parent, the workers of a SIGKILLed process wait for work forever."""
    proc = start(
        """
        import os, time
        from concurrent.futures import ProcessPoolExecutor
        from hpa.signals import die_with_parent

        pool = ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),))
        list(pool.map(abs, range(8)))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    assert proc.stdout.readline() == "ready\n"
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60  # a bound for the kernel's SIGKILL, not a measured time
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {p for p in workers if _alive(p)}
    for pid in left:  # ours: started by this test
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not left, "workers outlived their SIGKILLed parent"
