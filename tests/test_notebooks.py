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
    }
    assert isinstance(values["MODEL_DIRS"], list) and values["MODEL_DIRS"]
    for key in ("BUNDLE_DIR", "INPUT_DIR", "SAMPLE_SUBMISSION", *values["MODEL_DIRS"]):
        path = values.get(key, key)
        assert path.startswith("/kaggle/input/"), path
    assert values["SUBMISSION"] == "/kaggle/working/submission.csv"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_installs_from_the_bundle_offline(name):
    assert parameters(name)["BUNDLE_DIR"].startswith("/kaggle/input/")
    code = "".join((NOTEBOOKS / f"{name}.py").read_text().split())  # layout-independent
    assert '"--no-index","--find-links",BUNDLE_DIR,"hpa"' in code


@pytest.mark.slow
def test_explore_runs_on_a_synthetic_set(tmp_path):
    import papermill as pm

    from hpa.synthetic.generator import SyntheticConfig, generate_dataset

    data = generate_dataset(
        SyntheticConfig(n_images=6, image_size=96, seed=1), tmp_path / "data", progress=False
    )
    out = tmp_path / "explore.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "explore.ipynb"),
        str(out),
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        parameters={
            "DATA_DIR": str(data),
            "N_IMAGES": 2,
            "DISPLAY_SIZE": 96,
            "BUNDLE_DIR": "/nonexistent",
        },
    )
    executed = nbformat.read(out, as_version=4)
    pictures = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pictures) >= 4  # labels, co-occurrence, channels, cells
    text = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "6 images" in text
