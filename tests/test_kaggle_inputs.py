"""`auto` inputs (hpa.kaggle.inputs): found in every Kaggle layout, or one line saying what to set.

Fake /kaggle/input trees under tmp_path, in the 2026 layout (competitions/<slug>,
datasets/<owner>/<slug>, notebooks/<owner>/<slug>) and the older one (<slug>).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import pandas as pd
import pytest

from hpa.errors import InputError
from hpa.kaggle import inputs
from hpa.kaggle.inputs import (
    find_bundle,
    find_models,
    find_sample_submission,
    find_test_dir,
    find_train_data,
    notebook_inputs,
    resolve,
)
from hpa.kaggle.metadata import COMPETITION

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def mount(root: Path, layout: str, slug: str, owner: str = "me") -> Path:
    """The folder Kaggle mounts an input at, in `layout`."""
    folder = {
        "old": root / slug,
        "competitions": root / "competitions" / slug,
        "datasets": root / "datasets" / owner / slug,
        "notebooks": root / "notebooks" / owner / slug,
    }[layout]
    folder.mkdir(parents=True)
    return folder


def add_bundle(folder: Path) -> Path:
    for name in ("hpa-0.1.0-py3-none-any.whl", "hydra_core-1.3.2-py3-none-any.whl"):
        (folder / name).write_bytes(b"wheel")
    return folder


def add_model(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"format": "hpa-model/1"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def add_competition(folder: Path) -> Path:
    for sub in ("train", "test"):
        (folder / sub).mkdir()
    (folder / "train.csv").write_text("ID,Label\na,0\n")
    (folder / "sample_submission.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\n")
    return folder


def kaggle_tree(root: Path, data_layout: str, comp_layout: str) -> dict[str, Path]:
    """Bundle, one model and the competition attached, as Kaggle mounts them."""
    bundle = add_bundle(mount(root, data_layout, "hpa-bundle"))
    model = add_model(mount(root, data_layout, "hpa-model"))
    comp = add_competition(mount(root, comp_layout, COMPETITION))
    return {"bundle": bundle, "model": model, "comp": comp}


LAYOUTS = [
    ("old", "old"),  # every input at /kaggle/input/<slug>
    ("datasets", "competitions"),  # 2026
    ("notebooks", "competitions"),  # a notebook's output attached, 2026
    ("datasets", "old"),  # mixed, in case Kaggle moves one kind first
]


@pytest.mark.parametrize(("data_layout", "comp_layout"), LAYOUTS)
def test_each_input_is_found_in_every_layout(tmp_path, data_layout, comp_layout):
    tree = kaggle_tree(tmp_path, data_layout, comp_layout)
    assert find_bundle(tmp_path) == tree["bundle"]
    assert find_models(tmp_path) == [tree["model"]]
    assert find_sample_submission(tmp_path) == tree["comp"] / "sample_submission.csv"
    assert find_test_dir(tmp_path) == tree["comp"] / "test"
    assert find_train_data(tmp_path) == tree["comp"]


def test_the_root_comes_from_the_environment(tmp_path, monkeypatch):
    tree = kaggle_tree(tmp_path / "input", "datasets", "competitions")
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path / "input"))
    assert find_bundle() == tree["bundle"]
    assert resolve({"BUNDLE_DIR": "auto", "DATA_DIR": "/mine"})["DATA_DIR"] == "/mine"


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("finder", "param"),
    [
        (find_bundle, "BUNDLE_DIR"),
        (find_models, "MODEL_DIRS"),
        (find_sample_submission, "SAMPLE_SUBMISSION"),
        (find_test_dir, "INPUT_DIR"),
        (find_train_data, "DATA_DIR"),
    ],
)
def test_nothing_found_names_the_inputs_there_and_the_parameter(tmp_path, finder, param):
    (tmp_path / "empty").mkdir()
    message = one_line_error(finder, tmp_path / "empty")
    assert f"{param}=auto found no" in message and "no inputs attached" in message
    assert message.endswith(f"set {param}")
    # Something else attached: the message lists it, so a wrong attachment shows.
    mount(tmp_path / "other", "datasets", "my-notes")
    message = one_line_error(finder, tmp_path / "other")
    assert "datasets/me/my-notes" in message and f"set {param}" in message


def test_a_missing_root_says_where_to_point(tmp_path):
    message = one_line_error(find_bundle, tmp_path / "nowhere")
    assert "does not exist" in message and "HPA_KAGGLE_INPUT" in message


@pytest.mark.parametrize(("data_layout", "comp_layout"), LAYOUTS)
def test_two_candidates_are_ambiguous(tmp_path, data_layout, comp_layout):
    tree = kaggle_tree(tmp_path, data_layout, comp_layout)
    second = add_bundle(mount(tmp_path, "datasets", "hpa-bundle", owner="friend"))
    message = one_line_error(find_bundle, tmp_path)
    assert "found 2 folders with hpa-*.whl" in message
    assert str(tree["bundle"]) in message and str(second) in message
    assert message.endswith("set BUNDLE_DIR to the one to use")

    other = add_competition(mount(tmp_path, "old", "hpa-2018-copy"))
    for finder, param in [
        (find_sample_submission, "SAMPLE_SUBMISSION"),
        (find_test_dir, "INPUT_DIR"),
        (find_train_data, "DATA_DIR"),
    ]:
        message = one_line_error(finder, tmp_path)
        assert f"{param}=auto found 2" in message and str(other) in message


def test_every_distinct_model_is_used_and_twins_count_once(tmp_path):
    a = add_model(mount(tmp_path, "datasets", "hpa-model"), b"weights-a")
    b = add_model(mount(tmp_path, "old", "hpa-model-2") / "inner", b"weights-b")
    add_model(mount(tmp_path, "datasets", "hpa-model-copy"), b"weights-a")  # a attached twice
    add_model(mount(tmp_path, "datasets", "deep") / "run" / "model", b"weights-c")  # too deep
    assert find_models(tmp_path) == [a, b]


def test_the_train_notebooks_output_holds_exactly_one_model_for_auto(tmp_path):
    """Attached to the inference notebook, the train notebook's /kaggle/working is found once."""
    params = parameters("kaggle_train")
    working = Path("/kaggle/working")
    exported = Path(params["MODEL_DATASET_DIR"]).relative_to(working)
    run_model = (Path(params["OUTPUT_DIR"]) / "model").relative_to(working)
    for layout in ("notebooks", "datasets", "old"):
        root = tmp_path / layout
        output = mount(root, layout, "hpa-train")
        add_model(output / exported)
        add_model(output / run_model)  # the run's own export: the same weights, one level deeper
        (output / "cache").mkdir()
        assert find_models(root) == [output / exported]


