"""The wheel: configs inside, and `python -m hpa.train` runs from it outside the checkout."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hpa.kaggle.wheels import build_hpa_wheel, project_root


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_hpa_wheel(project_root(), tmp_path_factory.mktemp("wheel"))


def test_wheel_ships_the_hydra_tree(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for path in (
        "hpa/configs/train.yaml",
        "hpa/configs/data/demo.yaml",
        "hpa/configs/experiment/effnet_b0_512.yaml",
        "hpa/configs/predict.yaml",
        "hpa/train.py",
    ):
        assert path in names, path
    assert not any(n.startswith(("configs/", "tests/")) for n in names)


@pytest.mark.slow
def test_train_runs_from_the_wheel_in_a_fresh_venv(wheel, tmp_path):
    """A fresh venv holding only the wheel (dependencies borrowed read-only from this env)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The dependencies come from this environment's site-packages, but not hpa: its editable
    # .pth is not processed for a path added this way.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    where = subprocess.run(
        [python, "-c", "import hpa; print(hpa.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(site) in where and str(project_root()) not in where
    args = [
        "model.backbone=test_resnet",
        "data.image_size=64",
        "data.synthetic.n_images=40",
        "data.synthetic.image_size=64",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "logger=csv",
        "paths.output_dir=run",
    ]
    r = subprocess.run(
        [python, "-m", "hpa.train", *args], cwd=outside, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "generating 40 synthetic samples" in r.stdout + r.stderr
    metrics = json.loads((outside / "run" / "metrics.json").read_text())
    assert len(metrics["val/AP_per_class"]) == 19
    assert (outside / "data" / "demo" / "train.csv").is_file()
    assert (outside / "run" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_lock_holds_one_version_per_package_per_platform(python, machine):
    """Two locked versions that both apply get installed over each other (shared file paths).

    That is how CI once got cuBLAS 13.10's library under 13.1's name and died with SIGILL.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from packaging.markers import Marker

    env = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    lock = tomllib.loads((project_root() / "poetry.lock").read_text())
    extras = [
        "",
        *tomllib.loads((project_root() / "pyproject.toml").read_text())["project"].get(
            "optional-dependencies", {}
        ),
    ]

    def applies_here(marker: str) -> bool:  # under any extra: make install takes them all
        return any(Marker(marker).evaluate({**env, "extra": extra}) for extra in extras)

    applies: dict[str, list[str]] = {}
    for package in lock["package"]:
        marker = package.get("markers")
        # A string, or (Poetry 2) one marker per dependency group: main, dev, ...
        markers = [marker] if isinstance(marker, str) else list((marker or {}).values())
        if markers and not any(applies_here(m) for m in markers):
            continue
        applies.setdefault(package["name"], []).append(package["version"])
    assert {name: v for name, v in applies.items() if len(v) > 1} == {}
