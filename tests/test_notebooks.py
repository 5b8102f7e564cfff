"""notebooks/: paired jupytext .py and output-free .ipynb, the contract's parameters, explore runs."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["kaggle_inference", "kaggle_train", "explore"]


def parameters(name: str) -> dict:
    """The values the `parameters` cell defines, as papermill would override them."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}.ipynb needs exactly one cell tagged parameters"
    values: dict = {}
    exec(cells[0].source, {}, values)
    return values


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_in_sync_with_its_py_and_has_no_outputs(name):
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [(c.cell_type, c.source) for c in ipynb.cells] == [
        (c.cell_type, c.source) for c in py.cells
    ], f"run `jupytext --sync notebooks/{name}.py`"
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert ipynb.metadata["kernelspec"]["name"] == "python3"
    for cell in ipynb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_inference_parameters_follow_the_contract():
    values = parameters("kaggle_inference")
    assert set(values) == {
        "BUNDLE_DIR",
        "MODEL_DIRS",
        "INPUT_DIR",
        "SAMPLE_SUBMISSION",
        "SUBMISSION",
        "SEGMENTER",  # beyond the contract: hpacellseg with its weights attached
        "NUCLEI_MODEL",
        "CELL_MODEL",
        "PREDICT_OPTIONS",  # any hpa.predict option: TTA, ensembles, CAM, the confidence floor
    }
    assert values["PREDICT_OPTIONS"] == []
    assert values["SEGMENTER"] == "watershed"  # the weight-free default
    assert values["NUCLEI_MODEL"] == values["CELL_MODEL"] == "auto"
    # The inputs default to `auto`: found under /kaggle/input (tests/test_kaggle_inputs.py).
    assert values["MODEL_DIRS"] == ["auto"]
    for key in ("BUNDLE_DIR", "INPUT_DIR", "SAMPLE_SUBMISSION"):
        assert values[key] == "auto", key
    assert values["SUBMISSION"] == "/kaggle/working/submission.csv"


def test_train_notebook_writes_only_under_kaggle_working():
    values = parameters("kaggle_train")
    assert values["BUNDLE_DIR"] == values["DATA_DIR"] == values["CACHE_DIR"] == "auto"
    for key in ("OUTPUT_DIR", "MODEL_DATASET_DIR"):
        assert values[key].startswith("/kaggle/working/"), key
    code = (NOTEBOOKS / "kaggle_train.py").read_text()
    # CACHE_DIR=auto is beside OUTPUT_DIR (/kaggle/working/cache), and both commands use it.
    assert 'CACHE_DIR = str(Path(OUTPUT_DIR).parent / "cache")' in code
    assert 'f"data.cache_dir={CACHE_DIR}"' in code
    assert 'run("-m", "hpa.prepare", *DATA)' in code and 'run("-m", "hpa.train", *DATA' in code


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_installs_from_the_bundle_offline(name):
    bundle = parameters(name)["BUNDLE_DIR"]
    assert bundle == "auto" or bundle.startswith("/kaggle/input/")
    code = "".join((NOTEBOOKS / f"{name}.py").read_text().split())  # layout-independent
    assert '"--no-index","--find-links",BUNDLE_DIR,"hpa"' in code


def test_explore_finds_its_inputs_like_the_others():
    values = parameters("explore")
    assert values["BUNDLE_DIR"] == values["DATA_DIR"] == values["MODEL_DIR"] == "auto"
    assert "/kaggle/input/" not in (NOTEBOOKS / "explore.py").read_text()