def test_the_test_folder_follows_a_given_sample_submission(tmp_path):
    kaggle_tree(tmp_path / "input", "datasets", "competitions")
    (tmp_path / "mine").mkdir()
    mine = add_competition(tmp_path / "mine")
    found = resolve(
        {"SAMPLE_SUBMISSION": str(mine / "sample_submission.csv"), "INPUT_DIR": "auto"},
        tmp_path / "input",
    )
    assert found["INPUT_DIR"] == str(mine / "test")


def test_notebook_inputs_prints_each_value_or_stops_with_one_line(tmp_path, monkeypatch, capsys):
    tree = kaggle_tree(tmp_path, "datasets", "competitions")
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path))
    found = notebook_inputs(MODEL_DIRS=["auto"], INPUT_DIR="auto", SAMPLE_SUBMISSION="auto")
    assert found["MODEL_DIRS"] == [str(tree["model"])]
    assert found["INPUT_DIR"] == str(tree["comp"] / "test")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.endswith("(auto)") for line in out)
    assert notebook_inputs(MODEL_DIRS="/my/model")["MODEL_DIRS"] == ["/my/model"]

    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as info:
        notebook_inputs(MODEL_DIRS="auto")
    assert str(info.value).startswith("error: MODEL_DIRS=auto") and "\n" not in str(info.value)


