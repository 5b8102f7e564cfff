"""Run `python -m MODULE ARGS...` with a pause point, for tests/test_faults.py.

    python tests/faultboot.py PAUSE MARKER [--fake-pip] -- MODULE ARGS...

PAUSE is `package.module:Name.attr@N` (or `-` for none): the N-th call to it in a process (the
first process to get there, a pool worker too) returns, then that process writes its pid to
MARKER and sleeps until MARKER + ".go" exists (at most 600 s: a safety net for a test that died,
never a delay a test relies on). So the test stops a command mid-run, with some
output already written, at a point it knows, instead of guessing a delay. `--fake-pip` replaces
hpa.kaggle's pip downloads with minimal wheels of the installed versions: no network.
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path


def install_pause(spec: str, marker: Path) -> None:
    spec, _, nth = spec.partition("@")
    module_name, _, qualname = spec.partition(":")
    calls = {"pid": None, "n": 0}
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def paused(*args, **kwargs):
        result = original(*args, **kwargs)
        if calls["pid"] != os.getpid():  # a forked worker counts its own calls
            calls.update(pid=os.getpid(), n=0)
        calls["n"] += 1
        if calls["n"] != int(nth or 1):
            return result
        try:  # O_EXCL: one process pauses, the others (pool workers) carry on
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return result
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        go, deadline = Path(f"{marker}.go"), time.monotonic() + 600
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # a SIGTERM handler runs here
        return result

    setattr(owner, name, paused)


def install_fake_pip() -> None:
    from hpa.kaggle import wheels

    class FakePip:
        """A wheel of the installed version (which meets the requirement), without dependencies."""

        def __call__(self, req, dest: Path) -> Path:
            version = metadata.version(req.name)
            dist = req.name.replace("-", "_")
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / f"{dist}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(path, "w") as zf:
                info = f"{dist}-{version}.dist-info"
                zf.writestr(
                    f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {req.name}\nVersion: {version}\n",
                )
                zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
                zf.writestr(f"{info}/RECORD", "")
            return path

    wheels.PipFetcher = FakePip


def main() -> None:
    split = sys.argv.index("--")
    options, (module, *args) = sys.argv[1:split], sys.argv[split + 1 :]
    pause, marker, *flags = options
    if "--fake-pip" in flags:
        install_fake_pip()
    if pause != "-":
        install_pause(pause, Path(marker))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
