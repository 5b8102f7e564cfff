"""scripts/stress_tests.py: failures counted per test, and no hog outlives the script."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from procs import child_env

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stress_tests.py"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is dead, only not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def hog_pids(stdout: str) -> list[int]:
    return [int(p) for p in re.search(r"^hogs: .*pids ([\d ]+)$", stdout, re.M)[1].split()]


def test_failures_are_counted_per_test_and_the_hogs_end_with_the_script(tmp_path):
    (tmp_path / "test_two.py").write_text(
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n"
    )
    cmd = [sys.executable, str(SCRIPT), "test_two.py", "-n", "2", "--hogs", "2", "--logs", "logs"]
    r = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^test_two.py::test_bad +2/2$", r.stdout, re.M), r.stdout
    assert "test_ok" not in r.stdout and "test_two.py: 2" in r.stdout
    assert r.stdout.count("2 tests, 1 failed") == 2
    pids = hog_pids(r.stdout)
    assert len(pids) == 2 and not any(map(alive, pids))

    (tmp_path / "test_two.py").write_text("def test_ok():\n    pass\n")
    r = subprocess.run(
        [*cmd, "--hogs", "1", "-n", "1"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "no failures in 1 run" in r.stdout, r.stdout + r.stderr


def test_sigterm_stops_the_running_tests_and_the_hogs(tmp_path):
    started = tmp_path / "started"
    (tmp_path / "test_waits.py").write_text(
        "import os, pathlib, subprocess, sys, time\n\n"
        "def test_waits():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"    pathlib.Path({str(started)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')\n"
        "    while True:  # until the script stops this run\n"
        "        time.sleep(1)\n"
    )
    cmd = [sys.executable, str(SCRIPT), "test_waits.py", "-n", "3", "--hogs", "1", "--logs", "logs"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not started.exists() and proc.poll() is None:  # the event: the test is running
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "stopped by SIGTERM" in err
    pytest_pid, child_pid = map(int, started.read_text().split())
    assert not alive(pytest_pid)  # pytest, mid-test
    assert not alive(child_pid)  # and a process the test had started
    assert not any(map(alive, hog_pids(out)))