def test_importing_inputs_pulls_in_nothing_heavy():
    """The notebooks import it right after the install; it must not wait on torch or pandas."""
    probe = (
        "import sys, hpa.kaggle.inputs; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'numpy', 'pandas', 'hydra', 'omegaconf', 'cv2'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# The notebooks' own copy of the bundle search (hpa is not importable before it installs).


def cells(name: str) -> list[str]:
    return [
        c.source for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if c.cell_type == "code"
    ]


def parameters(name: str) -> dict:
    values: dict = {}
    exec(cells(name)[0], {}, values)
    return values


def notebook_find_bundle(name: str):
    """The notebook's `find_bundle`, defined from its own cell (the install call cut off)."""
    code = cells(name)
    (source,) = [c for c in code if "def find_bundle" in c]
    definition = source.split("\nBUNDLE_DIR = find_bundle")[0]
    namespace: dict = {}
    exec(code[1], namespace)  # the imports cell (and `run`, left unused)
    exec(definition, namespace)
    return namespace["find_bundle"], definition


def test_both_notebooks_carry_the_same_bundle_search():
    _, train_source = notebook_find_bundle("kaggle_train")
    _, inference_source = notebook_find_bundle("kaggle_inference")
    assert train_source == inference_source
    assert 'mounts = ("*", "competitions/*", "datasets/*/*", "notebooks/*/*")' in train_source
    assert inputs.MOUNTS == ("*", "competitions/*", "datasets/*/*", "notebooks/*/*")


@pytest.mark.parametrize("bundles", [0, 1, 2])
@pytest.mark.parametrize(("data_layout", "comp_layout"), LAYOUTS)
def test_the_notebooks_bundle_search_agrees_with_hpa(
    tmp_path, monkeypatch, capsys, bundles, data_layout, comp_layout
):
    find, _ = notebook_find_bundle("kaggle_inference")
    add_competition(mount(tmp_path, comp_layout, COMPETITION))
    add_model(mount(tmp_path, data_layout, "hpa-model"))
    for owner in ["me", "friend"][:bundles]:
        add_bundle(mount(tmp_path, data_layout, f"hpa-bundle-{owner}", owner=owner))
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path))
    assert find("/given/bundle") == "/given/bundle"
    if bundles == 1:
        assert find("auto") == str(find_bundle())
        assert capsys.readouterr().out.strip().endswith("(auto)")
        return
    with pytest.raises(InputError):
        find_bundle()
    with pytest.raises(SystemExit) as info:
        find("auto")
    message = str(info.value)
    assert (
        message.startswith(f"error: BUNDLE_DIR=auto found {bundles} folders")
        and "\n" not in message
    )


def test_notebook_defaults_are_auto():
    inference = parameters("kaggle_inference")
    assert inference["BUNDLE_DIR"] == inference["INPUT_DIR"] == "auto"
    assert inference["SAMPLE_SUBMISSION"] == "auto" and inference["MODEL_DIRS"] == ["auto"]
    train = parameters("kaggle_train")
    assert train["BUNDLE_DIR"] == train["DATA_DIR"] == train["CACHE_DIR"] == "auto"


# hpa.predict models=auto input_dir=auto sample_submission=auto


def export_untrained(out: Path) -> Path:
    import torch

    from hpa.labels import CLASS_NAMES, NUM_CLASSES
    from hpa.models.export import export_model
    from hpa.models.factory import create_backbone
    from hpa.models.net import HPANet

    torch.manual_seed(0)
    net = HPANet(
        create_backbone("test_resnet", num_classes=NUM_CLASSES, in_chans=4),
        [0.08, 0.05, 0.05, 0.08],
        [0.15, 0.11, 0.16, 0.15],
    )
    meta = {
        "backbone": "test_resnet",
        "num_classes": NUM_CLASSES,
        "in_chans": 4,
        "class_names": list(CLASS_NAMES),
        "image_size": 64,
        "level": "image",
        "cell_margin": None,
    }
    return export_model(net, out, meta)


def test_predict_finds_its_inputs_with_auto(tmp_path):
    from hpa.predict import main
    from hpa.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path / "input"
    comp = mount(root, "competitions", COMPETITION)
    cfg = SyntheticConfig(n_images=2, seed=4, image_size=64, split="test", workers=1)
    generate_dataset(cfg, comp, progress=False)
    model = export_untrained(mount(root, "datasets", "hpa-model") / "model")
    common = ["progress=false", "device=cpu", "resume=false"]
    main(
        [
            f"models=[{model}]",
            f"input_dir={comp / 'test'}",
            f"sample_submission={comp / 'sample_submission.csv'}",
            f"submission={tmp_path / 'explicit.csv'}",
            *common,
        ]
    )
    main(
        [
            "models=auto",
            "input_dir=auto",
            "sample_submission=auto",
            f"input_root={root}",
            f"submission={tmp_path / 'auto.csv'}",
            *common,
        ]
    )
    explicit = pd.read_csv(tmp_path / "explicit.csv", keep_default_na=False)
    found = pd.read_csv(tmp_path / "auto.csv", keep_default_na=False)
    assert len(found) == 2 and (found["PredictionString"] != "").all()
    text = ["ID", "ImageWidth", "ImageHeight"]
    pd.testing.assert_frame_equal(found[text], explicit[text])
    for ours, theirs in zip(found["PredictionString"], explicit["PredictionString"], strict=True):
        a, b = ours.split(), theirs.split()
        assert a[0::3] == b[0::3] and a[2::3] == b[2::3]  # the same classes and masks
        # Confidences: the same model on the same crops (two runs may differ in the 6th digit).
        assert [float(x) for x in a[1::3]] == pytest.approx([float(x) for x in b[1::3]], abs=1e-5)


