"""`python -m hpa.predict`: the submission format, combination, resume, errors and end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.errors import InputError
from hpa.inference.combine import cell_weights, combine
from hpa.inference.tta import transform_names
from hpa.labels import NUM_CLASSES
from hpa.predict import main
from hpa.segment.base import Segmentation
from hpa.submission.encoding import decode_binary_mask
from hpa.submission.writer import SubmissionWriter, prediction_string, read_sample_submission
from hpa.synthetic import SyntheticConfig, generate_dataset
from predicting import check_format, parse, run_predict
from untrained_model import export_untrained


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "image": export_untrained(root / "image", "image", 64),
        "cell": export_untrained(root / "cell", "cell", 32, seed=1),
    }


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    """16-bit synthetic test images of two sizes (64 and 80 px) in one folder, with truth."""
    root = tmp_path_factory.mktemp("testset")
    parts = []
    for size, seed in ((64, 11), (80, 12)):
        cfg = SyntheticConfig(
            n_images=3, seed=seed, image_size=size, bit_depth=16, split="test", workers=1
        )
        parts.append(generate_dataset(cfg, root / f"part{size}", progress=False))
    for sub in ("test", "masks", "nuclei"):
        (root / sub).mkdir()
        for part in parts:
            for f in (part / sub).iterdir():
                shutil.copy(f, root / sub / f.name)
    frames = [pd.read_csv(p / "sample_submission.csv", keep_default_na=False) for p in parts]
    pd.concat(frames).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_submission_format_with_image_and_cell_models(models, testset, tmp_path):
    out = tmp_path / "sub.csv"
    submission = run_predict([models["image"], models["cell"]], testset, out, "tta=[none,hflip]")
    check_format(submission, read_sample_submission(testset / "sample_submission.csv"))
    assert sum(len(t) for t in parse(submission).values()) > 0
    assert not list(tmp_path.glob(".*partial*"))  # the partial files were moved into place


def test_truth_segmenter_reproduces_the_true_masks(models, testset, tmp_path):
    submission = run_predict([models["image"]], testset, tmp_path / "sub.csv", "segmenter=truth")
    for row in submission.itertuples():
        truth = cv2.imread(str(testset / "masks" / f"{row.ID}.png"), cv2.IMREAD_UNCHANGED)
        masks = {t[2] for t in parse(submission)[row.ID]}
        decoded = [decode_binary_mask(m, row.ImageHeight, row.ImageWidth) for m in masks]
        cells = [truth == i for i in np.unique(truth) if i > 0]
        assert len(decoded) == len(cells)
        assert all(any(np.array_equal(d, c) for c in cells) for d in decoded)


def test_image_without_cells_gets_an_empty_prediction(models, testset, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(testset / "masks", masks)
    first = read_sample_submission(testset / "sample_submission.csv").iloc[0]
    cv2.imwrite(
        str(masks / f"{first.ID}.png"), np.zeros((first.ImageHeight, first.ImageWidth), np.uint16)
    )
    submission = run_predict(
        [models["image"]],
        testset,
        tmp_path / "sub.csv",
        "segmenter=truth",
        f"segmenter.mask_dir={masks}",
    )
    assert submission["PredictionString"].iloc[0] == ""
    assert all(submission["PredictionString"].iloc[1:] != "")


def test_predictions_depend_on_the_combination(models, testset, tmp_path):
    common = ("segmenter=truth", "image_model_on_cells=true")
    image_only = parse(
        run_predict(
            [models["image"]], testset, tmp_path / "a.csv", *common, "combine.cell_weight=0.0"
        )
    )
    blended = parse(run_predict([models["image"]], testset, tmp_path / "b.csv", *common))
    sid = next(iter(image_only))
    per_cell = lambda rows, c: [conf for cls, conf, _ in rows[sid] if cls == c]  # noqa: E731
    assert len(set(per_cell(image_only, 0))) == 1  # the image's probability, broadcast
    assert len(set(per_cell(blended, 0))) > 1  # the crops make cells differ


def test_size_mismatch_names_the_image(models, testset, tmp_path, capsys):
    sample = pd.read_csv(testset / "sample_submission.csv", keep_default_na=False)
    sample.loc[1, "ImageWidth"] = 100
    bad = tmp_path / "sample.csv"
    sample.to_csv(bad, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                f"models=[{models['image']}]",
                f"input_dir={testset / 'test'}",
                f"sample_submission={bad}",
                f"submission={tmp_path / 'sub.csv'}",
                "progress=false",
            ]
        )
    assert exit_info.value.code == 2
    assert sample.loc[1, "ID"] in capsys.readouterr().err
    assert not (tmp_path / "sub.csv").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing models"),
        (["models=[/nonexistent]", "input_dir=.", "sample_submission=x.csv"], "sample submission"),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


REAL = Path(__file__).parents[2] / "shared" / "fixtures" / "hpa_real"


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """The real 2048 px fixtures as 8-bit (as shipped) and as 16-bit copies (like Kaggle's test)."""
    if not (REAL / "train.csv").is_file():
        pytest.skip(f"real HPA fixtures not found at {REAL} (a fresh clone has no ../shared)")
    root = tmp_path_factory.mktemp("real")
    ids = pd.read_csv(REAL / "train.csv")["ID"].tolist()
    pd.DataFrame(
        {"ID": ids, "ImageWidth": 2048, "ImageHeight": 2048, "PredictionString": ""}
    ).to_csv(root / "sample_submission.csv", index=False)
    (root / "sixteen").mkdir()
    for path in (REAL / "train").glob("*.png"):
        eight = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / "sixteen" / path.name), eight.astype(np.uint16) * 257)
    return root


