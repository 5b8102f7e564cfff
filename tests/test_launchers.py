"""Sweeps past one machine: hydra/launcher=ray|slurm|submitit_local and hydra/sweeper=optuna.

The extra (hpa[sweep]) is optional: each test skips without the package it needs, and
`make test` installs every extra. The runs are the smallest trainings there are (test_resnet at
32 px, two training batches), in a child process like a user's command.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from procs import child_env
from tiny_train import tiny as tiny_train

DEMO_PARAMS = {"optimizer.lr", "optimizer.weight_decay", "model.drop_rate", "model.global_pool"}


def tiny(data_root: Path, out: Path) -> list[str]:
    """Overrides for a seconds-long CPU job on the tiny synthetic set (2 folds of 20 images)."""
    return tiny_train(
        data_root,
        out,
        "+trainer.limit_train_batches=2",  # the whole validation set: oof.csv needs every row
        "threads=1",
        n_folds=2,
    )


def run_train(args: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    # timeout: a safety net for a hung run, not a limit a run should come near; a Ray multirun
    # took over 600 s beside busy loops on a loaded 2-core box (scripts/stress_tests.py).
    done = subprocess.run(
        [sys.executable, "-m", "hpa.train", *args],
        cwd=cwd,
        # one OpenMP thread (child_env's default): two jobs at once on a 2-core box
        env=child_env(PYTHONUNBUFFERED="1", HPA_LOG_DIR=str(cwd / "logs")),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def assert_fold_jobs(sweep: Path) -> None:
    """One run folder per job (fold 0 and 1) with metrics.json, and their oof.csv merged."""
    from hpa.runs import read_run

    for job in (0, 1):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert metrics["fold"] == job and 0.0 <= metrics["val/mAP"] <= 1.0
        assert (sweep / str(job) / "oof.csv").is_file()
        # timing, around trainer.fit: 2 batches of 8 of the fold's 20 training images
        timing = metrics["timing"]
        assert timing["train_samples"] == 16 and timing["train_s"] > 0
        assert timing["train_samples_per_s"] == pytest.approx(16 / timing["train_s"], rel=1e-2)
        # and hpa.runs shows that rate as img/s
        assert read_run(sweep / str(job), str(job)).img_s == timing["train_samples_per_s"]
    merged = pd.read_csv(sweep / "oof.csv")
    assert sorted(merged["fold"].unique()) == [0, 1]
    assert len(merged) == 40 and merged["ID"].is_unique  # every image once, from its own fold


def processes_of(folder: Path, text: str) -> list[str]:
    """Processes working in `folder` (Ray's workers inherit the driver's, and rename themselves
    `ray::IDLE`) or naming `text` on their command line (raylet, GCS: Ray's temp folder)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if proc.name != str(os.getpid()) and (cwd == str(folder) or text in args):
            found.append(f"{proc.name} {args}")
    return found


# --- Ray -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_multirun_runs_each_fold_as_a_ray_task_and_merges_oof(tiny_dataset, tmp_path, request):
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    # Ray's sockets live under its temp folder, whose path must stay short (107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="hpa-ray-", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    done = run_train(
        [
            "-m",
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.num_cpus=2",  # a local instance of 2 CPUs: both jobs at once
            "+hydra.launcher.ray.init.object_store_memory=78643200",  # Ray's minimum, 75 MB
            f"+hydra.launcher.ray.init._temp_dir={ray_tmp}",
            "data.fold=0,1",
            *tiny(tiny_dataset, sweep),
        ],
        tmp_path,
    )
    assert "Ray launcher: 2 jobs" in done.stdout + done.stderr
    assert_fold_jobs(sweep)
    # Each job ran in a Ray worker: Hydra's job id there is the launcher's, not a local one.
    for job in (0, 1):
        hydra_cfg = yaml.safe_load((sweep / str(job) / ".hydra" / "hydra.yaml").read_text())
        assert hydra_cfg["hydra"]["job"]["id"] == f"job_id_for_{job}"
        assert hydra_cfg["hydra"]["launcher"]["_target_"].startswith("hydra_plugins.hpa_ray")
        # the configured seed, in every job
        config = yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())
        assert config["seed"] == 42
    # The local instance went with the command: no raylet, GCS or worker of it is left, the
    # moment it returns (the launcher reaps them: test_ray_launcher_reaps_what_ray_leaves).
    assert not processes_of(tmp_path, ray_tmp)


REAPS = """
import subprocess, sys
from pathlib import Path
from hydra_plugins.hpa_ray_launcher.ray_launcher import adopt_orphans, stop_children

ready = Path(sys.argv[1])
before = adopt_orphans()
assert before is not None
# A child that starts a grandchild deaf to SIGTERM and exits: as a raylet leaves its workers.
orphan = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').close(); time.sleep(600)"
)
start = (
    "import subprocess, sys; "
    f"print(subprocess.Popen([sys.executable, '-c', {orphan!r}, {str(ready)!r}], "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"
)
pid = int(subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, check=True).stdout)
while not ready.exists():
    pass
stop_children(before, grace_s=0.2)
print(pid)
"""


def test_ray_launcher_reaps_what_ray_leaves(tmp_path):
    """What the launcher does after ray.shutdown: a process orphaned by a child of the
    launcher's process (a worker whose raylet exited) is stopped, even deaf to SIGTERM, and
    reaped before the launcher returns. In a child process: the subreaper is process-wide."""
    pytest.importorskip("hydra")
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux's child subreaper")
    done = subprocess.run(
        [sys.executable, "-c", REAPS, str(tmp_path / "ready")],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,  # a safety net only: it waits on no clock
    )
    orphan = int(done.stdout.split()[-1])
    assert not Path(f"/proc/{orphan}").exists()  # not running, not even a zombie