def test_predict_auto_with_nothing_attached_exits_2_naming_the_key(tmp_path, capsys):
    from hpa.predict import main

    (tmp_path / "input").mkdir()
    args = [
        "models=auto",
        "input_dir=.",
        "sample_submission=x.csv",
        f"input_root={tmp_path / 'input'}",
    ]
    with pytest.raises(SystemExit) as info:
        main([*args, f"submission={tmp_path / 'sub.csv'}"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: models=auto found no exported model") and "set models" in line


# segmenter=hpacellseg: its two weight files attached as a data set (or a Kaggle model)

NUCLEI, CELL = "dpn_unet_nuclei_v1.pth", "dpn_unet_cell_3ch_v1.pth"


def add_weights(folder: Path, nuclei: bytes = b"nuclei", cell: bytes = b"cell") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NUCLEI).write_bytes(nuclei)
    (folder / CELL).write_bytes(cell)
    return folder


@pytest.mark.parametrize("inside", ["", "weights", "pytorch/default/1"])  # a Kaggle model's
@pytest.mark.parametrize(("data_layout", "comp_layout"), LAYOUTS)
def test_hpacellseg_weights_are_found_in_every_layout(tmp_path, data_layout, comp_layout, inside):
    kaggle_tree(tmp_path, data_layout, comp_layout)
    folder = add_weights(mount(tmp_path, data_layout, "hpa-cell-seg-weights") / inside)
    find = inputs.find_hpacellseg_weight
    assert find("nuclei_model", tmp_path) == folder / NUCLEI
    assert find("cell_model", tmp_path) == folder / CELL
    found = resolve({"NUCLEI_MODEL": "auto", "CELL_MODEL": "/mine.pth"}, tmp_path)
    assert found == {"NUCLEI_MODEL": str(folder / NUCLEI), "CELL_MODEL": "/mine.pth"}


def test_hpacellseg_weights_under_the_packages_own_names_are_found_too(tmp_path):
    folder = mount(tmp_path, "datasets", "weights")
    (folder / "nuclei_model.pth").write_bytes(b"n")
    (folder / "cell_model.pth").write_bytes(b"c")
    assert inputs.find_hpacellseg_weight("nuclei_model", tmp_path) == folder / "nuclei_model.pth"
    assert inputs.find_hpacellseg_weight("cell_model", tmp_path) == folder / "cell_model.pth"


def test_a_missing_hpacellseg_weight_is_one_line_naming_what_to_attach(tmp_path):
    kaggle_tree(tmp_path, "datasets", "competitions")
    (mount(tmp_path, "datasets", "half") / CELL).write_bytes(b"cell")  # the nuclei file is missing
    message = one_line_error(inputs.find_hpacellseg_weight, "nuclei_model", tmp_path)
    assert message.startswith("segmenter.nuclei_model=auto found no hpacellseg nuclei_model")
    assert f"attach a data set with HPA-Cell-Segmentation's {NUCLEI}" in message
    assert "datasets/me/half" in message and message.endswith("set segmenter.nuclei_model")
    assert inputs.find_hpacellseg_weight("cell_model", tmp_path).name == CELL
    message = one_line_error(resolve, {"NUCLEI_MODEL": "auto"}, tmp_path)
    assert message.startswith("NUCLEI_MODEL=auto") and message.endswith("set NUCLEI_MODEL")


def test_the_same_weights_twice_count_once_and_different_ones_are_ambiguous(tmp_path):
    first = add_weights(mount(tmp_path, "datasets", "weights-a"))
    add_weights(mount(tmp_path, "datasets", "weights-b"))  # the same bytes attached twice
    assert inputs.find_hpacellseg_weight("nuclei_model", tmp_path) == first / NUCLEI
    add_weights(mount(tmp_path, "datasets", "weights-c"), nuclei=b"other")
    message = one_line_error(inputs.find_hpacellseg_weight, "nuclei_model", tmp_path)
    assert "found 2 different" in message and "weights-c" in message
    assert inputs.find_hpacellseg_weight("cell_model", tmp_path) == first / CELL


def test_hpacellseg_auto_weights_in_predict_and_in_the_segmenter(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from hpa.predict import find_auto_inputs
    from hpa.segment.hpacellseg import HPACellSegmenter

    folder = add_weights(mount(tmp_path / "input", "datasets", "weights"))
    cfg = OmegaConf.create(
        {
            "models": ["/m"],
            "sample_submission": "/s.csv",
            "input_dir": "/test",
            "input_root": str(tmp_path / "input"),
            "segmenter": {"name": "hpacellseg", "nuclei_model": "auto", "cell_model": "auto"},
        }
    )
    find_auto_inputs(cfg)
    assert cfg.segmenter.nuclei_model == str(folder / NUCLEI)
    assert cfg.segmenter.cell_model == str(folder / CELL)
    # Elsewhere (python -m hpa.segment, data=cells) the segmenter finds them itself; without
    # the pickle opt-in it stops after finding them, before loading anything.
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path / "input"))
    with pytest.raises(InputError, match="allow_pickle"):
        HPACellSegmenter(nuclei_model="auto", cell_model="auto")
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="segmenter.nuclei_model=auto"):
        HPACellSegmenter(nuclei_model="auto", cell_model="auto", allow_pickle=True)


