"""Training never loses a user's data: no generating over a user's folder, last.ckpt is the last
epoch, SIGTERM and full disks end in one line with a resumable state, history survives resumes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpa.errors import InputError, one_line
from procs import child_env, signal_when
from tiny_train import tiny

FAULTBOOT = Path(__file__).with_name("faultboot.py")  # runs a command with a pause point

HELPERS = Path(__file__).resolve().parent / "helpers"


def env():
    return child_env(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]),
    )


def run(args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "hpa.train", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", 600),
        **kwargs,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# 1. Data loss: a data.root without train.csv was deleted and replaced with synthetic data.
@pytest.mark.parametrize("layout", ["renamed_csv", "missing_root"])
def test_user_data_root_without_table_is_an_error_and_untouched(layout, tmp_path):
    root = tmp_path / "my data"
    if layout == "renamed_csv":
        (root / "train").mkdir(parents=True)
        (root / "Train.csv").write_text("ID,Label\na,0\n")
        (root / "train" / "a_red.png").write_bytes(b"precious")
        (root / "notes.txt").write_text("my notes")
    before = snapshot(root) if root.exists() else None
    # The default data group (the demo, which generates on first use), only data.root set.
    r = run([f"data.root={root}", f"paths.output_dir={tmp_path}/o"], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "train.csv" in r.stderr and "Traceback" not in r.stderr
    assert len(error_lines(r.stderr)) == 1
    if before is None:
        assert not root.exists()  # nothing generated at a mistyped path
    else:
        assert snapshot(root) == before


def test_generator_never_writes_into_a_folder_it_did_not_make(tmp_path):
    from hpa.demo import ensure_synthetic_data
    from hpa.synthetic.generator import SyntheticConfig, generate_atomically, generate_dataset

    cfg = SyntheticConfig(n_images=3, image_size=64, cells_per_image=(1, 2), workers=1)
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    for make in (generate_dataset, generate_atomically):
        with pytest.raises(InputError, match=r"hpa.synthetic did not write \(keep.txt\)"):
            make(cfg, user, progress=False)
    assert snapshot(user) == {"keep.txt": hashlib.sha1(b"mine").hexdigest()}
    # The demo's own folder, non-empty without the generator's marker: refused too.
    with pytest.raises(InputError, match="did not make"):
        ensure_synthetic_data(user, "train.csv", {"root": str(user), "n_images": 3})
    # Its own earlier output is replaced; an absent folder is created.
    own = generate_atomically(cfg, tmp_path / "own", progress=False)
    assert (own / "train.csv").is_file()
    generate_atomically(SyntheticConfig(**{**cfg.__dict__, "seed": 5}), own, progress=False)
    assert (own / "train.csv").is_file() and len(list((own / "train").iterdir())) == 12
    # The demo generates only into its own folder: another root is an error naming the table.
    with pytest.raises(InputError, match="train.csv"):
        ensure_synthetic_data(tmp_path / "typo", "train.csv", {"root": str(own), "n_images": 3})
    assert not (tmp_path / "typo").exists()


# 2. last.ckpt is the latest epoch even when the monitored metric only gets worse; a killed run
# resumes from it, and the CSV history keeps the epochs logged before the kill.
def test_last_ckpt_is_the_latest_epoch_and_resume_continues_from_it(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    worse = [
        "+callbacks.worse._target_=worse_metric.WorseMetric",
        "callbacks.checkpoint.monitor=test/worse",
        "callbacks.checkpoint.mode=max",
    ]
    r = run(tiny(tiny_dataset, out, "trainer.max_epochs=3", *worse), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    best, last = ckpt(out / "checkpoints" / "best.ckpt"), ckpt(out / "checkpoints" / "last.ckpt")
    assert best["epoch"] == 0  # the metric never improved after epoch 0
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 0  # the best's, not the last
    assert last["epoch"] == 2 and last["global_step"] > best["global_step"]
    steps_per_epoch = best["global_step"]
    history = pd.read_csv(out / "csv" / "metrics.csv")

    # "Kill" after epoch 2 and resume for 2 more: it must start from epoch 2's end, not epoch 0.
    (out / "metrics.json").unlink()  # a killed run has no metrics.json
    r = run(
        tiny(
            tiny_dataset,
            out,
            "trainer.max_epochs=5",
            *worse,
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        ),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"(epoch 2, step {3 * steps_per_epoch};" in r.stdout + r.stderr
    last = ckpt(out / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 4 and last["global_step"] == 5 * steps_per_epoch
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 5
    after = pd.read_csv(out / "csv" / "metrics.csv")
    # Appended: every row logged before the resume is still there, first, as it was.
    pd.testing.assert_frame_equal(after.iloc[: len(history)][history.columns], history)
    assert len(after) > len(history) and after["epoch"].max() == 5
    # The run's first config is kept; the resume's goes beside it.
    assert "trainer.max_epochs=3" in (out / ".hydra" / "overrides.yaml").read_text()


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory) -> Path:
    """One finished tiny run; a test copies it (`copy_run`) rather than training its own."""
    out = tmp_path_factory.mktemp("finished") / "run"
    r = run(tiny(tiny_dataset, out), out.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """The run folder copied into `tmp_path`, file for file: hpa finds a run's checkpoints
    relative to its folder, so the copy is a run of its own, as one moved by a user is."""
    return Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))


def test_rerun_into_a_finished_run_refuses_unless_overwrite(finished_run, tiny_dataset, tmp_path):
    out = copy_run(finished_run, tmp_path)
    before = snapshot(out)
    r = run(tiny(tiny_dataset, out, "trainer.max_epochs=2"), tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert "overwrite=true" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(out) == before
    r = run(tiny(tiny_dataset, out, "overwrite=true"), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    aside = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1
    assert snapshot(aside[0]) == before  # every old file, moved intact
    assert (out / "metrics.json").is_file()


def test_resume_with_another_backbone_is_one_line(finished_run, tiny_dataset, tmp_path):
    out = copy_run(finished_run, tmp_path)
    last = out / "checkpoints" / "last.ckpt"
    r = run(tiny(tiny_dataset, out, "model.backbone=resnet18", f"ckpt_path={last}"), tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(error_lines(r.stderr)) == 1
    assert "model.backbone='resnet18' (checkpoint: 'test_resnet')" in r.stderr


# 3. SIGTERM: to the process or its whole group (workers included).
@pytest.mark.slow
@pytest.mark.parametrize("target", ["process", "group"])
def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(target, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    # Two loader workers, so that the group's SIGTERM reaches workers too.
    args = tiny(
        tiny_dataset,
        out,
        "trainer.max_epochs=3",
        "data.batch_size=2",
        "data.num_workers=2",
        "data.persistent_workers=false",
    )
    last = out / "checkpoints" / "last.ckpt"
    # The run pauses once epoch 0's checkpoints (best.ckpt, last.ckpt) are written; the signal
    # arrives there and the run goes on into epoch 1, where it stops: mid-run on any machine,
    # however short its epochs.
    paused = tmp_path / "paused"
    pause = ["hpa.training.checkpointing:AtomicCheckpointIO.save_checkpoint@2", str(paused)]
    stopped = signal_when(
        [sys.executable, str(FAULTBOOT), *pause, "--", "hpa.train", *args],
        paused,
        env=env(),
        cwd=tmp_path,
        timeout_s=600,
        settle_s=0,
        group=target == "group",
        release=Path(f"{paused}.go"),
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr + stopped.stdout
    stops = [line for line in stopped.stderr.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stops) == 1 and f"ckpt_path={last}" in stops[0]
    assert not (out / "metrics.json").exists()
    # No worker outlives the run.
    with pytest.raises(ProcessLookupError):
        os.killpg(stopped.pid, 0)
    state = ckpt(last)
    r = run([*args, f"ckpt_path={last}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"(epoch {state['epoch']}, step {state['global_step']};" in r.stdout + r.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3


# 4. A full disk: one line, exit 2, and no truncated checkpoint where a good one should be.
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_training_is_one_line_and_leaves_no_half_checkpoint(
    tiny_dataset, tmp_path, small_disk
):
    out = small_disk / "run"
    # resnet18's checkpoint (~130 MB with optimizer state) cannot fit in 600 kB.
    r = run(tiny(tiny_dataset, out, "model.backbone=resnet18"), tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "no space left" in lines[0], r.stderr[-2000:]
    for path in (out / "checkpoints").glob("*"):
        ckpt(path)  # whatever is there is a whole checkpoint (no temp files, no truncation)
        assert not path.name.startswith(".")


# 5. A bad image: found before the first epoch, named in one line, also with DataLoader workers.
def test_bad_image_stops_before_training_with_workers(tiny_dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    ids = (data / "train.csv").read_text().splitlines()[1:]
    victim = data / "train" / f"{ids[-1].split(',')[0]}_green.png"
    victim.write_bytes(victim.read_bytes()[:200])  # cut short, as by a failed copy
    r = run(tiny(data, tmp_path / "o", "data.num_workers=2"), tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "DataLoader worker" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and victim.name in lines[0] and "cut short" in lines[0]
    assert not (tmp_path / "o" / "checkpoints").exists()  # stopped before the first epoch


def test_image_check_is_remembered_and_rechecks_changed_files(tiny_dataset, tmp_path, monkeypatch):
    import shutil

    from hpa.data import check

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns(".hpa_cache"))
    ids = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    seen = []
    real = check.sample_problem
    monkeypatch.setattr(check, "sample_problem", lambda d, i: seen.append(i) or real(d, i))
    check.check_images(data, "train", ids, progress=False)
    assert sorted(seen) == sorted(ids)
    seen.clear()
    check.check_images(data, "train", ids, progress=False)
    assert seen == []  # remembered
    red = data / "train" / f"{ids[0]}_red.png"
    red.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=f"{ids[0]}_red.png: not a readable image"):
        check.check_images(data, "train", ids, progress=False)
    assert seen == [ids[0]]  # only the changed sample was read again


def test_worker_errors_read_like_main_process_errors():
    from torch.utils.data import DataLoader, Dataset

    class Bad(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise InputError("cannot decode /data/x_red.png: the file is corrupt")

    with pytest.raises(InputError) as caught:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # torch's wrapping, which we unwrap
    assert one_line(caught.value) == "cannot decode /data/x_red.png: the file is corrupt"
