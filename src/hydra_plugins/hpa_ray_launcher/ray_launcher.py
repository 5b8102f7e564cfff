"""The launcher itself; its config is hpa's configs/hydra/launcher/ray.yaml."""

from __future__ import annotations

import logging
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
                ray.shutdown()


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
    ray.init(**options)
    return True


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