@pytest.mark.parametrize("segmenter", ["watershed", "hpacellseg"])
def test_the_inference_notebook_passes_the_weights_found_to_predict_and_doctor(
    tmp_path, monkeypatch, capsys, segmenter
):
    kaggle_tree(tmp_path, "datasets", "competitions")
    weights = add_weights(mount(tmp_path, "datasets", "weights") / "pytorch" / "default" / "1")
    monkeypatch.setenv(inputs.ROOT_ENV, str(tmp_path))
    code = cells("kaggle_inference")
    namespace: dict = {}
    exec(code[0], namespace)  # the parameters
    namespace["SEGMENTER"] = segmenter  # as papermill -p SEGMENTER ... would
    exec(code[1], namespace)  # imports, run, hydra_value
    (step,) = [c for c in code if "notebook_inputs(" in c]
    exec(step, namespace)
    if segmenter == "watershed":  # the weights are neither looked for nor passed on
        assert namespace["SEGMENTATION"] == ["segmenter=watershed"]
        assert namespace["DOCTOR_SEGMENTER"] == [] and "NUCLEI_MODEL" not in capsys.readouterr().out
    else:
        nuclei, cell = str(weights / NUCLEI), str(weights / CELL)
        assert namespace["SEGMENTATION"] == [
            "segmenter=hpacellseg",
            f"segmenter.nuclei_model='{nuclei}'",
            f"segmenter.cell_model='{cell}'",
            "segmenter.allow_pickle=true",
            "segmenter.device=auto",
        ]
        assert namespace["DOCTOR_SEGMENTER"] == [
            "--segmenter", "hpacellseg", "--nuclei-model", nuclei, "--cell-model", cell
        ]  # fmt: skip
        assert f"NUCLEI_MODEL = {nuclei!r}  (auto)" in capsys.readouterr().out
    flat = "".join("".join(code).split())
    assert "*models,*DOCTOR_SEGMENTER)" in flat and "*SEGMENTATION," in flat
    # No weights attached: one line naming what to attach, before anything runs.
    (weights / NUCLEI).unlink()
    namespace.update(SEGMENTER="hpacellseg", NUCLEI_MODEL="auto", MODEL_DIRS=["auto"])
    namespace.update(SAMPLE_SUBMISSION="auto", INPUT_DIR="auto")
    with pytest.raises(SystemExit) as stop:
        exec(step, namespace)
    message = str(stop.value)
    assert message.startswith("error: NUCLEI_MODEL=auto found no") and NUCLEI in message
    assert "\n" not in message
