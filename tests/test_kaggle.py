"""python -m hpa.kaggle: Kaggle's package list, the offline bundle, dataset and kernel metadata.

No network: fetching runs against fake wheels in a local folder (the real index is exercised by
tests/test_kaggle_env.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hpa.errors import InputError
from hpa.kaggle.__main__ import main
from hpa.kaggle.bundle import make_bundle, make_kernels, make_model_dataset
from hpa.kaggle.image import kaggle_image, parse_image
from hpa.kaggle.wheels import (
    BundleError,
    PipFetcher,
    fits_kaggle,
    missing_wheels,
    project_root,
    wheel_requirements,
)

ROOT = Path(__file__).resolve().parents[1]


def write_wheel(folder: Path, name: str, version: str, requires=(), tag="py3-none-any") -> Path:
    """A minimal wheel: enough metadata for pip download and for wheel_requirements."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-{tag}.whl"
    folder.mkdir(parents=True, exist_ok=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", meta)
        zf.writestr(f"{dist}-{version}.dist-info/WHEEL", f"Wheel-Version: 1.0\nTag: {tag}\n")
        zf.writestr(f"{dist}-{version}.dist-info/RECORD", "")
    return path


def write_sdist(folder: Path, name: str, version: str) -> Path:
    """A pure-Python source distribution (setuptools), like antlr4-python3-runtime 4.9.3."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n[tool.setuptools]\npy-modules = ["{name}"]\n',
        f"{name}.py": "VALUE = 1\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    path = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for file, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{file}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class FakeIndex:
    """A fetcher serving wheels from a dict {name: (version, requires)}; records what it served."""

    def __init__(self, packages: dict[str, tuple[str, list[str]]]):
        self.packages = packages
        self.served: list[str] = []

    def __call__(self, req: Requirement, dest: Path) -> Path:
        version, requires = self.packages[req.name]
        assert Version(version) in req.specifier
        self.served.append(req.name)
        return write_wheel(dest, req.name, version, requires)


HYDRA = {
    "hydra-core": (
        "1.3.2",
        [
            "omegaconf<2.4,>=2.2",
            "antlr4-python3-runtime==4.9.*",
            "packaging",
            'importlib-resources; python_version < "3.9"',
        ],
    ),
    "antlr4-python3-runtime": ("4.9.3", []),
    "iterative-stratification": ("0.1.9", ["scikit-learn", "scipy", "numpy"]),
}


def test_image_list_holds_the_issue_versions_and_lacks_hydra():
    image = kaggle_image()
    expected = {
        "torch": "2.10",
        "torchvision": "0.25",
        "timm": "1.0.26",
        "albumentations": "2.0.8",
        "numpy": "2.0.2",
        "pandas": "2.2.2",
        "opencv-python-headless": "4.13",
        "omegaconf": "2.3",
    }
    for name, prefix in expected.items():
        assert str(image[name]).startswith(prefix), (name, image[name])
    assert {"pytorch-lightning", "torchmetrics", "scikit-image", "papermill"} <= set(image)
    assert not {"hydra-core", "iterative-stratification"} & set(image)


def test_image_list_must_pin():
    assert parse_image("# comment\nnumpy==2.0.2  # pinned\n\n") == {"numpy": Version("2.0.2")}
    with pytest.raises(ValueError, match="must pin"):
        parse_image("numpy>=2\n")


def test_hpa_ranges_admit_every_package_kaggle_preinstalls():
    """Else installing hpa on Kaggle would replace a library the notebook already imported."""
    image = kaggle_image()
    for text in metadata.requires("hpa"):
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if req.marker is None and name in image:
            assert image[name] in req.specifier, f"{req} excludes Kaggle's {image[name]}"


def test_closure_fetches_what_kaggle_lacks_and_their_dependencies(tmp_path):
    image = parse_image(
        "omegaconf==2.3.0\nnumpy==2.0.2\nscipy==1.16.3\nscikit-learn==1.6.1\npackaging==25.0"
    )
    fetch = FakeIndex(HYDRA)
    reqs = [
        Requirement(r)
        for r in ["hydra-core>=1.3.2,<1.4", "numpy>=1.26", "iterative-stratification"]
    ]
    wheels = missing_wheels(reqs, image, fetch, tmp_path, log=lambda _: None)
    assert sorted(fetch.served) == [
        "antlr4-python3-runtime",
        "hydra-core",
        "iterative-stratification",
    ]
    assert {w.parent for w in wheels} == {tmp_path}
    # A second requirement on a package already fetched is checked, not fetched twice.
    again = missing_wheels(
        [*reqs, Requirement("antlr4-python3-runtime>=4.9")],
        image,
        fetch,
        tmp_path / "b",
        log=lambda _: None,
    )
    assert len(again) == 3 and fetch.served.count("antlr4-python3-runtime") == 2


def test_a_requirement_kaggles_version_fails_is_an_error(tmp_path):
    image = parse_image("numpy==2.0.2")
    with pytest.raises(BundleError, match="Kaggle's image has numpy 2.0.2"):
        missing_wheels([Requirement("numpy>=2.1")], image, FakeIndex({}), tmp_path)


def test_markers_are_evaluated_for_kaggle(tmp_path):
    wheel = write_wheel(
        tmp_path,
        "pkg",
        "1.0",
        [
            'a; python_version < "3.9"',
            'b; sys_platform == "win32"',
            'c; python_version >= "3.12"',
            'd; extra == "x"',
        ],
    )
    assert [r.name for r in wheel_requirements(wheel)] == ["c"]
    assert [r.name for r in wheel_requirements(wheel, ["x"])] == ["c", "d"]


@pytest.mark.parametrize(
    ("name", "fits"),
    [
        ("x-1-py3-none-any.whl", True),
        ("x-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("x-1-cp312-abi3-manylinux_2_28_x86_64.whl", True),
        ("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", False),
        ("x-1-cp312-cp312-macosx_11_0_arm64.whl", False),
        ("x-1-cp312-cp312-manylinux_2_39_x86_64.whl", False),  # newer glibc than Kaggle's 2.35
    ],
)
def test_wheels_that_fit_kaggle(name, fits):
    assert fits_kaggle(Path(name)) is fits


@pytest.fixture
def offline_pip(monkeypatch):
    """pip sees no configured index or find-links: only what a test passes."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for key in [k for k in os.environ if k.startswith("PIP_") and k != "PIP_CONFIG_FILE"]:
        monkeypatch.delenv(key)


def test_pip_fetcher_downloads_for_kaggle_and_builds_pure_sources(tmp_path, offline_pip):
    index = tmp_path / "index"
    write_wheel(index, "binpkg", "2.0", tag="cp312-cp312-manylinux_2_17_x86_64")
    write_wheel(index, "binpkg", "2.1", tag="cp311-cp311-manylinux_2_17_x86_64")  # not for Kaggle
    write_wheel(index, "onlyhere", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    write_sdist(index, "srconly", "4.9.3")
    fetch = PipFetcher(["--no-index", "--find-links", str(index)], ["--no-build-isolation"])
    out = tmp_path / "out"
    assert (
        fetch(Requirement("binpkg"), out).name == "binpkg-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"
    )
    assert fetch(Requirement("srconly==4.9.*"), out).name == "srconly-4.9.3-py3-none-any.whl"
    with pytest.raises(BundleError, match="onlyhere"):
        fetch(Requirement("onlyhere"), out)


def has_poetry_core() -> bool:
    pythons = [sys.executable, str(ROOT / ".tools" / "bin" / "python")]
    probe = "import poetry.core.masonry.api"
    return any(
        Path(p).exists() and subprocess.run([p, "-c", probe], capture_output=True).returncode == 0
        for p in pythons
    )


@pytest.mark.skipif(
    not has_poetry_core(), reason="poetry-core not in .venv or .tools (make install)"
)
def test_bundle_is_flat_with_hpa_wheel_dependencies_and_metadata(tmp_path, capsys):
    fetch = FakeIndex({**HYDRA, "pycocotools": ("2.0.11", ["numpy"])})
    out = tmp_path / "bundle"
    (out).mkdir()
    (out / "hpa-0.0.1-py3-none-any.whl").write_text("stale")  # a previous bundle's wheel goes
    wheels = make_bundle(out, "me", "hpa-bundle", "hpa offline wheels", fetch=fetch)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([w.name for w in wheels] + ["dataset-metadata.json"])
    assert all(p.is_file() for p in out.iterdir())  # Kaggle skips subfolders
    hpa_wheel = next(w for w in wheels if w.name.startswith("hpa-"))
    assert hpa_wheel.name != "hpa-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(hpa_wheel) as zf:
        assert {"hpa/configs/train.yaml", "hpa/kaggle/kaggle_image.txt"} <= set(zf.namelist())
    # hpa's requirements decide what is fetched: exactly the ones missing from Kaggle's image.
    assert sorted(fetch.served) == [
        "antlr4-python3-runtime",
        "hydra-core",
        "iterative-stratification",
        "pycocotools",
    ]
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta == {
        "id": "me/hpa-bundle",
        "title": "hpa offline wheels",
        "licenses": [{"name": "CC0-1.0"}],
    }


def test_bundle_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        make_bundle(tmp_path, "me", "hpa-bundle", "hpa offline wheels", fetch=FakeIndex({}))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_slug_is_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bundle", "--out", str(tmp_path / "b"), "--slug", "Not A Slug"])
    assert exit_info.value.code == 2
    assert "Not A Slug" in capsys.readouterr().err


def test_kernel_metadata_for_each_notebook_turns_internet_off(tmp_path):
    folders = make_kernels(tmp_path, "me", "hpa-bundle", ["hpa-model", "other/hpa-model-2"])
    assert {f.name for f in folders} == {"hpa-inference", "hpa-train", "hpa-explore"}
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert meta["enable_internet"] is False
        assert (folder / meta["code_file"]).is_file()
        assert meta["id"] == f"me/{folder.name}"
        assert meta["competition_sources"] == ["hpa-single-cell-image-classification"]
        assert "me/hpa-bundle" in meta["dataset_sources"]
    inference = json.loads((tmp_path / "hpa-inference" / "kernel-metadata.json").read_text())
    assert inference["dataset_sources"] == ["me/hpa-bundle", "me/hpa-model", "other/hpa-model-2"]
    assert inference["enable_gpu"] is True


def test_model_dataset_copies_an_exported_model(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"format": "hpa-model/1"}))
    (model / "model.safetensors").write_bytes(b"weights")
    out = make_model_dataset(model, tmp_path / "ds", "me", "hpa-model", "hpa model")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "dataset-metadata.json",
        "model.safetensors",
    ]
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "me/hpa-model"
    with pytest.raises(InputError, match="not an exported hpa model"):
        make_model_dataset(tmp_path / "run", tmp_path / "ds2", "me", "hpa-model", "hpa model")


def test_project_root_is_this_checkout():
    assert project_root() == ROOT


@pytest.mark.parametrize("command", [["bundle"], ["kernels"]])
def test_out_that_is_a_file_exits_2_naming_it(tmp_path, capsys, command):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", str(taken), "--user", "me"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and str(taken) in line and "is a file" in line
    assert taken.read_text() == "mine"


def test_bundle_that_cannot_be_made_exits_2_like_other_bad_input(tmp_path, capsys, monkeypatch):
    import hpa.kaggle.__main__ as cli

    def conflict(*args, **kwargs):
        raise BundleError("hpa needs numpy>=3, but Kaggle's image has numpy 2.0.2")

    monkeypatch.setattr(cli, "make_bundle", conflict)
    with pytest.raises(SystemExit) as exit_info:
        main(["bundle", "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: hpa needs numpy>=3")
