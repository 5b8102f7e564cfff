"""python -m hpa.benchmark: a tiny benchmark end to end, reruns, SIGTERM, failures, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.benchmark import Benchmark, add_verdicts, aggregate, main, merge_overrides, table
from hpa.cli import compose
from hpa.labels import CLASS_NAMES
from procs import child_env, signal_when
from tiny_train import tiny as tiny_train


def hydra_list(items: list[str]) -> str:
    """`['a=1','b=2']`: a Hydra list whose items contain `=`."""
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


# The tests' tiny training run, on the benchmark's training set, in cell batches of 16.
TINY_TRAIN = ["data=cells", *tiny_train("{train_data}", None, "threads=1", batch_size=16)]


def tiny(out: Path, variants: list[str], *extra: str) -> list[str]:
    """A benchmark of seconds: 24 + 6 images of 64 px, test_resnet at 32 px, one epoch."""
    return [
        f"out={out}",
        f"variants=[{','.join(variants)}]",
        "data.train.n_images=24",
        "data.test.n_images=6",
        "data.common.image_size=64",
        "data.common.cells_per_image=[3,6]",
        "data.common.workers=1",
        "seeds=[42]",  # one run per variant (test_each_variant_runs_once_per_seed: the rest)
        "progress=false",
        f"base.train={hydra_list(TINY_TRAIN)}",
        "base.predict=" + hydra_list(["segmenter=truth", "device=cpu", "threads=1"]),
        # prediction only, with the baseline's model: no training of its own
        "+specs.tta={from: baseline, predict: ['tta=2']}",
        # fails before training: reported, and the others still run
        "+specs.broken={before: [[hpa.no_such_module, '{variant_dir}']]}",
        # sleeps in its before-command: something to stop with SIGTERM
        "+specs.slow={before: [[timeit, '-n1', '-r1', 'import time; time.sleep(120)']]}",
        *extra,
    ]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpa.benchmark", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        **kwargs,
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A SIGTERMed first run, then the rerun that continues it; their outputs."""
    out = tmp_path_factory.mktemp("bench") / "out"
    first = signal_when(
        [sys.executable, "-m", "hpa.benchmark", *tiny(out, ["baseline", "slow"])],
        out / "slow" / "before0.log",  # slow's before-command is sleeping
        env=child_env(),
        timeout_s=300,
        settle_s=1,
    )
    summary_after_stop = json.loads((out / "benchmark.json").read_text())
    train_stamp = (out / "baseline" / "train.json").stat().st_mtime_ns

    # The rerun: baseline is skipped, tta reuses its model, broken fails, slow is not selected.
    rerun = run_cli(tiny(out, ["baseline", "tta", "broken"]))
    return {
        "out": out,
        "stopped": (first.returncode, first.stdout, first.stderr),
        "summary_after_stop": summary_after_stop,
        "train_stamp": train_stamp,
        "rerun": rerun,
    }


def test_sigterm_stops_with_one_line_and_143_keeping_finished_variants(session):
    code, _, stderr = session["stopped"]
    assert code == 143
    assert stderr.strip().splitlines()[-1].startswith("stopped by SIGTERM; finished variants")
    assert "Traceback" not in stderr
    assert set(session["summary_after_stop"]) == {"baseline"}  # slow never finished


def test_rerun_skips_finished_variants_and_runs_the_rest(session):
    out, rerun = session["out"], session["rerun"]
    assert "baseline is done (unchanged), skipped" in rerun.stdout
    assert (out / "baseline" / "train.json").stat().st_mtime_ns == session["train_stamp"]
    summary = json.loads((out / "benchmark.json").read_text())
    assert set(summary) == {"baseline", "tta"}
    for name, result in summary.items():
        assert set(result) == {
            "cell_mAP",
            "cell_mAP_per_seed",
            "per_seed",
            "cell_mAP_std",
            "AP_per_class",
            "train_s",
            "predict_s",
            "submission_MB",
            "seeds",
            "stage",
        } | ({"vs_baseline"} if name != "baseline" else set())
        assert result["seeds"] == [42] and result["cell_mAP_per_seed"] == [result["cell_mAP"]]
        assert result["per_seed"] == {"42": result["cell_mAP"]}
        assert 0.0 <= result["cell_mAP"] <= 1.0
        assert set(result["AP_per_class"]) == set(CLASS_NAMES)
        assert result["predict_s"] > 0
        sample = pd.read_csv(out / "test" / "sample_submission.csv")
        submission = pd.read_csv(out / name / "submission.csv")
        assert list(submission["ID"]) == list(sample["ID"])
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["mAP"] == result["cell_mAP"]
        assert result["submission_MB"] == round(
            (out / name / "submission.csv").stat().st_size / 1e6, 3
        )
    assert summary["baseline"]["train_s"] > 0
    assert summary["tta"]["train_s"] == 0 and not (out / "tta" / "train").exists()
    # baseline trains (a learning idea would); tta only predicts with baseline's model
    assert summary["baseline"]["stage"] == "train" and summary["tta"]["stage"] == "predict"
    vs = summary["tta"]["vs_baseline"]
    assert vs["per_seed"] == {
        "42": pytest.approx(summary["tta"]["cell_mAP"] - summary["baseline"]["cell_mAP"])
    }
    assert vs["verdict"] == "unclear (under 3 seeds)"  # one seed proves nothing
    # the test set is the evaluate command's layout; its border cells carry no label
    assert (out / "test" / "test").is_dir() and (out / "test" / "masks").is_dir()
    cells = pd.read_csv(out / "test" / "cells.csv", dtype=str, keep_default_na=False)
    assert (cells["Label"] == "").any() and (cells["Label"] != "").any()


