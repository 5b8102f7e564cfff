"""Training: configs compose, runs write the contract's outputs, learning beats shuffled labels."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpa.cli import compose
from hpa.train import train
from procs import child_env, signal_when
from tiny_train import tiny

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "hpa" / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONFIGS / "debug").glob("*.yaml"))
FAULTBOOT = Path(__file__).with_name("faultboot.py")  # runs a command with a pause point


def run_cli(args, cwd, threads=None, **kwargs):
    # threads: one OpenMP thread per process when several processes share the cores
    return subprocess.run(
        [sys.executable, "-m", "hpa.train", *args],
        cwd=cwd,
        env=child_env(threads=threads, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        **kwargs,
    )


def test_default_config_is_the_cpu_demo():
    cfg = compose("train", ["paths.output_dir=x"])
    assert cfg.data.synthetic.n_images > 0 and cfg.model.pretrained is False
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment, tiny_dataset, tmp_path):
    overrides = [f"experiment={experiment}", "debug=fast_dev_run"] + tiny(
        tiny_dataset, tmp_path / "run"
    )
    cfg = compose("train", overrides)
    assert cfg.task_name == "debug"
    train(cfg)
    # debug=fast_dev_run: one batch of each, and no checkpoints, logs, metrics or model/.
    assert not (tmp_path / "run").exists()


def debug_overrides(debug, data_root, out, *extra):
    """tiny(...) for `debug=NAME`, but keeping the debug config's own epochs."""
    args = [a for a in tiny(data_root, out) if not a.startswith("trainer.max_epochs=")]
    return [f"debug={debug}", *args, *extra]


def test_every_debug_config_has_a_test_of_its_promise():
    # fast_dev_run: test_every_experiment_runs_fast_dev_run; the others: the tests below.
    assert DEBUGS == ["fast_dev_run", "limit", "overfit", "profiler"]