@pytest.mark.slow
def test_explore_runs_on_a_synthetic_set_and_draws_a_models_predictions(tmp_path, monkeypatch):
    """/kaggle/input holding a synthetic competition set and a model: `auto` finds both, and the
    predictions section draws each image's cells through hpa.show, marked against the truth."""
    import papermill as pm

    from hpa.synthetic.generator import SyntheticConfig, generate_dataset
    from untrained_model import export_untrained

    root = tmp_path / "input"
    data = generate_dataset(
        SyntheticConfig(n_images=6, image_size=96, seed=1),
        root / "competitions" / "hpa-single-cell-image-classification",
        progress=False,
    )
    model = export_untrained(root / "datasets" / "me" / "hpa-model")
    monkeypatch.setenv("HPA_KAGGLE_INPUT", str(root))
    out = tmp_path / "explore.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "explore.ipynb"),
        str(out),
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        parameters={"N_IMAGES": 2, "DISPLAY_SIZE": 96, "BUNDLE_DIR": "/nonexistent"},
    )
    executed = nbformat.read(out, as_version=4)
    pictures = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pictures) >= 4 + 2  # labels, co-occurrence, channels, cells; a prediction each
    text = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "6 images" in text
    assert f"DATA_DIR = {str(data)!r}  (auto)" in text
    assert f"MODEL_DIR = {str(model)!r}  (auto)" in text


# The Kaggle notebooks' own logic, executed cell by cell against a fake /kaggle/input, with the
# commands they start (`run`: pip, the doctor, prepare, train, predict) recorded instead of run.


def execute(name: str, params: dict, fake_run) -> dict:
    """Every code cell of notebooks/NAME.py in order, `run` replaced once it is defined."""
    code = [
        c.source for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if c.cell_type == "code"
    ]
    namespace: dict = {}
    exec(code[0], namespace)
    namespace.update(params)
    exec(code[1], namespace)
    assert "run" in namespace, "the second cell defines run()"
    namespace["run"] = fake_run
    for source in code[2:]:
        exec(source, namespace)
    return namespace