def test_a_failing_variant_is_one_line_with_its_log_and_the_others_still_run(session):
    out, rerun = session["out"], session["rerun"]
    assert rerun.returncode == 1
    log = out / "broken" / "before0.log"
    errors = [line for line in rerun.stdout.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: variant broken failed: before[0] hpa.no_such_module exited 1; see {log}"
    ]
    assert "No module named hpa.no_such_module" in log.read_text()
    assert "Traceback" not in rerun.stderr


def test_table_lists_every_variant_and_markdown_rerun(session):
    out, rerun = session["out"], session["rerun"]
    rows = {line.split()[0]: line.split() for line in rerun.stdout.splitlines() if line.strip()}
    assert rows["variant"][:3] == ["variant", "cell", "mAP"] and "AP18" in rows["variant"]
    summary = json.loads((out / "benchmark.json").read_text())
    assert rows["baseline"][1] == f"{summary['baseline']['cell_mAP']:.4f}"
    assert rows["broken"][1] == "failed"
    again = run_cli(tiny(out, ["baseline", "tta"], "markdown=true"))
    assert again.returncode == 0
    assert "tta is done (unchanged), skipped" in again.stdout
    assert f"| tta | {summary['tta']['cell_mAP']:.4f} |" in again.stdout
    assert "|---|---:|" in again.stdout


def test_a_changed_prediction_setting_reruns_prediction_only(session, capsys):
    out = session["out"]
    before = (out / "tta" / "result.json").stat().st_mtime_ns
    args = tiny(out, ["tta"], "specs.tta.predict=['tta=3']")
    main(args)
    assert "tta: cell mAP" in capsys.readouterr().out
    assert (out / "tta" / "result.json").stat().st_mtime_ns != before
    assert (out / "baseline" / "train.json").stat().st_mtime_ns == session["train_stamp"]
    assert "ckpt_path" not in (out / "baseline" / "train.log").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("variants=[baseline,nope]", "'nope' is not a variant of benchmark.yaml"),
        ("++specs.baseline.train=['trainer.max_epochz=1']", "variant baseline, train:"),
        ("++specs.baseline.predict=['batch_size=0']", "variant baseline, predict:"),
        ("+specs.orphan={from: nope}", "variant 'nope' is not defined"),
        ("rare_classes=[19]", "rare_classes"),
    ],
)
def test_bad_input_exits_2_in_one_line_before_any_work(tmp_path, override, message):
    out = tmp_path / "out"
    r = run_cli([f"out={out}", "variants=[baseline]", override])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert message in r.stderr
    assert not (out / "data").exists()  # nothing generated


def test_out_is_required(tmp_path):
    r = run_cli([])
    assert r.returncode == 2 and "out is not set" in r.stderr


def test_later_override_of_a_key_replaces_the_base_one():
    merged = merge_overrides(["data=cells", "seed=1", "+trainer.x=1"], ["seed=2", "trainer.x=3"])
    assert merged == ["data=cells", "seed=2", "trainer.x=3"]


def test_each_variant_runs_once_per_seed_with_its_references_at_that_seed(tmp_path):
    bench = Benchmark(compose("benchmark", [f"out={tmp_path}", "seeds=[1,2]"]))
    assert bench.units["baseline"] == ["baseline", "baseline-seed2"]
    assert "seed=1" in bench.train_overrides("baseline")
    assert "seed=2" in bench.train_overrides("baseline-seed2")
    assert f"paths.output_dir={tmp_path}/baseline-seed2/train" in bench.train_overrides(
        "baseline-seed2"
    )
    # prediction-only variants and ensembles use the models of the same seed
    assert not bench.trains("tta_d4-seed2")
    assert bench.model_sources("tta_d4-seed2") == ["baseline-seed2"]
    assert bench.model_sources("ensemble-seed2") == [
        "baseline-seed2",
        "smoothing-seed2",
        "gem-seed2",
    ]
    # {seed} and {variant_dir} in before-commands follow the seed
    first = bench.before_commands("self_training-seed2")[0]
    assert "seed=2" in first and f"hydra.sweep.dir={tmp_path}/self_training-seed2/round0" in first
    assert "seed=1" in bench.before_commands("self_training")[0]


