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
from hpa.kaggle.metadata import ACCELERATORS
from hpa.kaggle.wheels import (
    BundleError,
    PipFetcher,
    fits_kaggle,
    missing_wheels,
    project_root,
    wheel_requirements,
)
from hpa.outputs import MANIFEST, record

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
    stale = out / "hpa-0.0.1-py3-none-any.whl"
    stale.write_text("stale")  # a previous bundle's wheel (its manifest says so) goes
    record(stale, "hpa.kaggle bundle")
    wheels = make_bundle(out, "me", "hpa-bundle", "hpa offline wheels", fetch=fetch)
    names = sorted(p.name for p in out.iterdir())
    ours = ["dataset-metadata.json", "hpa_doctor.py", MANIFEST]
    assert names == sorted([w.name for w in wheels] + ours)
    assert all(p.is_file() for p in out.iterdir())  # Kaggle skips subfolders
    # The standalone doctor the install cell runs when pip fails: it reads this very bundle.
    doctor = subprocess.run(
        [sys.executable, str(out / "hpa_doctor.py"), "--bundle", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    assert "hydra-core" in doctor.stdout + doctor.stderr
    hpa_wheel = next(w for w in wheels if w.name.startswith("hpa-"))
    assert hpa_wheel.name != "hpa-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(hpa_wheel) as zf:
        assert {"hpa/configs/train.yaml", "hpa/kaggle/kaggle_image.txt"} <= set(zf.namelist())
        assert "hydra_plugins/hpa_ray_launcher/ray_launcher.py" in zf.namelist()
    # The sweep extra (hpa[sweep]: Ray, submitit, Optuna) stays out of the bundle:
    # hpa's wheel declares them only under their extra, so neither they nor anything they pull in
    # is fetched (their dependencies, e.g. submitit or alembic, come only through them).
    extras = {"ray", "hydra-submitit-launcher", "hydra-optuna-sweeper", "optuna", "sqlalchemy"}
    assert extras <= {canonicalize_name(r.name) for r in wheel_requirements(hpa_wheel, ["sweep"])}
    assert not extras & {canonicalize_name(r.name) for r in wheel_requirements(hpa_wheel)}
    sweep_stack = extras | {"submitit", "alembic", "cliff", "cmaes", "colorlog", "msgpack"}
    assert not sweep_stack & {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    # hpa's requirements decide what is fetched: exactly the ones missing from Kaggle's image
    # (kaggle_image.txt; antlr4 comes in as hydra-core's dependency when the image lacks it).
    candidates = ["antlr4-python3-runtime", "hydra-core", "iterative-stratification", "pycocotools"]
    missing = [name for name in candidates if canonicalize_name(name) not in kaggle_image()]
    assert "hydra-core" in missing
    assert sorted(fetch.served) == missing
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
    # A GPU Kaggle's cu128 torch runs on (not whatever `enable_gpu` gives), and the image the
    # bundle was checked against kept for later versions.
    assert inference["machine_shape"] == "NvidiaTeslaT4"
    assert inference["docker_image_pinning_type"] == "original"
    explore = json.loads((tmp_path / "hpa-explore" / "kernel-metadata.json").read_text())
    assert "machine_shape" not in explore and explore["enable_gpu"] is False


def test_kernels_take_the_accelerator_and_pinning_asked_for(tmp_path, capsys):
    main(["kernels", "--out", str(tmp_path), "--user", "me", "--pinning", "latest"])
    main(["kernels", "--out", str(tmp_path / "l4"), "--user", "me", "--accelerator", "NvidiaL4"])
    latest = json.loads((tmp_path / "hpa-train" / "kernel-metadata.json").read_text())
    assert latest["docker_image_pinning_type"] == "latest"
    l4 = json.loads((tmp_path / "l4" / "hpa-inference" / "kernel-metadata.json").read_text())
    assert l4["machine_shape"] == "NvidiaL4"


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_kernels_take_every_accelerator_the_cli_documents(tmp_path, accelerator):
    main(["kernels", "--out", str(tmp_path), "--user", "me", "--accelerator", accelerator])
    inference = json.loads((tmp_path / "hpa-inference" / "kernel-metadata.json").read_text())
    assert inference["machine_shape"] == accelerator


def test_model_dataset_copies_an_exported_model(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"format": "hpa-model/1"}))
    (model / "model.safetensors").write_bytes(b"weights")
    out = make_model_dataset(model, tmp_path / "ds", "me", "hpa-model", "hpa model")
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST,  # what this command wrote there: a rerun may replace those, nothing else
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


# The train notebook's cache on /kaggle/working (hpa.kaggle.train_cache)


def test_cache_plan_counts_what_a_previous_run_wrote(tiny_dataset, tmp_path, monkeypatch):
    import hpa.fsio
    from hpa.kaggle.train_cache import cache_bytes, cache_plan

    overrides = [
        "data=default",
        f"data.root={tiny_dataset}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=32",
    ]
    full = cache_bytes(40, 32)
    assert full == 40 * 32 * 32 * 4
    plan = cache_plan(overrides)
    assert (plan.n_images, plan.image_size, plan.level, plan.needed) == (40, 32, "image", full)
    assert plan.folder.parent == tmp_path / "cache"
    # Half of it already on disk (an interrupted prepare): only the rest must fit.
    cache = plan.folder / "train_32"
    cache.mkdir(parents=True)
    (cache / "data.u8").write_bytes(b"x" * (full // 2))
    monkeypatch.setattr(hpa.fsio, "free_bytes", lambda folder: full // 2 + 8192)
    assert cache_plan(overrides).needed <= full // 2
    monkeypatch.setattr(hpa.fsio, "free_bytes", lambda folder: full // 4)
    with pytest.raises(InputError, match=r"needs [\d.]+ KiB in .* but 40.0 KiB are free"):
        cache_plan(overrides)


# A GPU the installed torch was not built for (hpa.gpu): Kaggle's P100 under a cu128 torch.

CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    ("arch_list", "capability", "runs"),
    [
        (CU128, (6, 0), False),  # P100 under Kaggle's torch
        (CU128, (7, 5), True),  # T4
        (CU128, (8, 9), True),  # L4: sm_86 code runs on 8.9
        (["sm_80"], (9, 0), False),  # another major version
        (["sm_80", "compute_80"], (9, 0), True),  # PTX compiles for newer GPUs
        (["sm_90a"], (9, 0), True),
        (["sm_50", "sm_60", "sm_70"], (6, 0), True),  # an older build runs a P100
    ],
)
def test_which_builds_run_on_which_gpu(arch_list, capability, runs):
    from hpa.gpu import runs_on

    assert runs_on(arch_list, capability) is runs


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch see one GPU: set its capability and the architectures torch was built for."""
    import torch

    def install(capability, name, arch_list=CU128):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: name)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))

    return install


def test_cuda_arch_problem_names_the_gpu_its_capability_and_the_fix(fake_gpu):
    from hpa.gpu import cuda_arch_problem

    fake_gpu((6, 0), "Tesla P100-PCIE-16GB")
    problem = cuda_arch_problem()
    assert "Tesla P100-PCIE-16GB" in problem and "6.0 (sm_60)" in problem
    assert "sm_75" in problem and "T4 or L4" in problem and "\n" not in problem
    fake_gpu((7, 5), "Tesla T4")
    assert cuda_arch_problem() is None


def test_no_gpu_is_no_problem(monkeypatch):
    import torch

    from hpa.gpu import choose_device, cuda_arch_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_arch_problem() is None
    assert choose_device("auto").type == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU is visible"):
        choose_device("cuda")


def test_device_auto_falls_back_to_the_cpu_and_cuda_stops(fake_gpu, caplog):
    from hpa.gpu import choose_device

    fake_gpu((6, 0), "Tesla P100-PCIE-16GB")
    with caplog.at_level("WARNING", logger="hpa.gpu"):
        assert choose_device("auto").type == "cpu"
    assert "Tesla P100-PCIE-16GB" in caplog.text and "on the CPU instead" in caplog.text
    for device in ("cuda", "cuda:0"):
        with pytest.raises(InputError, match=f"device={device}: GPU 0 \\(Tesla P100"):
            choose_device(device)
    with pytest.raises(InputError, match="2 GPUs|there are 1 GPUs"):
        choose_device("cuda:1")
    with pytest.raises(InputError, match="use auto, cpu, cuda or cuda:N"):
        choose_device("gpu")
    assert choose_device("cpu").type == "cpu"
    fake_gpu((7, 5), "Tesla T4")
    assert choose_device("auto") == choose_device("cuda") == __import__("torch").device("cuda", 0)


def test_predict_on_a_gpu_torch_cannot_run_stops_before_any_work(fake_gpu, tmp_path, capsys):
    """device=cuda: one line, exit 2, before the sample submission or a model is read."""
    from hpa.predict import main as predict

    fake_gpu((6, 0), "Tesla P100-PCIE-16GB")
    with pytest.raises(SystemExit) as exit_info:
        predict(
            [
                f"models=[{tmp_path / 'no-model'}]",
                f"input_dir={tmp_path}",
                f"sample_submission={tmp_path / 'absent.csv'}",
                f"submission={tmp_path / 'sub.csv'}",
                "device=cuda",
            ]
        )
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: device=cuda: GPU 0 (Tesla P100-PCIE-16GB)")
    assert "T4 or L4" in line


def test_every_visible_gpu_is_checked(monkeypatch):
    """The doctor asks without an index: a T4 beside a P100 still names the P100."""
    import torch

    from hpa.gpu import choose_device, cuda_arch_problem

    gpus = [((7, 5), "Tesla T4"), ((6, 0), "Tesla P100-PCIE-16GB")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: gpus[i][0])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: gpus[i][1])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(CU128))
    assert cuda_arch_problem().startswith("GPU 1 (Tesla P100-PCIE-16GB)")
    assert cuda_arch_problem(0) is None
    assert choose_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(InputError, match="GPU 1"):
        choose_device("cuda:1")


# --with-hpacellseg: HPA-Cell-Segmentation's wheel in the bundle, installed with --no-deps


HPACELLSEG_WHEEL = ROOT.parent / "shared" / "wheels" / "hpacellseg-0.1.8-py3-none-any.whl"


@pytest.fixture
def quick_bundle(monkeypatch):
    """make_bundle without building hpa's wheel: a stand-in with hpa's name (no dependencies)."""
    from hpa.kaggle import bundle as bundling

    monkeypatch.setattr(
        bundling, "build_hpa_wheel", lambda root, dest: write_wheel(dest, "hpa", "0.1.0")
    )
    monkeypatch.setattr(bundling, "PipFetcher", lambda: FakeIndex({}))


def notebook_no_deps_install(bundle: Path, segmenter: str) -> list[tuple[str, ...]]:
    """The inference notebook's no-deps.txt step, run with a `run` that records its calls."""
    import jupytext

    cells = jupytext.read(ROOT / "notebooks" / "kaggle_inference.py").cells
    (source,) = [c.source for c in cells if "no-deps.txt" in c.source and c.cell_type == "code"]
    step = source[source.index("no_deps = ") :]
    calls: list[tuple[str, ...]] = []
    namespace = {"Path": Path, "BUNDLE_DIR": str(bundle), "SEGMENTER": segmenter}
    namespace["run"] = lambda *args: calls.append(args)
    exec(step, namespace)
    return calls


@pytest.mark.skipif(not HPACELLSEG_WHEEL.is_file(), reason=f"no {HPACELLSEG_WHEEL}")
def test_bundle_with_hpacellseg_carries_its_wheel_installed_without_deps(
    tmp_path, capsys, quick_bundle, offline_pip
):
    out = tmp_path / "bundle"
    main(["bundle", "--out", str(out), "--user", "me", "--with-hpacellseg"])  # ../shared's wheel
    assert (out / HPACELLSEG_WHEEL.name).read_bytes() == HPACELLSEG_WHEEL.read_bytes()
    assert (out / "no-deps.txt").read_text().split() == [HPACELLSEG_WHEEL.name]
    assert f"--no-deps /kaggle/input/hpa-bundle/{HPACELLSEG_WHEEL.name}" in capsys.readouterr().out
    # The notebook installs what the list names, with --no-deps, only for segmenter=hpacellseg.
    assert notebook_no_deps_install(out, "watershed") == []
    (call,) = notebook_no_deps_install(out, "hpacellseg")
    wheel = str(out / HPACELLSEG_WHEEL.name)
    assert call == ("-m", "pip", "install", "--no-index", "--no-deps", wheel)
    # ... and that command installs it here, offline (hpacellseg's own metadata would want
    # opencv-python and pytorch_zoo by URL: with --no-deps neither is asked for).
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, *call, "--quiet", "--target", str(target)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (target / "hpacellseg" / "cellsegmentator.py").is_file()
    assert sorted(p.name.split("-")[0] for p in target.glob("*.dist-info")) == ["hpacellseg"]


def test_bundle_without_the_option_has_no_no_deps_list(tmp_path, quick_bundle):
    out = tmp_path / "bundle"
    make_bundle(out, "me", "hpa-bundle", "hpa offline wheels", log=lambda _: None)
    assert not (out / "no-deps.txt").exists()
    assert notebook_no_deps_install(out, "hpacellseg") == []


def test_bundle_with_more_no_deps_wheels_lists_each(tmp_path, quick_bundle):
    zoo = write_wheel(tmp_path / "wheels", "pytorch_zoo", "0.0.1")
    seg = write_wheel(tmp_path / "wheels", "hpacellseg", "0.1.8")
    out = tmp_path / "bundle"
    main(["bundle", "--out", str(out), "--with-hpacellseg", str(seg), "--with-wheel", str(zoo)])
    assert (out / "no-deps.txt").read_text().split() == [seg.name, zoo.name]
    (call,) = notebook_no_deps_install(out, "hpacellseg")
    assert call[-2:] == (str(out / seg.name), str(out / zoo.name))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.whl", "no such file"),
        (lambda d: write_wheel(d, "native", "1.0", tag="cp311-cp311-win_amd64"), "not for Kaggle"),
        (lambda d: (d / "notes.whl").write_text("x") and d / "notes.whl", "not a wheel file name"),
    ],
)
def test_a_wheel_that_cannot_go_into_the_bundle_exits_2_naming_it(
    tmp_path, capsys, quick_bundle, make, expected
):
    (tmp_path / "w").mkdir()
    wheel = make(tmp_path / "w")
    with pytest.raises(SystemExit) as stop:
        main(["bundle", "--out", str(tmp_path / "bundle"), "--with-hpacellseg", str(wheel)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and expected in err and wheel.name in err and "\n" not in err
    assert not (tmp_path / "bundle").exists()


def test_with_hpacellseg_and_no_shared_wheel_says_how_to_make_one(tmp_path, monkeypatch):
    from hpa.kaggle.wheels import default_hpacellseg_wheel

    (tmp_path / "checkout").mkdir()
    with pytest.raises(InputError, match=r"no hpacellseg-\*\.whl in .*--with-hpacellseg FILE"):
        default_hpacellseg_wheel(tmp_path / "checkout")


# The pushed notebook's parameters: set in a copy, the cell tagged "parameters" only


INFERENCE_NOTEBOOK = ROOT / "notebooks" / "kaggle_inference.ipynb"


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_set_parameters_replaces_only_the_assignments_named():
    from hpa.kaggle.bundle import set_parameters

    text = INFERENCE_NOTEBOOK.read_text(encoding="utf-8")
    values = {"SEGMENTER": "hpacellseg", "MODEL_DIRS": ["/kaggle/input/a", "b's"]}
    edited = set_parameters(text, values)
    assert changed_lines(text, edited) == [
        (
            '    "MODEL_DIRS = [\\"auto\\"]\\n",',
            """    "MODEL_DIRS = ['/kaggle/input/a', \\"b's\\"]\\n",""",
        ),
        (
            '    "SEGMENTER = \\"watershed\\"  # or \\"hpacellseg\\"\\n",',
            """    "SEGMENTER = 'hpacellseg'\\n",""",
        ),
    ]
    assert set_parameters(text, {}) == text
    assert INFERENCE_NOTEBOOK.read_text(encoding="utf-8") == text


def notebook_text(source: list[str], tags=("parameters",)) -> str:
    cell = {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def test_set_parameters_replaces_an_assignment_over_several_lines():
    from hpa.kaggle.bundle import set_parameters

    text = notebook_text(["A = 1  # one\n", "OPTIONS = [\n", '    "x=1",\n', "]\n", "B = 'é'"])
    edited = json.loads(set_parameters(text, {"OPTIONS": ["tta=d4"], "B": "ü"}))
    assert edited["cells"][0]["source"] == ["A = 1  # one\n", "OPTIONS = ['tta=d4']\n", "B = 'ü'"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (notebook_text(["A = 1\n"]), "assigns no MISSING"),
        (notebook_text(["MISSING = 1\n"], tags=()), "0 cells tagged 'parameters'"),
        (json.dumps({"cells": []}), "not laid out as nbformat writes it"),
    ],
)
def test_set_parameters_on_a_notebook_it_cannot_edit_is_an_error(text, expected):
    from hpa.kaggle.bundle import set_parameters

    with pytest.raises(InputError, match=expected):
        set_parameters(text, {"MISSING": 2})


def test_kernels_attach_more_data_sets_and_set_the_inference_parameters(tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    main(
        [
            "kernels",
            "--out",
            str(tmp_path),
            "--user",
            "me",
            "--segmenter-weights",
            "other/hpacellseg-weights",
            "--predict-option",
            "tta=d4",
        ]
    )
    inference = tmp_path / "hpa-inference"
    meta = json.loads((inference / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["me/hpa-bundle", "me/hpa-model", "other/hpacellseg-weights"]
    edited = (inference / INFERENCE_NOTEBOOK.name).read_text(encoding="utf-8")
    assert [new for _, new in changed_lines(before[INFERENCE_NOTEBOOK.name].decode(), edited)] == [
        """    "SEGMENTER = 'hpacellseg'\\n",""",
        """    "PREDICT_OPTIONS = ['tta=d4']\"""",
    ]
    train = json.loads((tmp_path / "hpa-train" / "kernel-metadata.json").read_text())
    assert train["dataset_sources"] == ["me/hpa-bundle"]
    assert (tmp_path / "hpa-train" / "kaggle_train.ipynb").read_bytes() == before[
        "kaggle_train.ipynb"
    ]
    assert "bundle --with-hpacellseg" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == before


def test_kernels_without_the_options_copy_the_notebooks_as_they_are(tmp_path):
    make_kernels(tmp_path, "me", "hpa-bundle", ["hpa-model"])
    copied = tmp_path / "hpa-inference" / INFERENCE_NOTEBOOK.name
    assert copied.read_bytes() == INFERENCE_NOTEBOOK.read_bytes()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # an accelerator Kaggle's torch cannot use
        (["--accelerator", "NvidiaTeslaP100"], "today's torch has no sm_60 kernels"),
        (["--accelerator", "GPU T4 x2"], "machine shape"),
        # a shape the CLI does not document: the message lists those it does
        (["--accelerator", "NvidiaTeslaV100"], "NvidiaTeslaT4Highmem, NvidiaL4, NvidiaL4X1"),
        (["--segmenter-weights", "hpacellseg-weights"], "use OWNER/SLUG"),
        (["--predict-option", "combine.method=max"], "--predict-option combine.method=max:"),
    ],
)
def test_kernels_with_a_bad_option_write_nothing(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as stop:
        main(["kernels", "--out", str(tmp_path / "k"), "--user", "me", *args])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and expected in err and "\n" not in err
    assert not (tmp_path / "k").exists()
