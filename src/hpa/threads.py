"""Torch threads that do not fight: as many intra-op threads as this process has cores to itself.

torch starts one OpenMP thread per core of the machine, and OpenMP threads busy-wait for each
other. When DataLoader workers, other processes or a container's CPU quota leave fewer cores
than that, the threads wait on each other instead of computing: on a busy 2-core box training
ran 4.5x and prediction 2.5x slower than with one thread (same results to 1e-6).

`configure_threads(threads, workers)` picks, for the calling process:

1. `threads` when set (the `threads=N` key of train, prepare, bench and predict);
2. else `OMP_NUM_THREADS` when the environment sets it to a positive number (the standard knob,
   which torch itself already honours);
3. else the cores this process may run on (`os.sched_getaffinity`, capped by a cgroup CPU quota:
   cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, as Docker's `--cpus` and Kubernetes limits set
   it) shared by `processes` (e.g. DDP ranks on CPU), minus the DataLoader `workers` each
   process keeps busy; at least 1.

It sets torch's intra-op threads and `OMP_NUM_THREADS`/`MKL_NUM_THREADS` for child processes
started later (DDP ranks, spawned workers), logs one line and returns the count.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hpa.errors import InputError

log = logging.getLogger(__name__)

# Read by child processes that start a fresh OpenMP / MKL runtime.
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Where the CPU quota lives (module attributes, so that tests can point them at a fake tree).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# The OMP_NUM_THREADS this process set itself: not a user's choice to honour on a later call.
_set_here: str | None = None


def affinity_cpus() -> int:
    """Cores the scheduler lets this process run on (all of them where there is no affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _ancestors(root: Path, relative: str) -> list[Path]:
    """root/a/b, root/a, root: a limit set on any level above applies too."""
    parts = [p for p in relative.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(folder: Path) -> float | None:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD" or "max PERIOD" (no limit)."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    fields = text.split()
    try:
        quota, period = fields[0], int(fields[1]) if len(fields) > 1 else 100_000
        return None if quota == "max" or period <= 0 else int(quota) / period
    except ValueError:
        return None


def _v1_limit(folder: Path) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 is no limit."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        quota_us, period_us = int(quota or "-1"), int(period or "100000")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cgroup_cpus() -> float | None:
    """The tightest CPU quota (in cores, e.g. 1.5) on this process's cgroup or any parent; None
    when there is none. Checks both the process's own path (/proc/self/cgroup) and the mount's
    root, which is the container's own cgroup when it has a cgroup namespace."""
    limits = []
    lines = (_read(PROC_CGROUP) or "").splitlines()
    v2_paths = {"/"} | {ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")}
    for relative in v2_paths:
        limits += [_v2_limit(folder) for folder in _ancestors(CGROUP_ROOT, relative)]
    v1_paths = {"/"}
    for ln in lines:
        fields = ln.split(":", 2)
        if len(fields) == 3 and "cpu" in fields[1].split(","):
            v1_paths.add(fields[2])
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        mount = CGROUP_ROOT / name
        if mount.is_dir():
            for relative in v1_paths:
                limits += [_v1_limit(folder) for folder in _ancestors(mount, relative)]
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def available_cpus() -> int:
    """Cores this process can use: its CPU affinity, capped by a cgroup quota (rounded up)."""
    cpus = affinity_cpus()
    quota = cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return cpus


def choose_threads(cpus: int, workers: int = 0, processes: int = 1) -> int:
    """Intra-op threads per process: its share of `cpus` minus its busy `workers`, at least 1."""
    return max(1, cpus // max(1, processes) - max(0, workers))


def _check_requested(requested: Any) -> int | None:
    if requested is None:
        return None
    if isinstance(requested, int) and not isinstance(requested, bool) and requested >= 1:
        return requested
    raise InputError(
        f"threads={requested!r}: expected an integer >= 1 (torch threads per process), "
        "or null to use the free cores"
    )


def _env_threads() -> int | None:
    """A positive OMP_NUM_THREADS set by the user (or a parent process), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value == _set_here or not value.isdigit() or int(value) < 1:
        return None
    return int(value)


def configure_threads(requested: Any = None, workers: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads (and the env of child processes); return how many.

    `requested`: the `threads` config value (None = automatic). `workers`: DataLoader (or pool)
    worker processes this process runs. `processes`: processes sharing this machine's cores,
    each calling this (DDP ranks).
    """
    import torch

    global _set_here
    threads = _check_requested(requested)
    if threads is not None:
        why = "threads setting"
    elif (threads := _env_threads()) is not None:
        why = "OMP_NUM_THREADS"
    else:
        cpus = available_cpus()
        threads = choose_threads(cpus, workers, processes)
        share = f" shared by {processes} processes" if processes > 1 else ""
        why = f"{cpus} cores available{share}, {workers} worker processes"
    for name in ENV_VARS:
        os.environ[name] = str(threads)
    _set_here = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    log.info("threads: %d torch threads (%s)", threads, why)
    return threads


def training_processes(trainer: Any) -> int:
    """How many training processes (DDP ranks) share this machine's cores: trainer.devices."""
    devices = trainer.get("devices", 1) if trainer is not None else 1
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int):
        if devices > 0:
            return devices
        devices = "auto"  # -1: all devices, as "auto"
    if not isinstance(devices, str):  # a list of device ids
        try:
            return max(1, len(devices))
        except TypeError:
            return 1
    text = devices.strip()
    if text.isdigit():
        return max(1, int(text))
    if "," in text:  # "0,1": device ids
        return max(1, len([t for t in text.split(",") if t.strip()]))
    if text in ("auto", "-1") and str(trainer.get("accelerator", "auto")) in (
        "auto",
        "gpu",
        "cuda",
    ):
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def configure_training_threads(cfg: Any) -> int:
    """configure_threads for a composed train config: `threads`, `data.num_workers`, and the
    DDP ranks of `trainer.devices` that share the machine."""
    data = cfg.get("data") or {}
    return configure_threads(
        cfg.get("threads"),
        workers=int(data.get("num_workers", 0) or 0),
        processes=training_processes(cfg.get("trainer")),
    )


__all__ = [
    "available_cpus",
    "cgroup_cpus",
    "choose_threads",
    "configure_threads",
    "configure_training_threads",
    "training_processes",
]
