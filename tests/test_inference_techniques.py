"""Issue 13's inference techniques: dihedral/scale TTA, model weights, the ensemble search on
out-of-fold predictions, area-scaled cell weights and the confidence floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from hpa.cli import compose
from hpa.ensemble import main as ensemble_main
from hpa.ensemble import search_weights
from hpa.errors import InputError
from hpa.evaluate import evaluate
from hpa.inference.classifiers import predict_probs
from hpa.inference.combine import cell_weights
from hpa.inference.tta import DIHEDRAL, augmentations, transform_names
from hpa.inference.weights import read_ensemble_file, resolve_model_weights
from hpa.labels import NUM_CLASSES
from hpa.predict import apply_ensemble, options_from
from hpa.segment.base import Segmentation
from hpa.submission.writer import prediction_string
from predicting import run_predict as predict_submission
from untrained_model import export_untrained, untrained_net

torch.set_num_threads(1)


class Symmetrised(nn.Module):
    """A net made exactly D4-invariant: the mean of its logits over the 8 transforms."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.net(t(x)) for t in DIHEDRAL.values()]).mean(0)


def images(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 4), dtype=np.uint8)


# ---------------------------------------------------------------- TTA


def test_the_eight_transforms_are_the_distinct_elements_of_d4():
    x = torch.arange(16).reshape(1, 1, 4, 4)
    outs = {tuple(t(x).flatten().tolist()) for t in DIHEDRAL.values()}
    assert len(DIHEDRAL) == 8 and len(outs) == 8
    # closed under composition: every pair composes to one of the eight
    for a in DIHEDRAL.values():
        for b in DIHEDRAL.values():
            assert tuple(a(b(x)).flatten().tolist()) in outs


