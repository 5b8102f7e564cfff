"""python -m hpa.doctor: one line per check, FAIL + fix on a mismatch, exit 1; passes here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from hpa import doctor
from hpa.doctor import check_model, check_python, check_requirements, check_writable, run_checks

_probe = doctor.check_imports


@pytest.fixture(scope="module")
def imports_here() -> list[doctor.Check]:
    return _probe()


@pytest.fixture(autouse=True)
def probe_imports_once(monkeypatch, imports_here):
    """The child-process import probe costs seconds; its answer for this env is the same each time."""

    def check_imports(*args, **kwargs):
        return _probe(*args, **kwargs) if args or kwargs else imports_here

    monkeypatch.setattr(doctor, "check_imports", check_imports)


def planted(**versions: str | None):
    """What is installed here, except the planted versions (None = not installed)."""
    names = {name.replace("_", "-") for name in versions}

    def version_of(name: str) -> str | None:
        if name in names:
            return versions[name.replace("-", "_")]
        return doctor.installed_version(name)

    return version_of


def fail_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


def test_planted_old_albumentations_fails_with_one_line_and_fix(capsys, tmp_path):
    code = doctor.main(
        ["--output", str(tmp_path), "--bundle", "/kaggle/input/hpa-bundle"],
        version_of=planted(albumentations="1.3.1"),
    )
    out = capsys.readouterr().out
    assert code == 1
    assert fail_lines(out) == [
        "FAIL albumentations 1.3.1 installed, hpa needs >=2.0,<3: pip install --no-index "
        '--find-links /kaggle/input/hpa-bundle "albumentations>=2.0,<3"'
    ]
    assert "doctor: 1 problem(s)" in out


def test_planted_missing_hydra_core_fails(capsys, tmp_path):
    code = doctor.main(["--output", str(tmp_path)], version_of=planted(hydra_core=None))
    failed = fail_lines(capsys.readouterr().out)
    assert code == 1
    assert len(failed) == 1
    assert failed[0].startswith(
        "FAIL hydra-core is not installed, hpa needs >=1.3.2,<1.4: pip install"
    )


def test_json_report_is_machine_readable(capsys, tmp_path):
    code = doctor.main(["--json", "--output", str(tmp_path)], version_of=planted(timm="0.9.16"))
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["timm"]
    assert "0.9.16" in failed[0]["message"] and failed[0]["fix"]
    assert {c["status"] for c in report["checks"]} <= {"OK", "WARN", "FAIL"}


def test_requirements_come_from_the_installed_distribution():
    checks = check_requirements(metadata.requires("hpa"), doctor.installed_version)
    assert {c.name for c in checks} >= {"torch", "timm", "hydra-core", "albumentations"}
    assert all(c.status == "OK" for c in checks), [c.line() for c in checks if c.status != "OK"]


def test_extras_only_requirements_are_skipped():
    reqs = ["numpy>=1", 'sphinx>=7; extra == "docs"']
    checks = check_requirements(reqs, lambda name: None)
    assert [c.name for c in checks] == ["numpy"]


def test_hpa_not_installed_and_wrong_python_fail():
    assert run_checks(outputs=[], requirements=([], None))[0].status == "FAIL"
    assert check_python(">=3.13", "3.12.1").status == "FAIL"
    assert check_python(">=3.10,<3.14", "3.12.1").status == "OK"


def write_model(folder: Path, versions: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format": "hpa-model/1", "versions": versions}))
    return folder


@pytest.mark.parametrize(
    ("package", "trained", "running", "status"),
    [
        ("torch", "2.14.1", "2.14.0", "OK"),
        ("torch", "2.14.1", "2.10.0", "WARN"),  # minor drift
        ("timm", "1.1.0", "1.0.26", "WARN"),
        ("torch", "1.13.1", "2.10.0", "FAIL"),  # major mismatch
        ("torch", "2.10.0", None, "FAIL"),
        ("numpy", "2.4.0", "2.0.2", "OK"),  # only torch/timm decide the weights
        ("numpy", "1.26.4", "2.0.2", "WARN"),
    ],
)
def test_model_versions_against_running(tmp_path, package, trained, running, status):
    model = write_model(tmp_path / "model", {package: trained})
    [check] = check_model(model, lambda name: running)
    assert check.status == status
    assert trained in check.message
    if status == "FAIL":
        assert check.fix


def test_model_drift_through_cli(capsys, tmp_path):
    model = write_model(tmp_path / "model", {"torch": "2.14.1", "python": "3.12.1"})
    code = doctor.main(
        ["--model", str(model), "--output", str(tmp_path)], version_of=planted(torch="2.10.0")
    )
    out = capsys.readouterr().out
    assert code == 0
    assert any(
        line.startswith("WARN model") and "torch 2.14.1" in line for line in out.splitlines()
    )


def test_missing_model_dir_is_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        doctor.main(["--model", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "config.json not found" in capsys.readouterr().err


def test_unwritable_output_fails(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert check_writable(blocker / "out").status == "FAIL"  # a file where a folder should be
    assert check_writable(tmp_path / "new" / "folder").status == "OK"


def test_passes_in_this_environment_as_a_subprocess(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "hpa.doctor", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not fail_lines(done.stdout)
    assert done.stdout.strip().endswith("doctor: all requirements met")


def fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_two_versions_in_one_folder_fail_naming_both(tmp_path):
    # What Poetry did to CI: two locked nvidia-cublas versions installed over each other.
    fake_dist(tmp_path, "nvidia-cublas", "13.1.1.3")
    fake_dist(tmp_path, "nvidia-cublas", "13.10.0.20")
    fake_dist(tmp_path, "lonely", "1.0")
    (check,) = doctor.check_duplicates([str(tmp_path)])
    assert check.status == "FAIL"
    assert "nvidia-cublas is installed twice" in check.message
    assert "13.1.1.3" in check.message and "13.10.0.20" in check.message
    assert str(tmp_path.resolve()) in check.message
    assert "pip uninstall -y nvidia-cublas" in check.fix


def test_a_shadowed_other_version_warns_and_names_the_one_imported(tmp_path):
    first, second = tmp_path / "user", tmp_path / "system"
    fake_dist(first, "albumentations", "1.3.1")
    fake_dist(second, "albumentations", "2.0.8")
    fake_dist(first, "same", "1.0")
    fake_dist(second, "same", "1.0")  # the same version twice is harmless
    (check,) = doctor.check_duplicates([str(first), str(second)])
    assert check.status == "WARN"
    assert check.message.startswith(f"albumentations 1.3.1 in {first.resolve()} shadows 2.0.8")
    assert doctor.check_duplicates([str(first), str(first)]) == []


def test_this_environment_has_no_duplicates():
    assert [c.line() for c in doctor.check_duplicates() if c.status == "FAIL"] == []


@pytest.fixture
def probe_env(tmp_path) -> dict[str, str]:
    (tmp_path / "crashes.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    (tmp_path / "raises.py").write_text("raise ImportError('undefined symbol: cublasLtFoo')\n")
    (tmp_path / "fine.py").write_text("VALUE = 1\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_a_module_that_kills_python_is_named_with_its_signal(probe_env):
    checks = doctor.check_imports(["fine", "crashes", "never_reached"], env=probe_env)
    assert [(c.status, c.name) for c in checks] == [("FAIL", "import:crashes")]
    assert "import crashes kills Python (signal SIGILL)" in checks[0].message


def test_a_module_that_raises_is_named_and_the_rest_still_probed(probe_env):
    checks = doctor.check_imports(["raises", "fine", "missing_module"], env=probe_env)
    failed = {c.name: c.message for c in checks if c.status == "FAIL"}
    assert set(failed) == {"import:raises", "import:missing_module"}
    assert "undefined symbol: cublasLtFoo" in failed["import:raises"]
    assert doctor.check_imports(["fine"], env=probe_env)[0].status == "OK"


def test_a_torch_that_crashes_on_import_is_reported_not_fatal(capsys, monkeypatch):
    crash = doctor.Check("FAIL", "import:torch", "import torch kills Python (signal SIGILL)")
    monkeypatch.setattr(doctor, "check_imports", lambda: [crash])

    def no_gpu_check():
        raise AssertionError("the doctor imported torch after the probe saw it crash")

    monkeypatch.setattr(doctor, "check_gpu", no_gpu_check)
    assert doctor.main(["--output", "."]) == 1
    assert "FAIL import torch kills Python (signal SIGILL)" in capsys.readouterr().out


def test_clashes_outside_what_hpa_needs_only_warn(tmp_path):
    fake_dist(tmp_path, "nvidia-cublas", "13.1.1.3")
    fake_dist(tmp_path, "nvidia-cublas", "13.10.0.20")
    fake_dist(tmp_path, "bystander", "1.0")
    fake_dist(tmp_path, "bystander", "2.0")
    checks = doctor.check_duplicates([str(tmp_path)], needed={"nvidia-cublas", "torch"})
    assert {c.name: c.status for c in checks} == {
        "duplicate:bystander": "WARN",
        "duplicate:nvidia-cublas": "FAIL",
    }


def test_dependency_closure_reaches_through_extras():
    needed = doctor.dependency_closure()
    assert {"hpa", "torch", "timm", "numpy", "albumentations"} <= needed
    if doctor.installed_version("nvidia-cublas"):  # CUDA torch: torch -> cuda-toolkit[cublas]
        assert "nvidia-cublas" in needed
    assert "pytest" not in needed  # a dev tool, not something hpa needs
    assert doctor.dependency_closure("no-such-package-xyz") is None


def fake_record(site: Path, name: str, version: str, files: list[str]) -> None:
    fake_dist(site, name, version)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def test_two_packages_writing_one_module_fail_when_hpa_needs_one(tmp_path):
    so = "cv2/cv2.abi3.so"
    fake_record(tmp_path, "opencv-python", "4.10.0.84", [so, "cv2/__init__.py", "cv2/data/a.py"])
    fake_record(tmp_path, "opencv-python-headless", "4.14.0.94", [so, "cv2/__init__.py"])
    fake_record(tmp_path, "ns-one", "1.0", ["ns/__init__.py", "ns/one.py"])
    fake_record(tmp_path, "ns-two", "1.0", ["ns/__init__.py", "ns/two.py"])  # a namespace: fine
    (check,) = doctor.check_overlaps([str(tmp_path)], needed={"opencv-python-headless"})
    assert check.status == "FAIL"
    assert check.message.startswith(
        "opencv-python 4.10.0.84 and opencv-python-headless 4.14.0.94 install the same 1 file"
    )
    assert so in check.message
    assert check.fix.endswith(
        "pip uninstall -y opencv-python opencv-python-headless, then pip install "
        "opencv-python-headless"
    )
    assert doctor.check_overlaps([str(tmp_path)], needed={"unrelated"}) == []


def test_this_environment_has_no_overlapping_packages():
    assert [c.line() for c in doctor.check_overlaps(needed=doctor.dependency_closure())] == []


def test_the_same_version_of_two_builds_only_warns(tmp_path):
    # Kaggle's image has opencv-python and opencv-python-headless of one version side by side.
    fake_record(tmp_path, "opencv-python", "4.10.0.84", ["cv2/cv2.abi3.so"])
    fake_record(tmp_path, "opencv-python-headless", "4.10.0.84", ["cv2/cv2.abi3.so"])
    (check,) = doctor.check_overlaps([str(tmp_path)], needed={"opencv-python-headless"})
    assert check.status == "WARN"