def test_debug_overfit_drives_the_loss_to_zero_on_one_batch(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    # test_resnet (0.4M weights, the demo's resnet18 has 11M) at the default lr only gets to ~40%
    # of its first loss in 30 steps (resnet18: ~3%, but 8x slower); lr=1e-2 memorises the batch.
    cfg = compose("train", debug_overrides("overfit", tiny_dataset, out, "optimizer.lr=1e-2"))
    assert cfg.trainer.overfit_batches == 1 and cfg.trainer.max_epochs >= 20
    train(cfg)
    # One batch per epoch (a full epoch of the tiny set would be 3 batches).
    assert last_step(out) == cfg.trainer.max_epochs
    log = pd.read_csv(out / "csv" / "metrics.csv")
    loss = log.dropna(subset=["train/loss_step"]).sort_values("step")["train/loss_step"]
    assert len(loss) == cfg.trainer.max_epochs  # log_every_n_steps=1: every step is there
    first, final = loss.iloc[0], loss.iloc[-1]
    assert first > 0.5 and final < 0.1 and final < 0.2 * first, (first, final)


def test_debug_limit_runs_only_the_limited_batches(tiny_dataset, tmp_path, monkeypatch):
    from hpa.training.module import HPAModule

    seen = []  # batch_idx of every validation step (fit and the final re-validation)
    step = HPAModule.validation_step

    def counting(self, batch, batch_idx):
        seen.append(batch_idx)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(HPAModule, "validation_step", counting)
    out = tmp_path / "run"
    # Batches of 4: 30 train samples make 7 batches an epoch, 10 val samples 3 batches.
    cfg = compose("train", debug_overrides("limit", tiny_dataset, out, "data.batch_size=4"))
    limit_train, limit_val = cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches
    assert (limit_train, limit_val) == (3, 2) and cfg.trainer.max_epochs == 2
    train(cfg)
    assert last_step(out) == cfg.trainer.max_epochs * limit_train  # not 2 x 7
    # Each of the 2 epochs and the final re-validation of best.ckpt ran 2 of the 3 val batches.
    assert seen == [0, 1] * 3
    assert (out / "metrics.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert (out / "csv" / "metrics.csv").is_file()


def test_debug_profiler_prints_its_report_into_the_run_log(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    r = run_cli(debug_overrides("profiler", tiny_dataset, out), tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "train.log").read_text()
    for text in (log, r.stdout + r.stderr):
        assert "FIT Profiler Report" in text
    # The simple profiler's table: one row per action, with its number of calls.
    rows = [line for line in log.splitlines() if "run_training_batch" in line]
    calls = [cell.strip() for cell in rows[0].split("|")]
    assert "3" in calls, rows[0]  # 30 train samples in batches of 8: 3 batches (drop_last)


def last_step(out: Path) -> int:
    import torch

    ckpt = out / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def test_run_writes_contract_outputs_and_plots(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    metrics = train(
        compose("train", tiny(tiny_dataset, out, "trainer.max_epochs=2", "report=true"))
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["val/mAP"] == pytest.approx(metrics["val/mAP"])
    assert len(saved["val/AP_per_class"]) == 19 and saved["epoch"] in (0, 1)
    assert (out / "checkpoints" / "best.ckpt").is_file() and (
        out / "checkpoints" / "last.ckpt"
    ).is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["backbone"] == "test_resnet" and config["image_size"] == 32
    for name in ("ap_per_class.png", "pr_curves.png", "val_samples.png"):
        png = out / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    oof = pd.read_csv(out / "oof.csv")
    ids = set(pd.read_csv(tiny_dataset / "train.csv")["ID"])
    assert list(oof.columns[:3]) == ["ID", "fold", "0"] and len(oof.columns) == 2 + 19
    assert 5 <= len(oof) <= 15 and oof["ID"].is_unique and set(oof["ID"]) <= ids
    assert (oof["fold"] == 0).all() and oof.iloc[:, 2:].stack().between(0, 1).all()
    assert_oof_is_the_models_predictions(out, tiny_dataset)


def test_mixup_and_cutmix_train(tiny_dataset, tmp_path):
    train(
        compose(
            "train",
            tiny(
                tiny_dataset,
                tmp_path / "run",
                "mix.mixup_alpha=0.4",
                "mix.cutmix_alpha=1.0",
                "mix.prob=1.0",
            ),
        )
    )
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_bad_input_exits_2_without_traceback(tmp_path):
    r = run_cli(
        [f"data.root={tmp_path}/nothing", "data.synthetic=null", f"paths.output_dir={tmp_path}/o"],
        tmp_path,
    )
    assert r.returncode == 2 and "train.csv" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["model.backbone=resnet1800", f"paths.output_dir={tmp_path}/o"], tmp_path)
    assert r.returncode == 2 and "resnet1800" in r.stderr and "Traceback" not in r.stderr
    r = run_cli([f"ckpt_path={tmp_path}/missing.ckpt", f"paths.output_dir={tmp_path}/o"], tmp_path)
    assert r.returncode == 2 and "missing.ckpt" in r.stderr
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    r = run_cli([f"ckpt_path={tmp_path}/broken.ckpt", f"paths.output_dir={tmp_path}/o"], tmp_path)
    assert r.returncode == 2 and "broken.ckpt" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.no_such_key=3", "no_such_key"),  # a typo in a key
        ("data=no_such_group_option", "no_such_group_option"),  # an unknown config option
        ("data.image_size=[1", "cannot parse the override `data.image_size=[1`"),
    ],
)
def test_rejected_overrides_exit_2_naming_them(override, named, tmp_path):
    r = run_cli([override, "debug=fast_dev_run", f"paths.output_dir={tmp_path}/o"], tmp_path)
    assert r.returncode == 2, r.stdout[-1000:] + r.stderr[-2000:]
    assert named in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert "hpa.train --help" in r.stderr


@pytest.mark.slow
def test_ddp_two_processes_write_one_output(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    r = run_cli(
        tiny(
            tiny_dataset, out, "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1"
        ),
        tmp_path,
        threads=1,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "terminate called" not in r.stderr  # each rank left its gloo group before exiting
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert len([p for p in tmp_path.rglob("model") if p.is_dir()]) == 1
    assert (out / "metrics.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "outputs").exists()  # no stray per-rank run folders
    # oof.csv gathers both ranks' validation predictions, in the right rows: each row equals the
    # exported model's prediction for that ID (a wrong interleave would pair IDs and rows wrongly).
    assert_oof_is_the_models_predictions(out, tiny_dataset)


def assert_oof_is_the_models_predictions(out: Path, data_root: Path) -> None:
    import torch

    from hpa.data.datamodule import HPADataModule
    from hpa.models.export import load_exported

    oof = pd.read_csv(out / "oof.csv")
    dm = HPADataModule(str(data_root), image_size=32, batch_size=8, n_folds=4)
    dm.setup()
    ids = list(dm.val_set.ids)
    assert sorted(oof["ID"]) == sorted(ids) and oof["ID"].is_unique
    net, _ = load_exported(out / "model")
    with torch.no_grad():
        images = torch.stack([dm.val_set[i][0] for i in range(len(ids))])
        probs = torch.sigmoid(net(images)).numpy()
    expected = pd.DataFrame(probs, index=ids).loc[oof["ID"]].to_numpy()
    assert abs(oof.iloc[:, 2:].to_numpy() - expected).max() < 1e-3


@pytest.mark.slow
def test_sigkill_then_resume_ends_at_planned_epoch(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = tiny(tiny_dataset, out, "trainer.max_epochs=6")
    last = out / "checkpoints" / "last.ckpt"
    # The run pauses once epoch 0's checkpoints (best.ckpt, last.ckpt) are written, and is killed
    # there: mid-run on any machine, however short its epochs.
    paused = tmp_path / "paused"
    pause = ["hpa.training.checkpointing:AtomicCheckpointIO.save_checkpoint@2", str(paused)]
    stopped = signal_when(
        [sys.executable, str(FAULTBOOT), *pause, "--", "hpa.train", *args],
        paused,
        env=child_env(threads=None),
        cwd=tmp_path,
        timeout_s=600,
        settle_s=0,
        sig=signal.SIGKILL,
    )
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
    assert last.exists() and not (out / "metrics.json").exists()
    r = run_cli([*args, f"ckpt_path={last}"], tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout + r.stderr and "(epoch 0, step" in r.stdout + r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 6