@pytest.fixture
def kaggle_input(tmp_path, monkeypatch) -> dict[str, Path]:
    """/kaggle/input in the 2026 layout: the bundle, a model and the competition (10 images)."""
    root = tmp_path / "input"
    bundle = root / "datasets" / "me" / "hpa-bundle"
    model = root / "notebooks" / "me" / "hpa-train" / "hpa-model"
    comp = root / "competitions" / "hpa-single-cell-image-classification"
    for folder in (bundle, model, comp / "train", comp / "test"):
        folder.mkdir(parents=True)
    (bundle / "hpa-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (comp / "train.csv").write_text("ID,Label\n" + "".join(f"img{i},0\n" for i in range(10)))
    (comp / "sample_submission.csv").write_text(
        "ID,ImageWidth,ImageHeight,PredictionString\nimg0,64,64,\n"
    )
    monkeypatch.setenv("HPA_KAGGLE_INPUT", str(root))
    return {"bundle": bundle, "model": model, "comp": comp}


class Commands:
    """A stand-in for the notebooks' run(): records `python ARGS`, fakes what they write."""

    def __init__(self, output_dir: Path | None = None, submission: Path | None = None):
        self.calls: list[tuple[str, ...]] = []
        self.output_dir, self.submission = output_dir, submission

    def __call__(self, *args: str) -> None:
        self.calls.append(args)
        if args[:2] == ("-m", "hpa.prepare"):  # writes its rows where training reads them
            from hpa.data.cache import cache_dir

            data = dict(a.split("=", 1) for a in args[2:] if a.startswith("data."))
            size = int(data["data.image_size"])
            folder = cache_dir(data["data.root"], "train", size, cache_root=data["data.cache_dir"])
            folder.mkdir(parents=True)
            (folder / "data.u8").write_bytes(b"rows")
            self.cache = folder
        if args[:2] == ("-m", "hpa.train"):
            self.output_dir.mkdir(parents=True)
            (self.output_dir / "metrics.json").write_text('{"epoch": 3, "val/mAP": 0.5}')
        if args[:2] == ("-m", "hpa.predict"):
            self.submission.write_text("ID,ImageWidth,ImageHeight,PredictionString\nimg0,64,64,\n")

    def module(self, name: str) -> tuple[str, ...]:
        (call,) = [c for c in self.calls if c[:2] == ("-m", name)]
        return call


def test_inference_notebook_finds_every_input_and_passes_them_on(tmp_path, kaggle_input):
    submission = tmp_path / "working" / "submission.csv"
    submission.parent.mkdir()
    commands = Commands(submission=submission)
    execute("kaggle_inference", {"SUBMISSION": str(submission)}, commands)
    comp = kaggle_input["comp"]
    assert commands.module("pip")[-3:] == ("--find-links", str(kaggle_input["bundle"]), "hpa")
    doctor = commands.module("hpa.doctor")
    assert f"--model={kaggle_input['model']}" in doctor and str(kaggle_input["bundle"]) in doctor
    predict = commands.module("hpa.predict")
    assert f"models=['{kaggle_input['model']}']" in predict
    assert f"input_dir='{comp / 'test'}'" in predict
    assert f"sample_submission='{comp / 'sample_submission.csv'}'" in predict


def test_inference_notebook_stops_with_one_line_when_an_input_is_missing(tmp_path, kaggle_input):
    import shutil

    shutil.rmtree(kaggle_input["model"])
    commands = Commands()
    with pytest.raises(SystemExit) as info:
        execute("kaggle_inference", {}, commands)
    message = str(info.value)
    assert (
        message.startswith("error: MODEL_DIRS=auto found no exported model") and "\n" not in message
    )
    assert [c[1] for c in commands.calls] == ["pip"]  # installed, then stopped before the doctor


def train_params(tmp_path: Path, size: int = 64) -> dict:
    working = tmp_path / "working"
    return {
        "OUTPUT_DIR": str(working / "run"),
        "MODEL_DATASET_DIR": str(working / "hpa-model"),
        "OVERRIDES": ["trainer=cpu", f"data.image_size={size}", "data.num_workers=0"],
    }


def test_train_notebook_caches_under_working_and_cleans_up(tmp_path, kaggle_input):
    params = train_params(tmp_path)
    commands = Commands(output_dir=Path(params["OUTPUT_DIR"]))
    namespace = execute("kaggle_train", params, commands)
    cache = tmp_path / "working" / "cache"
    data = [f"data.root={kaggle_input['comp']}", f"data.cache_dir={cache}", "data.image_size=64"]
    prepare, train = commands.module("hpa.prepare"), commands.module("hpa.train")
    assert set(data) <= set(prepare) and set(data) <= set(train)
    assert f"paths.output_dir={params['OUTPUT_DIR']}" in train
    assert commands.module("hpa.kaggle")[-2:] == ("--out", params["MODEL_DATASET_DIR"])
    plan = namespace["cache"]
    assert plan.n_images == 10 and plan.needed == 10 * 64 * 64 * 4
    # What prepare wrote is removed at the end (KEEP_CACHE False): the output stays small.
    assert commands.cache.parent == plan.folder and plan.folder.parent == cache
    assert not plan.folder.exists() and cache.is_dir()


def test_train_notebook_stops_when_the_cache_cannot_fit(tmp_path, kaggle_input, monkeypatch):
    import hpa.fsio

    monkeypatch.setattr(hpa.fsio, "free_bytes", lambda folder: 5 * 512 * 512 * 4)
    params = train_params(tmp_path, size=1024)
    commands = Commands(output_dir=Path(params["OUTPUT_DIR"]))
    with pytest.raises(SystemExit) as info:
        execute("kaggle_train", params, commands)
    message = str(info.value)
    assert message.startswith("error: the cache of 10 images at 1024 px needs 40.0 MiB")
    assert "but 5.0 MiB are free there" in message
    assert "data.image_size=352 or less" in message and "\n" not in message
    assert not [c for c in commands.calls if c[1] in ("hpa.prepare", "hpa.train")]
