"""hpa.show and the reports: outlines land on mask edges, a submission's pictures mark cells
against the truth, and every HTML report renders in a real headless browser with the numbers
of the files it is drawn from."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import find_boundaries

from browser import not_blank, open_page
from hpa.show import main
from hpa.submission import encode_binary_mask
from hpa.submission.metric import mask_ious
from hpa.viz import draw
from procs import child_env

# ---- drawing ---------------------------------------------------------------------------------


def known_mask() -> np.ndarray:
    mask = np.zeros((90, 120), np.uint8)
    cv2.circle(mask, (40, 45), 25, 1, -1)
    cv2.rectangle(mask, (75, 20), (110, 70), 1, -1)
    return mask.astype(bool)


def test_outline_lands_on_the_mask_edge():
    mask = known_mask()
    canvas = np.zeros((*mask.shape, 3), np.uint8)
    draw.outline(canvas, draw.contours(mask), (255, 0, 0))
    drawn = (canvas == (255, 0, 0)).all(axis=-1)
    # every drawn pixel is a pixel of the mask touching the outside, and every such pixel is drawn
    assert np.array_equal(drawn, find_boundaries(mask, mode="inner"))


def test_outline_at_display_size_lands_on_the_scaled_edge():
    mask = known_mask()
    half = cv2.resize(mask.astype(np.uint8), (60, 45), interpolation=cv2.INTER_NEAREST) > 0
    canvas = np.zeros((45, 60, 3), np.uint8)
    draw.outline(canvas, draw.contours(mask, scale=0.5), (0, 255, 0))
    drawn = (canvas == (0, 255, 0)).all(axis=-1)
    edge = find_boundaries(half, mode="thick")
    near = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert drawn.sum() > 0.8 * edge.sum() / 2 and near[drawn].all()  # within a pixel of the edge


# ---- python -m hpa.show on a synthetic set with truth ----------------------------------------


@pytest.fixture(scope="module")
def truth_set(tmp_path_factory) -> Path:
    from hpa.synthetic import SyntheticConfig, generate_dataset

    out = tmp_path_factory.mktemp("show") / "data"
    cfg = SyntheticConfig(n_images=2, seed=2, image_size=128, workers=1, skew=0.0)
    return generate_dataset(cfg, out, progress=False)


WRONG = (slice(2, 22), slice(2, 22))  # a square in a corner, where no true cell is


def write_submission(truth: Path, path: Path, sabotage: bool) -> tuple[Path, str]:
    """Every annotated true cell with its classes; with `sabotage`, in the first image: one
    cell relabelled, one left out, and a made-up cell where there is none."""
    cells = pd.read_csv(truth / "cells.csv", dtype={"ID": str, "Label": str}, keep_default_na=False)
    first = sorted(cells.ID.unique())[0]
    rows = []
    for sid in sorted(cells.ID.unique()):
        mask = cv2.imread(str(truth / "masks" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        triples = []
        for k, row in enumerate(cells[cells.ID.eq(sid) & cells.Label.ne("")].itertuples()):
            labels = [int(c) for c in row.Label.split("|")]
            if sabotage and sid == first and k == 0:
                continue  # missed
            if sabotage and sid == first and k == 1:
                labels = [(max(labels) + 1) % 18]  # wrong class
            text = encode_binary_mask(mask == row.cell_id)
            triples += [f"{c} 0.8 {text}" for c in labels]
        if sabotage and sid == first:
            wrong = np.zeros(mask.shape, bool)
            wrong[WRONG] = True
            assert mask_ious([wrong], mask)[0].max() < 0.3, "the made-up cell must match none"
            triples.append(f"3 0.7 {encode_binary_mask(wrong)}")
        rows.append((sid, mask.shape[1], mask.shape[0], " ".join(triples)))
    columns = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path, first


def read_cells(path: Path) -> pd.DataFrame:
    text = {"ID": str, "status": str, "truth": str}
    return pd.read_csv(path, dtype=text).fillna({"status": "", "truth": ""})


def magenta(picture: np.ndarray) -> np.ndarray:
    return (picture == draw.FALSE_COLOUR).all(axis=-1)


def test_show_marks_a_wrong_cell_false_a_relabelled_one_wrong_and_a_left_out_one_missed(
    truth_set, tmp_path, capsys
):
    submission, first = write_submission(truth_set, tmp_path / "sub.csv", sabotage=True)
    out = tmp_path / "pictures"
    common = [f"submission={submission}", f"input_dir={truth_set / 'train'}", "progress=false"]
    main([*common, f"truth_dir={truth_set}", f"out={out}", "size=256"])
    assert "wrote 2 picture(s)" in capsys.readouterr().out
    cells = read_cells(out / "cells.csv")
    mine = cells[cells.ID.eq(first)]
    assert sorted(mine.status.value_counts().items()) == sorted(
        {"match": len(mine) - 3, "wrong class": 1, "false": 1, "missed": 1}.items()
    )
    false = mine[mine.status.eq("false")].iloc[0]
    assert false.top_class == 3 and false.confidence == 0.7 and float(false.iou) < 0.6
    assert (cells[cells.ID.ne(first)].status == "match").all()
    picture = cv2.cvtColor(cv2.imread(str(out / f"{first}.png")), cv2.COLOR_BGR2RGB)
    # the made-up cell is outlined in the false colour, in the top-left corner of the composite
    ys, xs = np.nonzero(magenta(picture))
    top_left = (xs < picture.shape[1] // 4) & (ys < picture.shape[0] // 3)
    assert top_left.sum() > 20

    # the same submission drawn without truth: no cell is marked false
    plain = tmp_path / "plain"
    main([*common, f"out={plain}", "size=256", f"ids=[{first}]"])
    assert sorted(p.name for p in plain.iterdir()) == sorted(["cells.csv", f"{first}.png"])
    picture = cv2.cvtColor(cv2.imread(str(plain / f"{first}.png")), cv2.COLOR_BGR2RGB)
    assert not magenta(picture).any()
    assert set(read_cells(plain / "cells.csv").status) == {""}


def test_pictures_are_at_the_asked_size_with_the_green_channel_beside(truth_set, tmp_path):
    from hpa.data.images import read_sample
    from hpa.viz.predictions import picture

    submission, first = write_submission(truth_set, tmp_path / "sub.csv", sabotage=False)
    row = pd.read_csv(submission).set_index("ID").loc[first]
    image = read_sample(truth_set / "train", first)
    drawn, cells = picture(first, image, row.PredictionString, 128, 128, size=320)
    assert drawn.shape[1] == 2 * 320 + 6 and drawn.shape[0] > 320
    assert len(cells) == len({t for t in row.PredictionString.split()[2::3]})
    # the right panel is the green channel alone (plus outlines): no red or blue signal
    right = drawn[:, 320 + 6 :]
    assert right[..., 1].max() > 100


def test_show_bad_input_is_one_line_and_exit_2(truth_set, tmp_path):
    submission, _ = write_submission(truth_set, tmp_path / "sub.csv", sabotage=False)
    cases = [
        ([], "nothing to show"),
        ([f"submission={submission}", f"out={tmp_path / 'o'}"], "input_dir is not set"),
        (
            [
                f"submission={submission}",
                f"input_dir={truth_set / 'train'}",
                f"out={tmp_path}",
                "ids=[nope]",
            ],
            "nope is not a row",
        ),
        ([f"run={tmp_path / 'absent'}"], "is not a folder"),
        ([f"run={tmp_path}"], "no metrics.json"),
        ([f"benchmark={tmp_path}"], "no benchmark.json"),
        (["size=3"], "size"),
    ]
    for args, words in cases:
        done = subprocess.run(
            [sys.executable, "-m", "hpa.show", *args],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, (args, done.stderr[-1000:])
        assert words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_show_help_prints_its_config():
    done = subprocess.run(
        [sys.executable, "-m", "hpa.show", "--help"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "usage: python -m hpa.show" in done.stdout
    assert "truth_dir:" in done.stdout and "benchmark:" in done.stdout


# ---- the report of a training run --------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory) -> Path:
    """One seconds-long training (two epochs, CSV log): hpa.train writes its report."""
    from hpa.cli import compose
    from hpa.train import train
    from tiny_train import tiny

    out = tmp_path_factory.mktemp("report") / "run"
    train(compose("train", tiny(tiny_dataset, out, "trainer.max_epochs=2", "report=true")))
    return out


def assert_renders(page: Path) -> dict:
    seen = open_page(page)
    assert seen["images"] > 0 and seen["failed"] == [], seen["failed"]
    assert seen["errors"] == [], seen["errors"]
    assert not_blank(seen["screenshot"])
    return seen["values"]


def test_training_writes_a_report_that_renders_with_the_runs_numbers(run_dir):
    page = run_dir / "report.html"
    assert page.is_file() and (run_dir / "report_data.npz").is_file()
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: no network
    values = assert_renders(page)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/mAP", "val/F1", "val/loss", "epoch"):
        exact, shown = values[key]
        assert exact == metrics[key]
        assert shown == (f"{exact:.4f}" if isinstance(exact, float) else str(exact))
    for name, ap in metrics["val/AP_per_class"].items():
        exact, shown = values[f"AP/{name}"]
        assert exact == ap and shown == ("-" if ap is None else f"{ap:.4f}")
    for section in ("Precision-recall", "Confusion", "Calibration", "Learning curves"):
        assert section in text
    # thumbnails of validation images, at most PER_CLASS of each kind per class
    thumbs = text.count('class="thumb"')
    assert 0 < thumbs <= 19 * 2 * 4


def test_report_on_demand_redraws_it_from_the_run_folder(run_dir, capsys):
    page = run_dir / "report.html"
    before = page.read_text()
    page.unlink()
    main([f"run={run_dir}"])
    assert f"wrote {page}" in capsys.readouterr().out
    assert page.read_text().count('class="thumb"') == before.count('class="thumb"')
    assert_renders(page)


def test_report_false_keeps_the_data_and_hpa_show_draws_it_later(tiny_dataset, tmp_path, capsys):
    from hpa.cli import compose
    from hpa.train import train
    from tiny_train import tiny

    out = tmp_path / "run"
    train(compose("train", tiny(tiny_dataset, out, "report=false")))
    # What the pictures are drawn from is written; the pictures are not.
    assert (out / "oof.csv").is_file() and (out / "report_data.npz").is_file()
    assert (out / "metrics.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert not (out / "report.html").exists() and not (out / "plots").exists()
    main([f"run={out}"])
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    assert_renders(out / "report.html")


def test_a_report_that_fails_to_draw_does_not_fail_the_run(tmp_path, caplog):
    from hpa.training.finish import write_report

    class Broken:
        @property
        def val_set(self):
            raise RuntimeError("no validation set\nsecond line")

    probs, targets = torch_pair(5)
    with caplog.at_level("WARNING"):
        assert write_report(Broken(), probs, targets, tmp_path, True, draw=True) is None
    lines = [r.getMessage() for r in caplog.records if "report" in r.getMessage()]
    assert lines == ["report: not written (RuntimeError: no validation set)"]
    assert not (tmp_path / "report.html").exists()


def torch_pair(n: int, seed: int = 0):
    import torch

    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 19)) < 0.2).astype(np.float32)
    probs = np.clip(targets * 0.6 + rng.random((n, 19)) * 0.5, 0, 1).astype(np.float32)
    return torch.from_numpy(probs), torch.from_numpy(targets)


def test_the_report_of_a_20k_image_run_stays_small(tmp_path):
    from hpa.viz.report import collect, write_run_report

    probs, targets = torch_pair(20_000, seed=1)
    rng = np.random.default_rng(2)
    drawn = []

    def picture(i: int) -> np.ndarray:
        drawn.append(i)
        return rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)  # noise: the worst case

    data = collect(
        probs.numpy(), targets.numpy(), {"ID": [f"id{i}" for i in range(20_000)]}, picture
    )
    assert len(drawn) <= 19 * 2 * 4  # only the rows the report shows are read
    metrics = {"val/mAP": 0.5, "val/AP_per_class": {}, "epoch": 3}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    page = write_run_report(tmp_path, data)
    assert page.stat().st_size < 20e6
    assert page.read_text().count('class="thumb"') == len(drawn)


def test_a_report_redrawn_from_its_data_file_shows_the_same_rows(tmp_path):
    """report_data.npz keeps what the report chose from: probabilities a few ulps apart (as a
    model's are near the threshold) still rank the same after the round trip."""
    from hpa.viz.report import collect, examples, load_run_data, save_run_data

    rng = np.random.default_rng(3)
    targets = (rng.random((300, 19)) < 0.2).astype(np.float32)
    probs = (0.5 + rng.random((300, 19)) * 1e-3).astype(np.float32)  # float16 ties them
    data = collect(
        probs,
        targets,
        {"ID": [f"id{i}" for i in range(300)]},
        lambda i: np.zeros((8, 8, 3), np.uint8),
    )
    save_run_data(tmp_path, data)
    again = load_run_data(tmp_path)
    assert examples(again.probs, again.targets) == examples(data.probs, data.targets)
    assert np.array_equal(again.probs, data.probs) and sorted(again.thumbs) == sorted(data.thumbs)


# ---- the report of a benchmark -----------------------------------------------------------------


def fake_benchmark(folder: Path) -> dict:
    """benchmark.json and each seed's result.json as hpa.benchmark writes them (2 variants,
    seeds 1 and 2; the second seed of a variant lives in <variant>-seed2/)."""
    from hpa.benchmark import add_verdicts, aggregate
    from hpa.labels import CLASS_NAMES

    summary = {}
    for k, name in enumerate(["baseline", "bigger"]):
        runs = []
        for i, seed in enumerate([1, 2]):
            result = {
                "cell_mAP": 0.41 + 0.1 * k + 0.013 * i,
                "AP_per_class": dict.fromkeys(CLASS_NAMES, 0.5),
                "train_s": 100.0 + 50 * k + i,
                "predict_s": 20.0 + k - i,
                "submission_MB": 1.25,
            }
            unit = folder / (name if i == 0 else f"{name}-seed{seed}")
            unit.mkdir(parents=True)
            (unit / "result.json").write_text(json.dumps({"fingerprint": "x", "result": result}))
            runs.append(result)
        summary[name] = {
            **aggregate(runs, [1, 2]),
            "seeds": [1, 2],
            "stage": "train" if name == "baseline" else "predict",
        }
    add_verdicts(summary)
    (folder / "benchmark.json").write_text(json.dumps(summary))
    return summary


def test_benchmark_report_renders_each_seed_and_stage(tmp_path, capsys):
    summary = fake_benchmark(tmp_path)
    main([f"benchmark={tmp_path}"])
    assert "report.html" in capsys.readouterr().out
    values = assert_renders(tmp_path / "report.html")
    text = (tmp_path / "report.html").read_text()
    assert '<td rowspan="2">predict</td>' in text  # each variant's stage
    assert "+0.1000 unclear (under 3 seeds)" in text  # bigger vs baseline, 2 seeds only
    for name, r in summary.items():
        assert values[f"{name}/cell_mAP"] == (r["cell_mAP"], f"{r['cell_mAP']:.4f}")
        assert values[f"{name}/cell_mAP_std"][0] == r["cell_mAP_std"]
        for i, seed in enumerate(r["seeds"]):
            unit = tmp_path / (name if i == 0 else f"{name}-seed{seed}")
            own = json.loads((unit / "result.json").read_text())["result"]
            assert values[f"{name}/seed{i}/cell_mAP"][0] == r["cell_mAP_per_seed"][i]
            assert values[f"{name}/seed{i}/train_s"][0] == own["train_s"]
            assert values[f"{name}/seed{i}/predict_s"][0] == own["predict_s"]


def test_the_browser_check_sees_a_broken_image_and_a_console_error(tmp_path):
    """The checks above can fail: a page with a missing image and a script error is caught."""
    page = tmp_path / "broken.html"
    good = base64.b64encode(draw.encode_png(np.full((8, 8, 3), 200, np.uint8))).decode()
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><p>text</p>'
        f'<img alt="fine" src="data:image/png;base64,{good}">'
        '<img alt="gone" src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    seen = open_page(page)
    assert seen["images"] == 2 and seen["failed"] == ["gone"]
    assert "console.error: boom" in seen["errors"] and "failed to load IMG" in seen["errors"]
    assert not not_blank(np.full((20, 20, 3), 255, np.uint8))


def test_show_holds_one_image_at_a_time(truth_set, tmp_path):
    """Drawing eight 1024 px images needs no more memory than drawing one: each is read, drawn
    and written before the next (the 559 test images never sit in memory together)."""
    import tracemalloc

    from hpa.data.images import CHANNELS, read_sample, write_channel
    from hpa.show import show

    first = sorted(p.stem for p in (truth_set / "masks").glob("*.png"))[0]
    image = read_sample(truth_set / "train", first, size=1024)
    truth = cv2.imread(str(truth_set / "masks" / f"{first}.png"), cv2.IMREAD_UNCHANGED)
    truth = cv2.resize(truth, (1024, 1024), interpolation=cv2.INTER_NEAREST)
    masks = " ".join(f"0 0.9 {encode_binary_mask(truth == t)}" for t in np.unique(truth)[1:])
    folder, rows = tmp_path / "images", []
    folder.mkdir()
    for k in range(8):
        for c, channel in enumerate(CHANNELS):
            write_channel(folder / f"copy{k}_{channel}.png", image[..., c])
        rows.append((f"copy{k}", 1024, 1024, masks))
    columns = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "sub.csv", index=False)

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            ids = [f"copy{k}" for k in range(n)]
            show(tmp_path / "sub.csv", folder, tmp_path / f"out{n}", ids=ids, progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(1)  # warm up: imports and caches are not the pictures' memory
    one, eight = peak(1), peak(8)
    image_bytes = 1024 * 1024 * 4
    assert eight < one + image_bytes, (one, eight)  # seven more images held would be 28 MiB


def test_a_cell_level_report_names_each_thumbnails_image_and_cell(tmp_path):
    from hpa.viz.report import collect, run_report

    probs, targets = torch_pair(30, seed=3)
    keys = {
        "ID": [f"image-{i // 3:02d}-with-a-long-id" for i in range(30)],
        "cell": [i % 3 for i in range(30)],
    }
    data = collect(
        probs.numpy(), targets.numpy(), keys, lambda i: np.full((40, 30, 3), i, np.uint8)
    )
    page = run_report(tmp_path, {"val/mAP": 0.5, "val/AP_per_class": {}}, data)
    assert "30 validation cells" in page and "Validation cells it gets wrong" in page
    shown = list(data.thumbs)
    assert shown and all(f"{keys['ID'][r][:18]} cell {keys['cell'][r]}<br>" in page for r in shown)