def test_ray_launcher_gives_each_job_a_gpu_only_where_the_cluster_has_one():
    pytest.importorskip("ray")
    from omegaconf import OmegaConf

    from hydra_plugins.hpa_ray_launcher.ray_launcher import remote_options

    class FakeRay:
        def __init__(self, gpus):
            self.gpus = gpus

        def cluster_resources(self):
            return {"CPU": 8.0, "GPU": float(self.gpus)}

    remote = OmegaConf.create({"num_cpus": 1, "num_gpus": None, "max_calls": 1})
    assert remote_options(FakeRay(2), remote) == {"num_cpus": 1, "num_gpus": 1, "max_calls": 1}
    assert remote_options(FakeRay(0), remote)["num_gpus"] == 0
    half = OmegaConf.create({"num_cpus": 1, "num_gpus": 0.5})
    assert remote_options(FakeRay(1), half)["num_gpus"] == 0.5


def test_ray_launcher_starts_ray_again_when_its_node_times_out_at_startup():
    from omegaconf import OmegaConf

    from hydra_plugins.hpa_ray_launcher.ray_launcher import start_ray

    class SlowRay:  # the raylet misses Ray's fixed 30 s twice, then registers
        def __init__(self, failures, message="The current node timed out during startup."):
            self.failures, self.message, self.calls = failures, message, []

        def is_initialized(self):
            return False

        def init(self, **options):
            self.calls.append("init")
            if self.calls.count("init") <= self.failures:
                raise Exception(self.message)

        def shutdown(self):
            self.calls.append("shutdown")

    init = OmegaConf.create({"num_cpus": 2, "address": None})
    slow = SlowRay(2)
    assert start_ray(slow, init) is True
    assert slow.calls == ["init", "shutdown", "init", "shutdown", "init"]
    with pytest.raises(Exception, match="timed out during startup"):
        start_ray(SlowRay(3), init)  # three misses: the error is the user's to see
    other = SlowRay(1, "bad option")
    with pytest.raises(Exception, match="bad option"):
        start_ray(other, init)
    assert other.calls == ["init"]  # any other error is not retried


# --- SLURM / submitit ----------------------------------------------------------------------


def test_slurm_launcher_config_composes_with_the_clusters_partition():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    import hpa.train  # noqa: F401  (registers the resolvers train.yaml's hydra settings use)

    with initialize_config_module("hpa.configs", version_base="1.3"):
        cfg = compose(
            "train",
            ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu"  # the user's; null by default
    assert launcher.gpus_per_task == 1 and launcher.timeout_min > 0 and launcher.nodes == 1
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # logs per job


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tiny_dataset, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_train(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "data.fold=0,1",
            *tiny(tiny_dataset, sweep),
        ],
        tmp_path,
    )
    assert_fold_jobs(sweep)
    assert any((sweep / ".submitit").iterdir())  # submitit's job folders: it ran them


# --- Optuna --------------------------------------------------------------------------------


def trial_values(study) -> list[float]:
    import optuna

    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return [t.value for t in study.trials]


@pytest.mark.slow
def test_optuna_search_writes_study_and_best_params_and_resumes(tiny_dataset, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")

    def search(name: str) -> Path:
        # hparams_search=demo_optuna keeps its study in <paths.log_dir>/optuna/demo_optuna.db
        sweep = tmp_path / name
        run_train(
            [
                "-m",
                "hparams_search=demo_optuna",
                "hydra.sweeper.n_trials=2",
                f"paths.log_dir={tmp_path / 'logs'}",
                *tiny(tiny_dataset, sweep),
            ],
            tmp_path,
        )
        return sweep

    storage = f"sqlite:///{tmp_path / 'logs' / 'optuna' / 'demo_optuna.db'}"
    first = search("first")
    study = optuna.load_study(study_name="demo_optuna", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    values = trial_values(study)
    assert len(values) == 2
    # Each trial is one run folder, and its value is the val/mAP train() wrote there.
    mAPs = [json.loads((first / str(i) / "metrics.json").read_text())["val/mAP"] for i in range(2)]
    assert sorted(values) == pytest.approx(sorted(mAPs))
    best = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == DEMO_PARAMS
    assert best["best_value"] == pytest.approx(max(values))

    # The same command again (e.g. after a kill) continues the study in that file.
    second = search("second")
    study = optuna.load_study(study_name="demo_optuna", storage=storage)
    values = trial_values(study)
    assert len(values) == 4
    best = yaml.safe_load((second / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert not any(math.isnan(v) for v in values)


def test_bare_optuna_sweeper_maximises(tmp_path):
    """`hydra/sweeper=optuna` alone maximises (the plugin's own default is to minimise)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    args = ["hydra/sweeper=optuna", "--cfg", "hydra", "-p", "hydra.sweeper.direction"]
    assert run_train(args, tmp_path).stdout.strip().endswith("maximize")
    minimise = ["hydra/sweeper=optuna", "hydra.sweeper.direction=minimize", *args[1:]]
    assert run_train(minimise, tmp_path).stdout.strip().endswith("minimize")


def test_a_launcher_or_sweeper_without_its_package_names_the_extra(monkeypatch):
    import importlib.util

    from hpa.train import _missing_extra

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # nothing installed
    for choice in ("hydra/launcher=ray", "hydra/launcher=slurm", "hparams_search=demo_optuna"):
        assert _missing_extra(["-m", choice, "data.fold=0,1"]) == (
            f"{choice} needs the sweep extra: pip install 'hpa[sweep]'"
        )
    assert _missing_extra(["-m", "data.fold=0,1"]) is None