def test_base_train_in_a_before_command_is_the_base_overrides(tmp_path):
    """Self-training's first round is trained like every variant: {base_train} expands to
    base.train (placeholders filled), so changing the base changes that round too."""
    base = ["data=cells", "data.root={train_data}", "trainer.max_epochs=2"]
    cfg = compose("benchmark", [f"out={tmp_path}", "seeds=[1]"])
    cfg.base.train = base
    bench = Benchmark(cfg)
    first = bench.before_commands("self_training")[0]
    assert first[:2] == ["hpa.train", "-m"]
    assert first[2:5] == ["data=cells", f"data.root={tmp_path}/data/train", "trainer.max_epochs=2"]
    assert "{base_train}" not in " ".join(first) and "seed=1" in first


def test_aggregate_means_over_seeds_and_a_failed_seed_fails_the_variant():
    a = {"cell_mAP": 0.4, "AP_per_class": {"x": 0.2, "y": None}, "train_s": 10, "predict_s": 2}
    b = {"cell_mAP": 0.6, "AP_per_class": {"x": 0.4, "y": 0.1}, "train_s": 20, "predict_s": 4}
    merged = aggregate([a, b], [42, 7])
    assert merged["cell_mAP"] == pytest.approx(0.5)
    assert merged["cell_mAP_per_seed"] == [0.4, 0.6]
    assert merged["per_seed"] == {"42": 0.4, "7": 0.6}
    assert merged["cell_mAP_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert merged["AP_per_class"] == {"x": pytest.approx(0.3), "y": None}
    assert merged["train_s"] == 15 and merged["predict_s"] == 3
    assert aggregate([a, None], [42, 7]) is None
    assert aggregate([a], [42])["cell_mAP_std"] is None


def result(per_seed: dict[str, float], stage: str) -> dict:
    scores = list(per_seed.values())
    return {
        "cell_mAP": float(np.mean(scores)),
        "cell_mAP_per_seed": scores,
        "per_seed": per_seed,
        "cell_mAP_std": None,
        "AP_per_class": dict.fromkeys(CLASS_NAMES, 0.5),
        "train_s": 1.0,
        "predict_s": 1.0,
        "stage": stage,
    }


def test_a_verdict_needs_every_seed_to_agree_over_three_seeds():
    results = {
        "baseline": result({"1": 0.50, "2": 0.40, "3": 0.45}, "train"),
        "up": result({"1": 0.52, "2": 0.41, "3": 0.47}, "train"),  # +0.02 +0.01 +0.02
        "down": result({"1": 0.49, "2": 0.30, "3": 0.44}, "predict"),
        # the best mean of all, from one lucky seed: not called better
        "lucky": result({"1": 0.80, "2": 0.39, "3": 0.44}, "train"),
        "short": result({"1": 0.90, "2": 0.90}, "train"),  # two seeds: too few to call
    }
    add_verdicts(results)
    assert "vs_baseline" not in results["baseline"]
    verdicts = {n: r["vs_baseline"]["verdict"] for n, r in results.items() if n != "baseline"}
    assert verdicts == {
        "up": "better",
        "down": "worse",
        "lucky": "unclear",
        "short": "unclear (under 3 seeds)",
    }
    up = results["up"]["vs_baseline"]
    assert up["per_seed"] == pytest.approx({"1": 0.02, "2": 0.01, "3": 0.02})
    assert up["mean"] == pytest.approx(0.05 / 3)
    assert set(results["short"]["vs_baseline"]["per_seed"]) == {"1", "2"}  # paired seeds only


def test_table_shows_the_baseline_then_learning_ideas_then_prediction_only_ones():
    results = {
        "tta": result({"1": 0.5, "2": 0.5, "3": 0.5}, "predict"),
        "baseline": result({"1": 0.4, "2": 0.4, "3": 0.4}, "train"),
        "failed_one": None,
        "sampler": result({"1": 0.45, "2": 0.41, "3": 0.42}, "train"),
    }
    add_verdicts(results)
    lines = table(results, [18], markdown=False).splitlines()
    rows = [line.split() for line in lines[1:5]]
    assert [r[0] for r in rows] == ["baseline", "sampler", "tta", "failed_one"]
    assert rows[1][-1] == "train" and rows[2][-1] == "predict"
    assert "better" in rows[1] and "better" in rows[2]


# ---- fidelity.json: the benchmark against the real competition (hpa.fidelity) ----------------


def test_masks_are_measured_cell_by_cell(tmp_path):
    from hpa.data.images import write_channel
    from hpa.fidelity import measure_masks

    a = np.zeros((40, 40), np.uint16)
    a[0:10, 0:10] = 1  # touches the border
    a[15:25, 15:25] = 2
    a[28:34, 20:26] = 3
    b = np.zeros((40, 40), np.uint16)
    b[10:30, 10:30] = 7  # ids need not be consecutive
    write_channel(tmp_path / "a.png", a)
    write_channel(tmp_path / "b.png", b)
    measured = measure_masks(tmp_path)
    assert measured["cells_per_image"] == 2.0  # 3 and 1
    assert measured["cell_side_px"] == 10.0  # median of 10, 10, 6, 20
    assert measured["border_cell_share"] == 0.25


def test_fidelity_rows_give_real_and_benchmark_values_with_their_ratio():
    from hpa.fidelity import REAL, fidelity_table

    ours = {name: value for name, (value, _) in REAL.items()}
    ours.update(image_side_px=256, cell_side_px=55, image_model_input_px=64, class_skew=None)
    rows = {r["quantity"]: r for r in fidelity_table(ours)}
    assert all(r["source"] for r in rows.values())
    assert "image_side_px" not in rows  # a raw size (the world is scaled by design), an input
    # 55 px cells in 256 px images: 0.215 of the side, the real 366 / 2048 = 0.179
    assert rows["cell_side_fraction"]["ratio"] == pytest.approx((55 / 256) / (366 / 2048))
    assert rows["cell_side_fraction"]["within_1.5x"]
    assert rows["cells_per_image"]["ratio"] == 1.0 and rows["cells_per_image"]["within_1.5x"]
    assert rows["class_skew"]["ratio"] is None and rows["class_skew"]["within_1.5x"] is None
    # 55 px at 256 seen at 64 px: 13.75 px per cell, against 366 x 512 / 2048 = 91.5 px
    at_input = rows["cell_px_at_image_model_input"]
    assert at_input["benchmark"] == pytest.approx(13.75) and at_input["real"] == pytest.approx(91.5)
    assert at_input["within_1.5x"] is False
    maps = rows["class_map_cells_per_cell"]
    assert maps["benchmark"] == pytest.approx((13.75 / 32) ** 2)
    assert rows["non_expressing_share"]["real"] is None  # no source: said, not guessed


def test_agreement_needs_every_seed_to_have_the_published_sign():
    from hpa.fidelity import agreement_table

    results = {
        "baseline": {"per_seed": {"1": 0.50, "2": 0.45, "3": 0.40}},
        "image": {"per_seed": {"1": 0.40, "2": 0.46, "3": 0.30}},
        "cam": {"per_seed": {"1": 0.45, "2": 0.50, "3": 0.35}},
        "mil": None,  # failed or not run
    }
    rows = {r["comparison"]: r for r in agreement_table(results)}
    cell = rows["cell vs image"]
    assert cell["published"] > 0 and cell["benchmark_per_seed"] == pytest.approx(
        {"1": 0.10, "2": -0.01, "3": 0.10}
    )
    assert cell["agree"] is False  # seed 2 disagrees
    assert rows["CAM vs image"]["agree"] is True
    assert (
        rows["MIL vs image"]["agree"] is None and rows["MIL vs image"]["benchmark_per_seed"] == {}
    )


def test_the_benchmark_writes_its_fidelity_and_agreement_tables(session):
    out = session["out"]
    tables = json.loads((out / "fidelity.json").read_text())
    rows = {r["quantity"]: r for r in tables["fidelity"]}
    inputs = {k: v["benchmark"] for k, v in tables["inputs"].items()}
    assert inputs["image_side_px"] == 64  # the tiny benchmark's images
    assert inputs["cell_model_input_px"] == 32  # its base.train crops
    assert inputs["image_model_input_px"] == 64  # benchmark.yaml's image variant
    assert rows["cell_px_at_cell_model_input"]["benchmark"] == 32
    assert 3 <= rows["cells_per_image"]["benchmark"] <= 6
    assert rows["border_cells_annotated"]["benchmark"] == 0.0  # the test truth leaves them out
    # only baseline and tta ran: no comparison has its two variants
    assert [r["agree"] for r in tables["agreement"]] == [None] * 4