def test_real_images_in_8_and_16_bit_give_the_same_valid_submission(models, real, tmp_path):
    runs = {}
    for name, folder in (("8bit", REAL / "train"), ("16bit", real / "sixteen")):
        main(
            [
                f"models=[{models['image']},{models['cell']}]",
                f"input_dir={folder}",
                f"sample_submission={real / 'sample_submission.csv'}",
                f"submission={tmp_path / name}.csv",
                "progress=false",
            ]
        )
        runs[name] = pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False, dtype={"ID": str})
    check_format(runs["8bit"], read_sample_submission(real / "sample_submission.csv"))
    assert (runs["8bit"]["PredictionString"] != "").all()  # cells found in every real image
    assert runs["8bit"].equals(runs["16bit"])


def test_prediction_string_repeats_each_mask_for_all_classes():
    probs = np.linspace(0, 1, 2 * NUM_CLASSES).reshape(2, NUM_CLASSES)
    parts = prediction_string(["maskA", "maskB"], probs).split()
    assert len(parts) == 3 * 2 * NUM_CLASSES
    assert parts[0::3] == [str(c) for c in range(NUM_CLASSES)] * 2
    assert parts[2::3] == ["maskA"] * NUM_CLASSES + ["maskB"] * NUM_CLASSES
    assert np.allclose([float(p) for p in parts[1::3]], probs.ravel(), atol=1e-6)


def test_combine_methods():
    cell = np.array([[0.25, 1.0], [1.0, 0.04]])
    image = np.array([1.0, 0.25])
    assert np.allclose(combine(cell, image, 2, "power", 0.5), [[0.5, 0.5], [1.0, 0.1]])
    assert np.allclose(combine(cell, image, 2, "product", 0.5), cell * image)
    assert np.allclose(combine(cell, image, 2, "mean", 0.25), 0.25 * cell + 0.75 * image)
    assert np.allclose(combine(None, image, 3, "power", 0.5), np.tile(image, (3, 1)))
    assert np.allclose(combine(cell, None, 2, "power", 0.5), cell)
    with pytest.raises(InputError, match="combine.method"):
        combine(cell, image, 2, "max", 0.5)


def test_border_and_small_cells_are_down_weighted():
    cells = np.zeros((20, 20), np.int32)
    cells[0:8, 0:8] = 1  # on the border
    cells[10:18, 10:18] = 2
    cells[5:7, 12:14] = 3  # tiny
    seg = Segmentation(cells, np.zeros_like(cells), np.array([1]))
    ids = np.array([1, 2, 3])
    assert np.allclose(cell_weights(seg, ids, 1.0, 1.0, 0.25), [1, 1, 1])
    assert np.allclose(cell_weights(seg, ids, 0.5, 0.2, 0.25), [0.5, 1.0, 0.2])


def test_tta_choices():
    assert transform_names(["none", "hflip"]) == ["none", "hflip"]
    assert transform_names(4) == ["none", "hflip", "vflip", "hvflip"]
    with pytest.raises(InputError, match="tta"):
        transform_names(["rotate"])


def test_writer_resumes_a_killed_run_and_restarts_on_other_settings(tmp_path):
    out, ids = tmp_path / "sub.csv", ["a", "b", "c"]
    writer = SubmissionWriter(out, ids, {"models": ["m"]})
    writer.write("a", 8, 8, "0 0.5 xyz")
    writer.write("b", 8, 8, "")
    with open(writer.partial, "a") as f:
        f.write("c,8,8,0 0.")  # killed mid-row
    resumed = SubmissionWriter(out, ids, {"models": ["m"]})
    assert resumed.done == 2
    resumed.write("c", 8, 8, "1 0.25 xyz")
    resumed.commit()
    assert out.read_text().splitlines() == [
        "ID,ImageWidth,ImageHeight,PredictionString",
        "a,8,8,0 0.5 xyz",
        "b,8,8,",
        "c,8,8,1 0.25 xyz",
    ]
    SubmissionWriter(out, ids, {"models": ["m"]})
    assert SubmissionWriter(out, ids, {"models": ["other"]}).done == 0


def test_sample_submission_errors(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ID,ImageWidth\nx,64\n")
    with pytest.raises(InputError, match="ImageHeight"):
        read_sample_submission(path)
    path.write_text("ID,ImageWidth,ImageHeight\nx,64,big\n")
    with pytest.raises(InputError, match="ID x"):
        read_sample_submission(path)
