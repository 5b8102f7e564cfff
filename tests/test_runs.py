"""python -m hpa.runs: one table of every run under the folders, filtered, sorted, as Markdown, plotted.

One real 2-epoch training run (a subprocess, as users run it) and two run folders made from it:
`better` (resumed once, a higher mAP and a train.log with known times) and `killed` (no
metrics.json, one epoch in csv/metrics.csv), the latter inside a multirun's job folder.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpa.runs import main, read_run
from procs import child_env
from tiny_train import tiny

ENV = child_env()
LIGHT = (".hydra", "csv", "metrics.json", "train.log")  # what hpa.runs reads of a run


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    real = root / "real"
    done = subprocess.run(
        [sys.executable, "-m", "hpa.train", *tiny(tiny_dataset, real, "trainer.max_epochs=2")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    better = root / "better"
    better.mkdir()
    for name in LIGHT:
        src = real / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, better / name)
    overrides = (better / ".hydra" / "overrides.yaml").read_text()
    (better / ".hydra" / "overrides.yaml").write_text(overrides + "- seed=7\n")
    # Resumed with one more epoch: the latest settings count, the resume's ckpt_path is noise.
    resumed = better / ".hydra" / "resumed-20990101-000000"
    resumed.mkdir()
    shutil.copy2(better / ".hydra" / "config.yaml", resumed / "config.yaml")
    (resumed / "overrides.yaml").write_text(
        overrides.replace("trainer.max_epochs=2", "trainer.max_epochs=3")
        + "- seed=7\n- ckpt_path=better/checkpoints/last.ckpt\n"
    )
    metrics = json.loads((better / "metrics.json").read_text())
    del metrics["timing"]  # the real run's fit; this run's times are the train.log below
    per_class = {name: 0.9 for name in metrics["val/AP_per_class"]}
    per_class.update({"Centrosome": 0.11, "Aggresome": 0.22, "Cytosol": 0.33})
    metrics.update({"val/mAP": 0.95, "val/AP_per_class": per_class, "epoch": 1, "epochs_run": 2})
    (better / "metrics.json").write_text(json.dumps(metrics))
    # Two sessions (start, then resume) of 100 s and 20 s; 30 training samples an epoch.
    (better / "train.log").write_text(
        "[2030-01-02 10:00:00,000][hpa.threads][INFO] - threads: 1 torch threads (x)\n"
        "[2030-01-02 10:00:00,100][lightning_fabric.utilities.seed][INFO] - Seed set to 7\n"
        "[2030-01-02 10:00:01,000][hpa.data.datamodule][INFO] - data: fold 0/4, 30 train / 10 val samples\n"
        "[2030-01-02 10:01:40,000][hpa.training.checkpointing][INFO] - stopped\n"
        "[2030-01-02 11:00:00,000][lightning_fabric.utilities.seed][INFO] - Seed set to 7\n"
        "[2030-01-02 11:00:20,000][hpa.training.finish][INFO] - val/mAP 0.9500 (epoch 1); wrote\n"
    )

    killed = root / "sweep" / "0"  # a multirun's job folder
    killed.mkdir(parents=True)
    (root / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    for name in (".hydra", "csv"):
        shutil.copytree(real / name, killed / name)
    (killed / ".hydra" / "overrides.yaml").write_text(overrides + "- seed=9\n")
    history = killed / "csv" / "metrics.csv"
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0])
    kept = [r for r in rows if r["epoch"] in ("", "0")]
    for row in kept:
        if row.get("val/mAP"):
            row.update({k: "0.5" for k in row if k.startswith("val/AP/")})
            row.update({"val/mAP": "0.01", "val/AP/Golgi apparatus": "0.004"})
            row.update({"val/AP/Actin filaments": "0.02", "val/AP/Mitochondria": "0.03"})
    with open(history, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return root


def table(capsys, *args) -> list[str]:
    main([*map(str, args)])
    return capsys.readouterr().out.splitlines()


def row_of(lines: list[str], label: str) -> str:
    found = [line for line in lines if f"  {label}  " in line]
    assert len(found) == 1, (label, lines)
    return found[0]


def order(lines: list[str]) -> list[str]:
    labels = ("real", "better", "sweep/0")
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("when ")) + 1 :]
    return [next(lab for lab in labels if f"  {lab}  " in line) for line in body]


def test_lists_every_run_best_map_first(runs, capsys):
    lines = table(capsys, runs)
    assert lines[0] == f"3 runs under {runs}"
    # Shared overrides once; what differs per run in its row; paths.*/hydra.* and the resume's
    # ckpt_path left out; the resumed run shows its latest settings.
    assert lines[1].startswith("all with: ") and "data.image_size=32" in lines[1]
    assert "model.backbone=test_resnet" in lines[1] and "hydra." not in "".join(lines)
    assert lines[2].split() == [
        "when", "run", "overrides", "mAP", "epoch", "epochs", "weakest", "time", "img/s", "status"
    ]  # fmt: skip
    assert order(lines) == ["better", "real", "sweep/0"]

    metrics = json.loads((runs / "real" / "metrics.json").read_text())
    real = row_of(lines, "real")
    assert f"{metrics['val/mAP']:.4f}" in real and real.endswith("done")
    assert "trainer.max_epochs=2" in real and " 2/2 " in real
    aps = [(k, v) for k, v in metrics["val/AP_per_class"].items() if v is not None]
    weakest = sorted(aps, key=lambda kv: kv[1])[:3]  # ties in class order
    assert ", ".join(f"{k} {v:.2f}" for k, v in weakest) in real
    # img/s: the rate train measured around trainer.fit (metrics.json's timing)
    assert real.split()[-2] == f"{metrics['timing']['train_samples_per_s']:.1f}"

    better = row_of(lines, "better")
    assert better.startswith("2030-01-02 10:00") and "0.9500" in better
    assert "seed=7" in better and "trainer.max_epochs=3" in better and " 2/3 " in better
    assert "ckpt_path" not in better
    assert "Centrosome 0.11, Aggresome 0.22, Cytosol 0.33" in better
    # 100 s + 20 s of sessions (the night between them not counted); 30 samples x 2 epochs / 120 s.
    assert " 2m00s " in better and better.split()[-2] == "0.5"

    killed = row_of(lines, "sweep/0")
    assert killed.endswith("unfinished") and "0.0100" in killed and " 1/2 " in killed
    assert (
        "seed=9" in killed
        and "Golgi apparatus 0.00, Actin filaments 0.02, Mitochondria 0.03" in killed
    )


def test_filters_by_override_config_value_or_status(runs, capsys):
    assert order(table(capsys, runs, "--filter", "seed=7")) == ["better"]
    assert order(table(capsys, runs, "--filter", "seed!=7")) == ["real", "sweep/0"]
    # Not overridden anywhere: the value in each run's saved config, or its config group.
    assert len(order(table(capsys, runs, "--filter", "trainer.precision=32-true"))) == 3
    assert len(order(table(capsys, runs, "--filter", "data=demo"))) == 3
    assert order(table(capsys, runs, "--filter", "status=unf*")) == ["sweep/0"]
    both = table(capsys, runs, "--filter", "seed!=7", "--filter", "trainer.max_epochs=2")
    assert order(both) == ["real", "sweep/0"]  # all filters hold
    assert order(table(capsys, runs, "--filter", "seed!=7", "--filter", "status=done")) == ["real"]


def test_sorts_by_column_or_setting(runs, capsys):
    assert order(table(capsys, runs, "--sort", "run")) == ["better", "real", "sweep/0"]
    assert order(table(capsys, runs, "--sort", "map", "--reverse")) == ["sweep/0", "real", "better"]
    # A setting, numbers by value: 7, 9, and the real run's seed from its saved config (42).
    assert order(table(capsys, runs, "--sort", "seed")) == ["better", "sweep/0", "real"]
    assert order(table(capsys, runs, "--sort", "when"))[0] == "better"  # newest first: 2030


def test_markdown_table(runs, capsys):
    lines = table(capsys, runs, "--markdown", "--sort", "run")
    assert lines[0].startswith(f"3 runs under `{runs}`, all with `")
    assert lines[1] == ""
    assert (
        lines[2]
        == "| when | run | overrides | mAP | epoch | epochs | weakest | time | img/s | status |"
    )
    assert lines[3] == "|---|---|---|---:|---:|---:|---|---:|---:|---|"
    body = lines[4:]
    assert len(body) == 3 and all(line.startswith("| ") and line.endswith(" |") for line in body)
    assert all(line.count(" | ") == 9 for line in body)
    assert "`seed=7`" in body[0] and "| 0.9500 |" in body[0]


def test_plot_draws_the_listed_runs(runs, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "plots" / "map.png"
    lines = table(capsys, runs, "--plot", out, "--filter", "status=done")
    assert order(lines) == ["better", "real"]  # the table still goes to stdout
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert not list(out.parent.glob(".*"))  # written through a temp file that is gone
    # What it drew: one point per trained epoch (not the final re-validation of best.ckpt, which
    # csv/metrics.csv logs as one epoch more), and the killed run's one epoch.
    real = json.loads((runs / "real" / "metrics.json").read_text())
    history = read_run(runs / "real", "real").history
    assert [e for e, _ in history] == [0, 1] and max(m for _, m in history) == pytest.approx(
        real["val/mAP"], abs=1e-6
    )
    assert read_run(runs / "sweep" / "0", "sweep/0").history == [(0, 0.01)]


def test_nothing_to_list_is_one_line_and_exit_2(runs, tmp_path, capsys):
    cases = {
        (str(tmp_path),): "no training runs under",
        (str(tmp_path / "absent"),): "does not exist",
        (str(runs), "--filter", "seed=123"): "none of the 3 runs under",
        (str(runs), "--filter", "no.such.key=1"): "no run has a setting 'no.such.key'",
        (str(runs), "--sort", "nonsense"): "--sort nonsense: not a column",
        (str(runs), "--filter", "seed"): "write KEY=VALUE",
        (str(runs), "--plot", tmp_path / "x.unknownformat"): "--plot",
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as done:
            main([*map(str, args)])
        err = capsys.readouterr().err
        assert done.value.code == 2, args
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_the_module_runs_from_the_command_line(runs, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hpa.runs", str(runs), "--filter", "seed=7"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"1 run under {runs}"
    # Default folder: the output root, paths.log_dir = $HPA_LOG_DIR.
    done = subprocess.run(
        [sys.executable, "-m", "hpa.runs"],
        env={**ENV, "HPA_LOG_DIR": str(runs / "sweep")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"1 run under {runs / 'sweep'}"
