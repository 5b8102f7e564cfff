"""hpa.threads: torch intra-op threads = the cores this process may use - its workers (or threads=N)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpa import threads
from hpa.errors import InputError
from hpa.threads import (
    available_cpus,
    choose_threads,
    configure_threads,
    configure_training_threads,
    training_processes,
)
from tiny_train import tiny

ENV = {k: v for k, v in os.environ.items() if k not in threads.ENV_VARS}
ENV["NO_ALBUMENTATIONS_UPDATE"] = "1"


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """8 cores of affinity, an empty cgroup tree under tmp_path, no OMP_NUM_THREADS; torch's
    thread count is put back afterwards."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(threads, "PROC_CGROUP", proc)
    monkeypatch.setattr(threads, "_set_here", None)
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield root, proc
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cpus", "workers", "processes", "expected"),
    [
        (2, 1, 1, 1),  # the demo on a 2-core box: one loader worker leaves one core
        (2, 0, 1, 2),
        (8, 2, 1, 6),
        (8, 2, 2, 2),  # two DDP ranks share 8 cores, each with 2 workers
        (2, 4, 1, 1),  # more workers than cores: still one thread
        (1, 0, 1, 1),
        (3, 0, 2, 1),
    ],
)
def test_threads_are_the_share_of_cores_minus_workers(cpus, workers, processes, expected):
    assert choose_threads(cpus, workers, processes) == expected


def test_available_cpus_follow_affinity_and_cgroup_quota(fake_machine):
    root, proc = fake_machine
    assert available_cpus() == 8  # no quota: the affinity
    (root / "cpu.max").write_text("max 100000\n")
    assert available_cpus() == 8
    (root / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    assert available_cpus() == 2  # rounded up
    (root / "cpu.max").write_text("1600000 100000\n")  # a quota above the affinity
    assert available_cpus() == 8
    (root / "cpu.max").unlink()
    # Our own cgroup (/proc/self/cgroup) and its parents: the tightest limit counts.
    proc.write_text("0::/jobs/job1\n")
    (root / "jobs" / "job1").mkdir(parents=True)
    (root / "jobs" / "job1" / "cpu.max").write_text("max 100000\n")
    (root / "jobs" / "cpu.max").write_text("300000 100000\n")
    assert available_cpus() == 3


def test_available_cpus_read_cgroup_v1_quota(fake_machine):
    root, proc = fake_machine
    proc.write_text("4:cpu,cpuacct:/\n3:memory:/\n")
    folder = root / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus() == 8
    (folder / "cpu.cfs_quota_us").write_text("200000\n")
    assert available_cpus() == 2


def test_configure_sets_torch_and_child_env(fake_machine):
    root, _ = fake_machine
    (root / "cpu.max").write_text("400000 100000\n")  # 4 of the 8 cores
    assert configure_threads(None, workers=1) == 3
    assert torch.get_num_threads() == 3
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"
    # Its own env setting is not mistaken for the user's on the next call.
    assert configure_threads(None, workers=0) == 4


def test_an_explicit_setting_wins(fake_machine, monkeypatch):
    assert configure_threads(5, workers=7) == 5 and torch.get_num_threads() == 5
    assert os.environ["OMP_NUM_THREADS"] == "5"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's environment: honoured when auto
    monkeypatch.setattr(threads, "_set_here", None)
    assert configure_threads(None, workers=0) == 2
    monkeypatch.setattr(threads, "_set_here", None)  # as in a process started with it set
    assert configure_threads(3, workers=0) == 3  # threads=N beats OMP_NUM_THREADS
    for bad in (0, -1, "4", 2.5, True):
        with pytest.raises(InputError, match=r"threads=.*expected an integer >= 1"):
            configure_threads(bad)


def test_training_config_counts_workers_and_ranks(fake_machine):
    from hpa.cli import compose

    cfg = compose("train", ["data.num_workers=2", "trainer.devices=2", "paths.output_dir=x"])
    assert configure_training_threads(cfg) == 2  # 8 cores / 2 ranks - 2 workers
    cfg = compose("train", ["data.num_workers=2", "++threads=7", "paths.output_dir=x"])
    assert configure_training_threads(cfg) == 7
    cpu = {"accelerator": "cpu"}
    assert training_processes({**cpu, "devices": 1}) == 1
    assert training_processes({**cpu, "devices": "auto"}) == 1
    assert training_processes({**cpu, "devices": 3}) == 3
    assert training_processes({"accelerator": "gpu", "devices": [0, 1]}) == 2
    assert training_processes({"accelerator": "gpu", "devices": "0,1,2"}) == 3


CHILD = """
import subprocess, sys
import torch
from hpa.threads import available_cpus, configure_threads
for workers in (0, 1):
    got = configure_threads(None, workers=workers)
    print(available_cpus(), workers, got, torch.get_num_threads())
child = "import torch; print(torch.get_num_threads())"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout)
"""


def test_torch_in_a_fresh_process_and_its_children_use_the_choice():
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *calls, child = done.stdout.split("\n")[:3]
    for line in calls:
        cpus, workers, got, torch_threads = map(int, line.split())
        assert got == torch_threads == max(1, cpus - workers), done.stdout
    assert int(child) == got  # a child process (DDP rank, spawned worker) inherits it via env


def run_module(args, cwd: Path):
    return subprocess.run(
        [sys.executable, "-m", *args], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_train_and_prepare_apply_the_setting(tiny_dataset, tmp_path):
    done = run_module(
        ["hpa.train", "debug=fast_dev_run", "++threads=3", *tiny(tiny_dataset, tmp_path / "r")],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "threads: 3 torch threads (threads setting)" in done.stdout + done.stderr
    done = run_module(
        [
            "hpa.prepare",
            f"data.root={tiny_dataset}",
            "data.image_size=32",
            f"data.cache_dir={tmp_path / 'cache'}",
            "prepare.workers=1",
            "++threads=2",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "threads: 2 torch threads (threads setting)" in done.stdout + done.stderr