def test_a_symmetric_model_is_invariant_to_every_dihedral_transform_of_the_input():
    net = Symmetrised(untrained_net())
    batch = images()
    reference = predict_probs([net], batch, augmentations("none"), batch_size=8)
    for name, transform in DIHEDRAL.items():
        moved = transform(torch.from_numpy(batch).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        got = predict_probs([net], moved, augmentations("none"), batch_size=8)
        assert np.allclose(got, reference, atol=1e-5), name
    # and d4 TTA of a symmetric model changes nothing
    assert np.allclose(predict_probs([net], batch, augmentations("d4"), 8), reference, atol=1e-5)


def test_d4_tta_is_the_mean_over_the_eight_transformed_inputs():
    net = untrained_net(1)
    batch = images(seed=1)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = torch.stack([torch.sigmoid(net(t(x))) for t in DIHEDRAL.values()]).mean(0)
    got = predict_probs([net], batch, augmentations("d4"), batch_size=2)
    assert np.allclose(got, expected.numpy(), atol=1e-6)
    # the model is not symmetric, so the views do differ (the test above is not vacuous)
    single = predict_probs([net], batch, augmentations("none"), batch_size=2)
    assert not np.allclose(single, got, atol=1e-4)


def test_scales_resize_the_input_and_average_with_every_transform():
    net = untrained_net(2)
    batch = images(seed=2)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    big = torch.nn.functional.interpolate(x, size=[40, 40], mode="bilinear", align_corners=False)
    with torch.inference_mode():
        expected = (torch.sigmoid(net(x)) + torch.sigmoid(net(big))) / 2
    got = predict_probs([net], batch, augmentations(["none"], [1.0, 1.25]), batch_size=8)
    assert np.allclose(got, expected.numpy(), atol=1e-6)
    assert len(augmentations("d4", [1.0, 1.25])) == 16


def test_tta_names_old_and_new():
    assert transform_names(4) == ["none", "hflip", "vflip", "hvflip"]  # the old flip TTA
    assert transform_names("d4") == list(DIHEDRAL) == transform_names(8)
    assert transform_names(["none", "rot90"]) == ["none", "rot90"]
    assert transform_names(["flips"]) == transform_names(4)
    for bad in (["rotate"], 0, 9, []):
        with pytest.raises(InputError, match="tta="):
            transform_names(bad)
    with pytest.raises(InputError, match="tta_scales"):
        augmentations("none", [10.0])


# ---------------------------------------------------------------- model weights


def test_weighted_ensemble_mean():
    a, b, batch = untrained_net(3), untrained_net(4), images(seed=3)
    pa = predict_probs([a], batch, augmentations("none"), 8)
    pb = predict_probs([b], batch, augmentations("none"), 8)
    got = predict_probs([a, b], batch, augmentations("none"), 8, weights=[3.0, 1.0])
    assert np.allclose(got, 0.75 * pa + 0.25 * pb, atol=1e-6)


def test_model_weights_forms():
    dirs = ["/runs/a/model", "/runs/b/model"]
    assert resolve_model_weights(None, dirs) == [1.0, 1.0]
    assert resolve_model_weights([2, 0.5], dirs) == [2.0, 0.5]
    assert resolve_model_weights({"b": 3}, dirs) == [1.0, 3.0]  # by run name
    with pytest.raises(InputError, match="2 models"):
        resolve_model_weights([1.0], dirs)
    with pytest.raises(InputError, match="none of the models"):
        resolve_model_weights({"c": 1}, dirs)
    with pytest.raises(InputError, match="all 0"):
        resolve_model_weights([0, 0], dirs)
    with pytest.raises(InputError, match=">= 0"):
        resolve_model_weights([-1, 1], dirs)


# ---------------------------------------------------------------- area weights, floor


def segmentation() -> Segmentation:
    """A 100 x 100 image: cell 1 (400 px) on the border, cells 2 (400 px) and 3 (1225 px) inside."""
    cells = np.zeros((100, 100), np.int32)
    cells[0:20, 0:20] = 1
    cells[40:60, 40:60] = 2
    cells[60:95, 60:95] = 3
    return Segmentation(cells, np.zeros_like(cells), np.array([1]))


def test_area_weights_scale_border_and_interior_cells_by_their_area():
    seg, ids = segmentation(), np.array([1, 2, 3])
    areas = np.bincount(seg.cells.ravel())[ids]
    # constants meant for a 200 px image: scaled by (100 / 200)^2 = 1/4 here
    w = cell_weights(
        seg, ids, 1.0, 1.0, 0.25, area_border=3200, area_interior=2400, reference_size=200
    )
    assert np.allclose(w, [min(1, areas[0] / 800), min(1, areas[1] / 600), 1.0])
    assert w[0] == pytest.approx(0.5) and w[2] == 1.0  # a big cell is untouched
    # off: null or 0; the constant border weight multiplies on top
    assert np.allclose(cell_weights(seg, ids, 1.0, 1.0, 0.25, None, 0), [1, 1, 1])
    w = cell_weights(seg, ids, 0.5, 1.0, 0.25, area_border=800, reference_size=100)
    assert np.allclose(w, [0.25, 1.0, 1.0])


def test_confidence_floor_drops_low_classes_but_keeps_every_cells_top_class():
    probs = np.full((2, NUM_CLASSES), 0.001)
    probs[0, 3], probs[0, 7] = 0.9, 0.2
    probs[1, 5] = 0.01  # this cell is all under the floor: only its top class stays
    text = prediction_string(["m0", "m1"], probs, min_confidence=0.05)
    triples = [tuple(text.split()[i : i + 3]) for i in range(0, len(text.split()), 3)]
    assert triples == [("3", "0.9", "m0"), ("7", "0.2", "m0"), ("5", "0.01", "m1")]
    assert len(prediction_string(["m0", "m1"], probs).split()) == 3 * 2 * NUM_CLASSES


# ---------------------------------------------------------------- the ensemble search


def fabricated_runs(root: Path, n: int = 300) -> tuple[Path, list[Path]]:
    """train.csv plus three image-level runs: two informative (noisy truth), one pure noise."""
    rng = np.random.default_rng(0)
    truth = (rng.random((n, NUM_CLASSES)) < 0.15).astype(float)
    truth[np.arange(n), rng.integers(0, NUM_CLASSES - 1, n)] = 1
    truth[:, NUM_CLASSES - 1] = 0  # Negative stands alone in train.csv: leave it out
    ids = [f"img{i:04d}" for i in range(n)]
    labels = ["|".join(str(c) for c in np.flatnonzero(row)) for row in truth]
    data = root / "data"
    data.mkdir()
    pd.DataFrame({"ID": ids, "Label": labels}).to_csv(data / "train.csv", index=False)
    runs = []
    for k, probs in enumerate(
        [
            np.clip(truth * 0.5 + rng.random(truth.shape) * 0.7, 0, 1),
            np.clip(truth * 0.5 + rng.random(truth.shape) * 0.7, 0, 1),
            rng.random(truth.shape),  # noise
        ]
    ):
        run = root / f"run{k}"
        export_untrained(run / "model", "image", 32)
        frame = pd.DataFrame(probs, columns=[str(c) for c in range(NUM_CLASSES)])
        frame.insert(0, "fold", 0)
        frame.insert(0, "ID", ids)
        frame.to_csv(run / "oof.csv", index=False)
        runs.append(run)
    return data, runs


def test_search_weights_downweights_a_noise_model():
    rng = np.random.default_rng(1)
    target = rng.random(200)
    preds = [target + rng.normal(0, 0.2, 200), rng.random(200)]

    def score(p):  # a smooth stand-in metric: correlation with the target
        return float(np.corrcoef(p, target)[0, 1])

    w, best, equal = search_weights(preds, score, step=0.1, passes=3, min_gain=0.0)
    assert w[1] < 0.2 and best > equal and w.sum() == pytest.approx(1.0)


def test_ensemble_command_downweights_noise_and_round_trips_into_predict(tmp_path):
    data, runs = fabricated_runs(tmp_path)
    out = tmp_path / "ensemble.yaml"
    ensemble_main([f"oof=[{','.join(map(str, runs))}]", f"data_root={data}", f"out={out}"])
    written = yaml.safe_load(out.read_text())
    weights = written["model_weights"]
    assert weights[2] < min(weights[0], weights[1]) and weights[2] <= 0.1
    scores = written["oof_scores"]["image"]
    assert scores["mAP_chosen"] >= scores["mAP_equal_weights"]
    assert written["models"] == [str((r / "model").resolve()) for r in runs]

    # round trip: ensemble=FILE sets models and weights; a command-line key wins over the file
    settings = read_ensemble_file(out)
    cfg = compose("predict", [f"ensemble={out}", "input_dir=x", "sample_submission=y"])
    apply_ensemble(cfg, explicit={"ensemble", "input_dir", "sample_submission"})
    assert list(cfg.models) == settings["models"] and list(cfg.model_weights) == weights
    cfg = compose("predict", [f"ensemble={out}", "models=[/kaggle/a,/kaggle/b,/kaggle/c]"])
    apply_ensemble(cfg, explicit=None)  # no command line: keys off their defaults are kept
    assert list(cfg.models) == ["/kaggle/a", "/kaggle/b", "/kaggle/c"]
    assert list(cfg.model_weights) == weights


def test_cell_and_image_oof_search_the_combine_too(tmp_path):
    """A cell-level run with per-cell truth (cells.csv) beside an image-level run: the file gets
    weights for both groups and a combine method."""
    rng = np.random.default_rng(2)
    ids = [f"img{i:03d}" for i in range(60)]
    cell_truth = (rng.random((60, 3, NUM_CLASSES - 1)) < 0.2).astype(float)
    cell_truth[:, :, 0] = 1  # every cell has class 0, so no cell is unlabelled
    image_truth = cell_truth.max(axis=1)
    data = tmp_path / "data"
    data.mkdir()
    pad = np.zeros((60, 1))
    labels = ["|".join(map(str, np.flatnonzero(r))) for r in image_truth]
    pd.DataFrame({"ID": ids, "Label": labels}).to_csv(data / "train.csv", index=False)
    rows = [
        (sid, 10 * (c + 1), "|".join(map(str, np.flatnonzero(cell_truth[i, c]))))
        for i, sid in enumerate(ids)
        for c in range(3)
    ]
    pd.DataFrame(rows, columns=["ID", "cell_id", "Label"]).to_csv(data / "cells.csv", index=False)
    image_probs = np.hstack(
        [np.clip(image_truth * 0.4 + rng.random(image_truth.shape) * 0.8, 0, 1), pad]
    )
    cells = cell_truth.reshape(-1, NUM_CLASSES - 1)
    cell_probs = np.hstack(
        [np.clip(cells * 0.4 + rng.random(cells.shape) * 0.8, 0, 1), np.zeros((180, 1))]
    )
    runs = []
    for name, probs, level, keys in (
        ("image", image_probs, "image", {"ID": ids}),
        ("cell", cell_probs, "cell", {"ID": np.repeat(ids, 3), "cell": np.tile([0, 1, 2], 60)}),
    ):
        run = tmp_path / name
        export_untrained(run / "model", level, 32)
        frame = pd.DataFrame(probs, columns=[str(c) for c in range(NUM_CLASSES)])
        frame.insert(0, "fold", 0)
        for position, (key, values) in enumerate(keys.items()):
            frame.insert(position, key, values)
        frame.to_csv(run / "oof.csv", index=False)
        runs.append(run)
    out = tmp_path / "e.yaml"
    ensemble_main([f"oof=[{runs[0]},{runs[1]}]", f"data_root={data}", f"out={out}", "step=0.5"])
    written = yaml.safe_load(out.read_text())
    assert written["model_weights"] == [1.0, 1.0]  # one model per level: all of its group
    assert written["combine"]["method"] in ("power", "product", "mean")
    assert 0 <= written["combine"]["cell_weight"] <= 1
    assert written["oof_scores"]["cell"]["targets"].startswith("cell truth")
    assert (
        written["oof_scores"]["combine"]["mAP_chosen"]
        >= written["oof_scores"]["combine"]["mAP_default"]
    )


def test_ensemble_file_with_combine_sets_predict_options(tmp_path):
    out = tmp_path / "e.yaml"
    out.write_text(
        "models: [m1/model, m2/model]\nmodel_weights: [0.7, 0.3]\n"
        "combine: {method: product, cell_weight: 0.2}\noof_scores: {ignored: 1}\n"
    )
    cfg = compose("predict", [f"ensemble={out}", "combine.cell_weight=0.9"])
    apply_ensemble(cfg, explicit={"ensemble", "combine.cell_weight"})
    assert cfg.models == [str(tmp_path / "m1/model"), str(tmp_path / "m2/model")]
    assert cfg.combine.method == "product" and cfg.combine.cell_weight == 0.9
    out.write_text("combine: {method: nonsense}\n")
    cfg = compose("predict", [f"ensemble={out}"])
    with pytest.raises(InputError, match="combine.method"):
        apply_ensemble(cfg, explicit={"ensemble"})


def test_ensemble_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        ensemble_main([f"oof=[{tmp_path / 'nothing'}]", f"data_root={tmp_path}"])
    assert err.value.code == 2
    assert "oof.csv" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end through predict


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    from hpa.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("testset")
    cfg = SyntheticConfig(n_images=3, seed=11, image_size=64, split="test", workers=1)
    return generate_dataset(cfg, root / "set", progress=False)


def run_predict(models: list[Path], testset: Path, out: Path, *extra: str) -> pd.DataFrame:
    """Predicted with the true masks: these tests compare classifications, not segmentations."""
    return predict_submission(models, testset, out, "segmenter=truth", *extra)


def test_predict_with_new_options_end_to_end(testset, tmp_path):
    models = [
        export_untrained(tmp_path / "a", "image", 32, seed=5),
        export_untrained(tmp_path / "b", "cell", 32, seed=6),
    ]
    full = run_predict(
        models, testset, tmp_path / "full.csv", "tta=[none,rot90]", "tta_scales=[1.0,1.25]"
    )
    floor = run_predict(
        models, testset, tmp_path / "floor.csv", "tta=[none,rot90]", "tta_scales=[1.0,1.25]",
        "min_confidence=0.6", "model_weights=[1,1]",
    )  # fmt: skip
    assert (tmp_path / "floor.csv").stat().st_size < (tmp_path / "full.csv").stat().st_size
    for a, b in zip(full.itertuples(), floor.itertuples(), strict=True):
        masks_a = set(a.PredictionString.split()[2::3])
        masks_b = set(b.PredictionString.split()[2::3])
        assert masks_a == masks_b  # no cell lost
    # weight 0 leaves a model out: the image model alone gives what models=[a] gives
    alone = run_predict(models[:1], testset, tmp_path / "alone.csv")
    zero = run_predict(models, testset, tmp_path / "zero.csv", "model_weights=[1,0]")
    assert alone["PredictionString"].tolist() == zero["PredictionString"].tolist()


def test_options_from_reads_the_new_keys():
    from hpa.inference.predictor import PredictOptions

    cfg = compose(
        "predict",
        ["tta=d4", "tta_scales=[1.0,1.25]", "downweight.area.border=80000"],
    )
    o = options_from(cfg, PredictOptions)
    assert o.tta == "d4" and list(o.tta_scales) == [1.0, 1.25]
    assert o.area_border == 80000 and o.area_interior is None and o.area_reference_size == 2048
    with pytest.raises(InputError, match="min_confidence"):
        compose("predict", ["min_confidence=-1"])


def test_area_tuning_picks_a_border_constant_that_sinks_unannotated_border_fragments(tmp_path):
    """Truth: two inner cells of class 0 and a small border fragment nobody annotated. The
    submission ranks the fragment first; the area search must find the border constant that
    sinks it, and score it through the competition metric (AP 1 vs 2/3 off)."""
    import cv2

    from hpa.submission.encoding import encode_binary_mask

    truth = tmp_path / "truth"
    (truth / "masks").mkdir(parents=True)
    cells = np.zeros((100, 100), np.uint16)
    cells[20:50, 20:50] = 1
    cells[55:85, 55:85] = 2
    cells[0:10, 90:100] = 3  # 100 px on the border
    cv2.imwrite(str(truth / "masks" / "a.png"), cells)
    (truth / "cells.csv").write_text("ID,cell_id,Label\na,1,0\na,2,0\na,3,\n")
    masks = [encode_binary_mask(cells == i) for i in (1, 2, 3)]
    text = " ".join(f"0 {c} {m}" for c, m in zip((0.5, 0.4, 0.9), masks, strict=True))
    pd.DataFrame(
        [{"ID": "a", "ImageWidth": 100, "ImageHeight": 100, "PredictionString": text}]
    ).to_csv(tmp_path / "sub.csv", index=False)
    out = tmp_path / "ensemble.yaml"
    out.write_text("models: [m/model]\nmodel_weights: [1]\n")  # mode=area adds to it
    ensemble_main(
        [
            "mode=area",
            f"submission={tmp_path / 'sub.csv'}",
            f"truth_dir={truth}",
            f"out={out}",
            "area.borders=[0,50,400]",
            "area.interiors=[0,50]",
            "area.reference_size=100",
            "progress=false",
        ]
    )
    written = yaml.safe_load(out.read_text())
    assert written["downweight"]["area"]["border"] == 400  # 0.9 x 100/400 < 0.4: ranked last
    assert written["downweight"]["area"]["interior"] is None  # no gain: stays off
    assert written["area_scores"]["mAP_chosen"] == pytest.approx(1.0)
    assert written["area_scores"]["mAP_off"] == pytest.approx(2 / 3, abs=1e-4)
    scored = evaluate(tmp_path / "sub.csv", truth, progress=False)["mAP"]  # one metric for both
    assert written["area_scores"]["mAP_off"] == pytest.approx(scored, abs=1e-5)
    assert written["models"] == ["m/model"]  # the weights a first run wrote are kept
    settings = read_ensemble_file(out)
    assert settings["downweight.area.border"] == 400
