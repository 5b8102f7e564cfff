"""The launcher itself; its config is hpa's configs/hydra/launcher/ray.yaml."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        try:
            import ray
        except ImportError:
            raise ImportError("hydra/launcher=ray needs Ray: pip install 'hpa[sweep]'") from None
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Ray launcher: {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")
        before = adopt_orphans()  # Ray's workers, once their raylet is gone, come to us
        started = start_ray(ray, self.ray_cfg.init)
        remote = remote_options(ray, self.ray_cfg.remote)
        run = ray.remote(**remote)(_run_job) if remote else ray.remote(_run_job)
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                # A scheduler's job id is not known here; the job number is.
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
            runs.append(
                run.remote(
                    self.hydra_context, sweep_config, self.task_function, Singleton.get_state()
                )
            )
        try:
            return [ray.get(r) for r in runs]
        finally:
            # Stop what this started: a local instance and its workers (from a cluster, only
            # disconnect). A sweeper's next batch of jobs starts it again.
            if started:
                stop_ray(ray, before)


def start_ray(ray: Any, init_cfg: DictConfig) -> bool:
    """Join the running Ray (already initialised in this process, or `init.address`), or start
    a local instance; True when this called ray.init. Null options are left out: joining a
    cluster refuses num_cpus and the like."""
    if ray.is_initialized():
        log.info("Ray is already running")
        return False
    options = {
        k: v for k, v in OmegaConf.to_container(init_cfg, resolve=True).items() if v is not None
    }
    log.info(f"ray.init({options})")
    for attempt in range(1, STARTS + 1):
        try:
            ray.init(**options)
            return True
        except Exception as err:
            # Ray gives its raylet a fixed 30 s to register: on a busy machine it can take
            # longer, and a second start usually makes it. Anything else is not retried.
            if "timed out during startup" not in str(err) or attempt == STARTS:
                raise
            log.warning(f"Ray did not start in time ({err}); starting it again")
            ray.shutdown()
    raise AssertionError("unreachable")


STARTS = 3  # tries to start a local instance


def stop_ray(ray: Any, before: set[int] | None) -> None:
    """Shut the local instance down and return only once none of its processes is left.

    ray.shutdown stops the raylet and GCS; the raylet's workers (`ray::IDLE`) notice on their
    own, a moment later, or on a busy machine much later. Adopted by this process (see
    adopt_orphans), they are stopped and reaped here, so that none outlives the command."""
    if "wait_for_processes" in inspect.signature(ray.shutdown).parameters:  # Ray >= 2.50
        ray.shutdown(wait_for_processes=True)
    else:
        ray.shutdown()
    if before is not None:
        stop_children(before)


def adopt_orphans() -> set[int] | None:
    """Make this process the one that inherits its descendants' orphans (Linux's child
    subreaper), as init would otherwise: a Ray worker whose raylet has exited becomes a child
    of ours. Returns the children this process has now (None where that is not possible)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return children()


_PR_SET_CHILD_SUBREAPER = 36  # from <sys/prctl.h>


def children() -> set[int]:
    """The pids of this process's children, zombies included (from /proc)."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(fields[1]) == me:
            found.add(int(stat.parent.name))
    return found


def stop_children(before: set[int], grace_s: float = 10.0) -> None:
    """SIGTERM each child not in `before`, SIGKILL those still there after `grace_s`, and reap
    them all; children they leave behind come to us too, and go the same way."""
    deadline = time.monotonic() + grace_s
    termed: set[int] = set()
    while left := children() - before:
        late = time.monotonic() > deadline
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    continue  # it had exited: now reaped
            if pid not in termed or late:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
                termed.add(pid)
        time.sleep(0.05)
    if termed:
        log.info(f"Ray launcher: stopped {len(termed)} Ray process(es) left after shutdown")


def remote_options(ray: Any, remote_cfg: DictConfig) -> dict[str, Any]:
    """ray.remote options; num_gpus null: one GPU per job if the cluster has any, else none."""
    options = {
        k: v for k, v in OmegaConf.to_container(remote_cfg, resolve=True).items() if v is not None
    }
    if "num_gpus" in remote_cfg and remote_cfg.num_gpus is None:
        options["num_gpus"] = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return options


def _run_job(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
