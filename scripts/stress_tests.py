"""Run chosen tests N times with a busy loop on every core; print the failures per test.

    .venv/bin/python scripts/stress_tests.py tests/test_external_download.py -n 3
    .venv/bin/python scripts/stress_tests.py tests/test_train.py::test_ddp_two_processes_write_one_output \
        tests/test_launchers.py -n 5 --hogs 4 --pytest-args="-k ray"

A test that passes here on every run does not depend on how fast the machine is. The hogs are
plain processes (`while True: pass`) started before the first run and stopped when this script
ends, however it ends: normally, on an error, on Ctrl-C or SIGTERM (they are also SIGKILLed by
the kernel should this script itself be SIGKILLed). Each run's pytest output stays in
LOGS/run-K.log (--logs, else a new folder under /tmp, printed). Exit status: 0 when every run
passed, 1 when any failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

# A hog: SIGKILLed by the kernel when this script dies, whatever kills it (hpa.signals).
HOG = "from hpa.signals import die_with_parent; die_with_parent({ppid})\nwhile True: pass\n"


class Stop(BaseException):
    """SIGTERM or SIGINT arrived: unwind through the `finally` blocks that stop the hogs."""


def _stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def start_hogs(count: int) -> list[subprocess.Popen]:
    """`count` busy-loop processes, each in a session of its own (a Ctrl-C at the terminal is
    this script's to handle, not theirs)."""
    code = HOG.format(ppid=os.getpid())
    return [
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True) for _ in range(count)
    ]


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each process (a hog ignores SIGTERM) and reap it: none outlives this call."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def failures_of(junit: Path) -> tuple[list[str], int]:
    """(node ids that failed or errored, number of tests run) from a pytest JUnit XML report."""
    if not junit.exists():
        return [], 0
    failed, total = [], 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").split(".")
            # classname "tests.test_x" or "tests.test_x.TestClass" -> tests/test_x.py[::TestClass]
            file = "/".join(module) + ".py" if module else "?"
            for i in range(len(module), 0, -1):
                if Path(*module[:i]).with_suffix(".py").exists():
                    file = "/".join(module[:i]) + ".py" + "".join(f"::{c}" for c in module[i:])
                    break
            failed.append(f"{file}::{case.get('name')}")
    return failed, total


def run_pytest(
    tests: list[str], pytest_args: list[str], junit: Path, log: Path, env: dict[str, str]
) -> int:
    cmd = [sys.executable, "-m", "pytest", *tests, *pytest_args, f"--junitxml={junit}"]
    with log.open("w") as out:
        # A process group of its own: stopped, pytest goes with what its tests started.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            return proc.wait()
        finally:
            if proc.poll() is None:  # stopped meanwhile: SIGTERM, then SIGKILL, to the group
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            _signal_group(proc.pid, signal.SIGKILL)  # what a test left running, too
            proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing of it is left
        os.killpg(pgid, sig)


def report(counts: Counter[str], crashed: list[int], runs: int) -> str:
    lines = []
    if counts:
        width = max(len(t) for t in counts)
        lines.append(f"{'test'.ljust(width)}  failed")
        by_file = Counter()
        for test, n in sorted(counts.items()):
            lines.append(f"{test.ljust(width)}  {n}/{runs}")
            by_file[test.split("::")[0]] += n
        lines.append("")
        lines.append("failures per file:")
        lines += [f"  {file}: {n}" for file, n in sorted(by_file.items())]
    for run in crashed:
        lines.append(f"run {run}: pytest failed without a failing test (see its log)")
    if not counts and not crashed:
        lines.append(f"no failures in {runs} run{'s' * (runs > 1)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="+", help="test files or node ids, as pytest takes them")
    parser.add_argument("-n", "--runs", type=int, default=3, help="how many times (default 3)")
    parser.add_argument(
        "--hogs",
        type=int,
        default=os.cpu_count() or 1,
        help="busy-loop processes (default: one per core, %(default)s here)",
    )
    parser.add_argument(
        "--pytest-args",
        default="-q -p no:cacheprovider",
        help='extra pytest arguments, one string (default "%(default)s")',
    )
    parser.add_argument("--logs", type=Path, help="folder for each run's pytest log")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.hogs < 0:
        parser.error(f"need --runs >= 1 and --hogs >= 0, got {args.runs} and {args.hogs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    for name in (signal.SIGTERM, signal.SIGINT):
        signal.signal(name, _stop)
    hogs: list[subprocess.Popen] = []
    counts: Counter[str] = Counter()
    crashed: list[int] = []
    logs = args.logs or Path(tempfile.mkdtemp(prefix="hpa-stress-"))
    logs.mkdir(parents=True, exist_ok=True)
    try:
        hogs = start_hogs(args.hogs)
        print(f"hogs: {args.hogs} busy loops, pids {' '.join(str(h.pid) for h in hogs)}")
        print(f"logs: {logs}", flush=True)
        for run in range(1, args.runs + 1):
            junit, log = logs / f"run-{run}.xml", logs / f"run-{run}.log"
            junit.unlink(missing_ok=True)  # a report left by an earlier use of --logs
            started = time.monotonic()
            code = run_pytest(args.tests, shlex.split(args.pytest_args), junit, log, env)
            minutes = (time.monotonic() - started) / 60
            failed, total = failures_of(junit)
            counts.update(failed)
            if code != 0 and not failed:
                crashed.append(run)
            print(
                f"run {run}/{args.runs}: {total} tests, {len(failed)} failed, pytest exit {code}, "
                f"{minutes:.1f} min",
                flush=True,
            )
    except Stop as stop:
        print(f"stopped by {stop.args[0]}; the hogs are stopped too", file=sys.stderr)
        return 128 + signal.Signals[stop.args[0]].value
    finally:
        for name in (signal.SIGTERM, signal.SIGINT):  # nothing interrupts the clean-up
            signal.signal(name, signal.SIG_IGN)
        stop_all(hogs)
    print(report(counts, crashed, args.runs))
    return 1 if counts or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
