"""python -m hpa.doctor: one line per check, FAIL + fix on a mismatch, exit 1; passes here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from hpa import doctor
from hpa import doctor_standalone as standalone
from hpa.doctor import check_model, check_python, check_requirements, check_writable, run_checks
from procs import child_env

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
    assert {c["status"] for c in report["checks"]} <= {"OK", "INFO", "WARN", "FAIL"}
    assert {"build", "kaggle", "drift"} <= set(report["image"])


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
    env = child_env(threads=None)
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
    needed = {"opencv-python-headless"}
    (check,) = doctor.check_overlaps([str(tmp_path)], needed=needed, opencv=BROKEN_CV2)
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
    fake_record(tmp_path, "opencv-python", "4.10.0.84", ["cv2/cv2.abi3.so"])
    fake_record(tmp_path, "opencv-python-headless", "4.10.0.84", ["cv2/cv2.abi3.so"])
    (check,) = doctor.check_overlaps([str(tmp_path)], needed={"opencv-python-headless"})
    assert check.status == "WARN"


OPENCV_FILES = {  # as the three wheels lay out cv2/ (the contrib build is a superset)
    "opencv-python": ["cv2/cv2.abi3.so", "cv2/config.py", "cv2/qt/plugins/libqxcb.so"],
    "opencv-python-headless": ["cv2/cv2.abi3.so", "cv2/config.py"],
    "opencv-contrib-python": [
        "cv2/cv2.abi3.so",
        "cv2/config.py",
        "cv2/qt/plugins/libqxcb.so",
        "cv2/contrib.py",
    ],
}


def test_kaggles_three_opencv_builds_of_one_version_are_one_warning(tmp_path, capsys):
    """Kaggle ships opencv-python, -headless and -contrib-python 4.13.0.92 side by side."""
    for name, files in OPENCV_FILES.items():
        fake_record(tmp_path, name, "4.13.0.92", files)
    (check,) = doctor.check_overlaps([str(tmp_path)], needed={"opencv-python-headless"})
    assert check.status == "WARN"
    assert check.message.startswith(
        "opencv-contrib-python 4.13.0.92, opencv-python 4.13.0.92 and opencv-python-headless "
        "4.13.0.92 install the same 3 file(s)"
    )
    assert check.fix.startswith("one build over another of the same version: works as is")
    assert doctor.check_duplicates([str(tmp_path)]) == []  # three names, not one twice


def BROKEN_CV2() -> str:  # noqa: N802  what opencv_problem says of a cv2 the mix broke
    return "cv2 resize: INTER_AREA by 2 is not the mean of each 2x2 block"


def next_image_opencv(site: Path) -> None:
    """Kaggle's next image: opencv-python and -headless 5.0.0.93 beside -contrib 4.14.0.94."""
    for name, files in OPENCV_FILES.items():
        version = "4.14.0.94" if name == "opencv-contrib-python" else "5.0.0.93"
        fake_record(site, name, version, files)


def test_the_next_images_opencv_mix_only_warns_while_cv2_works_for_hpa(tmp_path):
    next_image_opencv(tmp_path)
    needed = {"opencv-python-headless"}
    (check,) = doctor.check_overlaps([str(tmp_path)], needed=needed, opencv=lambda: None)
    assert check.status == "WARN"
    assert check.message.startswith(
        "opencv-contrib-python 4.14.0.94, opencv-python 5.0.0.93 and opencv-python-headless "
        "5.0.0.93 install the same 3 file(s)"
    )
    assert "every cv2 call hpa makes gives the reference result: works as is" in check.fix


def test_an_opencv_mix_that_breaks_cv2_fails_with_a_fix_that_works_offline(tmp_path):
    next_image_opencv(tmp_path)
    needed = {"opencv-python-headless"}
    (check,) = doctor.check_overlaps([str(tmp_path)], needed=needed, opencv=BROKEN_CV2)
    assert check.status == "FAIL"
    assert BROKEN_CV2() in check.fix
    assert "offline: pip install --no-index --no-deps --force-reinstall /kaggle/input/" in check.fix
    assert "--with-wheel opencv_python_headless-" in check.fix  # how the bundle gets the wheel
    # With a bundle that carries the wheel, the fix names it.
    bundle = tmp_path / "bundle"
    wheel = write_wheel(bundle, "opencv_python_headless-4.14.0.94-cp37-abi3-any.whl", [])
    (check,) = doctor.check_overlaps(
        [str(tmp_path)], needed=needed, bundle=str(bundle), opencv=BROKEN_CV2
    )
    assert f"offline: pip install --no-index --no-deps --force-reinstall {wheel};" in check.fix


def test_other_packages_of_two_versions_writing_one_file_still_fail(tmp_path):
    fake_record(tmp_path, "pkg-a", "1.0", ["shared/core.so"])
    fake_record(tmp_path, "pkg-b", "2.0", ["shared/core.so"])
    (check,) = doctor.check_overlaps([str(tmp_path)], opencv=lambda: None)
    assert check.status == "FAIL" and "a mix of versions" in check.fix


def test_the_cv2_calls_hpa_makes_give_the_reference_results_here():
    check = standalone.check_opencv()
    assert check.line() == (
        "OK   cv2 imports and every cv2 call hpa makes gives the reference result"
    )


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        (  # the real cv2 with a resize that ignores the interpolation asked for
            "sitecustomize.py",
            "import cv2\n_resize = cv2.resize\n"
            "cv2.resize = lambda img, size, interpolation=None: _resize(img, size, "
            "interpolation=cv2.INTER_NEAREST)\n",
            "cv2 resize: INTER_AREA by 2 is not the mean of each 2x2 block",
        ),
        (  # a cv2 that kills Python on import (a broken native library)
            "cv2.py",
            "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
            "import cv2 kills Python (signal SIGSEGV)",
        ),
        (  # a cv2 that does not import
            "cv2.py",
            "raise ImportError('libGL.so.1: cannot open shared object file')\n",
            "import cv2 fails (ImportError: libGL.so.1: cannot open shared object file)",
        ),
    ],
)
def test_a_broken_cv2_is_named_by_the_call_that_breaks(tmp_path, name, source, expected):
    (tmp_path / name).write_text(source)
    problem = standalone.opencv_problem(env=child_env(PYTHONPATH=str(tmp_path)))
    assert problem is not None and expected in problem
    assert standalone.check_opencv(problem=lambda: problem).status == "FAIL"


# --- the GPU's compute capability against the kernels torch was built with ---------------------


class FakeProps:
    def __init__(self, name: str, major: int, minor: int):
        self.name, self.major, self.minor = name, major, minor
        self.total_memory = 16 * 2**30
        self.multi_processor_count = 56


def standin_cuda_arch_problem() -> str | None:
    """What hpa.gpu.cuda_arch_problem promises, used while that module has not landed."""
    import torch

    if not torch.cuda.is_available():
        return None
    arches = set(torch.cuda.get_arch_list())
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        if f"sm_{major}{minor}" not in arches:
            name = torch.cuda.get_device_name(i)
            built = " ".join(sorted(arches))
            return f"GPU {i} {name} has compute capability {major}.{minor}; this torch has kernels for {built} only"
    return None


@pytest.fixture
def fake_gpu(monkeypatch):
    """A visible GPU of the capability asked, on a CPU-only host; hpa.gpu as it is, or its
    stand-in while it has not landed."""
    import torch

    def install(name: str, major: int, minor: int) -> None:
        props = FakeProps(name, major, minor)
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: 1)
        monkeypatch.setattr(cuda, "current_device", lambda: 0)
        monkeypatch.setattr(cuda, "get_device_properties", lambda i=0: props)
        monkeypatch.setattr(cuda, "get_device_capability", lambda i=0: (major, minor))
        monkeypatch.setattr(cuda, "get_device_name", lambda i=0: name)
        monkeypatch.setattr(cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_86", "sm_90"])
        monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        try:
            import hpa.gpu  # noqa: F401  (the real check, once it is part of hpa)
        except ModuleNotFoundError:
            module = types.ModuleType("hpa.gpu")
            module.cuda_arch_problem = standin_cuda_arch_problem
            monkeypatch.setitem(sys.modules, "hpa.gpu", module)

    return install


def test_a_gpu_torch_has_no_kernels_for_fails_naming_the_fix(fake_gpu):
    fake_gpu("Tesla P100-PCIE-16GB", 6, 0)  # what `enable_gpu: true` alone gets on Kaggle
    checks = doctor.check_gpu()
    failed = [c for c in checks if c.status == "FAIL"]
    assert [c.name for c in failed] == ["gpu:arch"]
    line = failed[0].line()
    assert "P100" in line and ("6.0" in line or "sm_60" in line)
    assert "T4" in line and "L4" in line


def test_a_gpu_torch_supports_passes(fake_gpu):
    fake_gpu("Tesla T4", 7, 5)
    checks = doctor.check_gpu()
    assert {c.name: c.status for c in checks}["gpu:arch"] == "OK"
    assert not [c for c in checks if c.status == "FAIL"]


def test_arch_check_is_skipped_without_hpa_gpu_and_survives_its_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "hpa.gpu", None)  # import hpa.gpu -> ModuleNotFoundError
    assert doctor.check_gpu_arch() == []
    broken = types.ModuleType("hpa.gpu")

    def raises():
        raise RuntimeError("CUDA driver version is insufficient")

    broken.cuda_arch_problem = raises
    monkeypatch.setitem(sys.modules, "hpa.gpu", broken)
    (check,) = doctor.check_gpu_arch()
    assert check.status == "WARN" and "CUDA driver version is insufficient" in check.message


# --- the image's build, and what drifted from kaggle_image.txt ----------------------------------


def fake_image_root(
    root: Path, build_date: str = "20260520-101500", commit: str = "0a1b2c3"
) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "build_date").write_text(build_date + "\n")
    (root / "etc" / "git_commit").write_text(commit + "\n")
    return root


def test_image_build_is_read_from_the_files_kaggles_dockerfile_writes(tmp_path):
    root = fake_image_root(tmp_path / "img")
    env = {"COLAB_RELEASE_TAG": "release-colab-external-images_20260514-060047_RC00"}
    build = standalone.image_build(env, root)
    assert build["build_date"] == "20260520-101500" and build["git_commit"] == "0a1b2c3"
    assert build["colab"].endswith("20260514-060047_RC00")
    assert str(root / "etc" / "build_date") in build["source"]
    assert standalone.on_kaggle(env, root)
    # The Dockerfile's ARG default and an image that records nothing.
    unknown = fake_image_root(tmp_path / "unknown", "unknown", "unknown")
    assert standalone.image_build({}, unknown) == {}
    assert standalone.image_build({}, tmp_path / "bare") == {}
    assert not standalone.on_kaggle({}, tmp_path / "bare")
    # Environment variables are a fallback, but not proof of Kaggle (CI sets GIT_COMMIT too).
    from_env = standalone.image_build({"BUILD_DATE": "20260601-000000"}, tmp_path / "bare")
    assert from_env == {"build_date": "20260601-000000", "source": "$BUILD_DATE"}
    assert not standalone.on_kaggle({"GIT_COMMIT": "abc"}, tmp_path / "bare")
    assert standalone.on_kaggle({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, tmp_path / "bare")


IMAGE = "torch==2.10.0  # Colab\nnumpy==2.0.2\nopencv-python==4.13.0.92\n"
RUNNING = {"torch": "2.10.0", "numpy": "2.4.1", "opencv-python": None}


def test_drift_on_a_kaggle_image_is_a_warning_per_package(tmp_path):
    root = fake_image_root(tmp_path)
    checks, info = standalone.image_checks(IMAGE, RUNNING.get, {}, root)
    assert info["drift"] == [
        {"package": "numpy", "expected": "2.0.2", "found": "2.4.1"},
        {"package": "opencv-python", "expected": "4.13.0.92", "found": None},
    ]
    assert [(c.status, c.name) for c in checks] == [
        ("INFO", "image"),
        ("WARN", "image:numpy"),
        ("WARN", "image:opencv-python"),
    ]
    assert "build 20260520-101500, docker-python commit 0a1b2c3" in checks[0].message
    assert checks[1].message == "numpy 2.4.1 here, kaggle_image.txt has 2.0.2"
    assert checks[2].message.startswith("opencv-python not installed here")


def test_drift_elsewhere_is_one_info_line_and_none_is_ok(tmp_path):
    checks, _ = standalone.image_checks(IMAGE, RUNNING.get, {}, tmp_path)
    assert [c.status for c in checks] == ["INFO", "INFO"]
    assert "2 of 3 packages differ" in checks[1].message
    assert "numpy 2.0.2->2.4.1" in checks[1].message
    same = {"torch": "2.10.0", "numpy": "2.0.2", "opencv-python": "4.13.0.92"}
    checks, _ = standalone.image_checks(IMAGE, same.get, {}, tmp_path)
    assert checks[1].status == "OK"


def test_drift_never_fails_the_doctor(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HPA_IMAGE_ROOT", str(fake_image_root(tmp_path / "img")))
    code = doctor.main(["--json", "--output", str(tmp_path)], version_of=planted(scipy="1.17.0"))
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True
    assert report["image"]["kaggle"] is True
    assert {"package": "scipy", "expected": "1.16.3", "found": "1.17.0"} in report["image"]["drift"]
    warned = {c["name"] for c in report["checks"] if c["status"] == "WARN"}
    assert "image:scipy" in warned


# --- the standalone doctor: why pip could not install hpa, without hpa ---------------------------


def write_wheel(
    folder: Path,
    filename: str,
    requires: list[str],
    files: dict | None = None,
    requires_python: str | None = None,
) -> Path:
    name, version = filename.split("-")[:2]
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        meta += f"Requires-Python: {requires_python}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
        for arcname, text in (files or {}).items():
            zf.writestr(arcname, text)
    return path


@pytest.fixture
def broken_bundle(tmp_path) -> Path:
    """A bundle whose hpa needs what this environment cannot give it, as a notebook meets it
    after Kaggle's image moved: hpa_doctor.py beside the wheels."""
    bundle = tmp_path / "hpa-bundle"
    image = "numpy==0.9.0\npackaging==" + metadata.version("packaging") + "\n"
    write_wheel(
        bundle,
        "hpa-0.1.0-py3-none-any.whl",
        [
            "numpy>=0.5,<1.0",  # the image's numpy is newer than this hpa accepts
            "packaging>=20",
            "hpa-test-supplied>=1",  # in the bundle: fine
            "hpa-test-absent>=2",  # nowhere
            "hpa-test-foreign>=1",  # in the bundle, for another Python
            "pip>=9999",  # installed too old; the bundle has a newer one: pip would replace it
            'hpa-test-extra-only>=1; extra == "docs"',
        ],
        {"hpa/kaggle/kaggle_image.txt": image},
        requires_python=">=3.8",
    )
    # Its dependencies are followed too (and a cycle back to it ends).
    write_wheel(
        bundle, "hpa_test_supplied-1.5-py3-none-any.whl", ["hpa-test-deep>=5", "hpa-test-supplied"]
    )
    write_wheel(bundle, "hpa_test_foreign-1.0-cp27-cp27mu-manylinux1_x86_64.whl", [])
    write_wheel(bundle, "pip-9999.0-py3-none-any.whl", [])
    shutil.copy(Path(standalone.__file__), bundle / "hpa_doctor.py")
    return bundle


def run_without_hpa(script: Path, *args: str) -> subprocess.CompletedProcess:
    """`python script args` where neither hpa nor the packaging distribution can be imported."""
    block = (
        "import runpy, sys; sys.modules['hpa'] = None; sys.modules['packaging'] = None; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", block, str(script), *args], capture_output=True, text=True
    )


def test_standalone_doctor_names_package_found_version_and_range(broken_bundle):
    done = run_without_hpa(broken_bundle / "hpa_doctor.py")  # --bundle defaults to its folder
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    numpy = metadata.version("numpy")
    failed = [line for line in lines if line.startswith("FAIL")]
    assert failed[0].startswith(
        f"FAIL numpy {numpy} installed, hpa needs >=0.5,<1.0; the bundle has no numpy wheel: "
    )
    assert "FAIL hpa-test-absent is not installed, hpa needs >=2; the bundle has no " in done.stdout
    assert "FAIL hpa-test-deep is not installed, hpa-test-supplied needs >=5;" in done.stdout
    assert any(
        line.startswith(
            "FAIL hpa-test-foreign is not installed, hpa needs >=1; the bundle's "
            "hpa_test_foreign-1.0-cp27-cp27mu-manylinux1_x86_64.whl is not for CPython"
        )
        for line in failed
    )
    assert len(failed) == 4
    assert (
        "OK   hpa-test-supplied from the bundle: hpa_test_supplied-1.5-py3-none-any.whl "
        "(hpa needs >=1)\n"
    ) in done.stdout
    assert any(line.startswith("OK   packaging ") for line in lines)
    assert (
        f"WARN pip {metadata.version('pip')} installed, hpa needs >=9999: pip replaces it with "
        "the bundle's pip-9999.0-py3-none-any.whl: restart the kernel after the install"
    ) in lines
    assert "extra-only" not in done.stdout
    # The image the wheel was built against, and what differs from it here.
    assert f"numpy 0.9.0->{numpy}" in done.stdout
    assert (
        lines[-1]
        == "hpa_doctor: 4 problem(s): fix the FAIL lines above (hpa-0.1.0-py3-none-any.whl)"
    )


def test_standalone_doctor_json_and_a_bundle_without_hpa(broken_bundle, tmp_path):
    done = run_without_hpa(broken_bundle / "hpa_doctor.py", "--json")
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["wheel"] == "hpa-0.1.0-py3-none-any.whl"
    found = {c["name"]: c["status"] for c in report["checks"]}
    assert found["numpy"] == "FAIL" and found["hpa-test-supplied"] == "OK"
    assert report["image"]["drift"][0]["package"] == "numpy"
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_without_hpa(broken_bundle / "hpa_doctor.py", "--bundle", str(empty))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: no hpa-*.whl in {empty}: pass --bundle with the bundle folder"
    )


def test_standalone_doctor_fails_a_python_the_wheel_excludes():
    check = standalone.check_python_for(">=3.10,<3.13", "hpa-0.1.0-py3-none-any.whl", "3.13.0")
    assert check.status == "FAIL"
    assert check.message.startswith("Python 3.13.0 (")
    assert check.message.endswith("hpa-0.1.0-py3-none-any.whl needs >=3.10,<3.13")
    assert standalone.check_python_for(">=3.10,<3.14", "hpa.whl", "3.13.0").status == "OK"


def test_standalone_doctor_passes_for_this_projects_own_wheel(tmp_path):
    """hpa's real wheel, requirements and image list, against this environment (which has
    everything hpa needs): no FAIL, and the drift lines never fail it."""
    from hpa.kaggle.wheels import build_hpa_wheel, project_root

    bundle = tmp_path / "bundle"
    build_hpa_wheel(project_root(), bundle)
    shutil.copy(Path(standalone.__file__), bundle / "hpa_doctor.py")
    done = run_without_hpa(bundle / "hpa_doctor.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK   hydra-core " in done.stdout
    assert done.stdout.splitlines()[-1].startswith("hpa_doctor: hpa installs here (hpa-")


def test_doctor_names_what_hpacellseg_lacks_one_line_each(tmp_path, capsys):
    from hpa import doctor

    nuclei, cell = tmp_path / "nuclei.pth", tmp_path / "cells.pth"
    code = doctor.main(
        ["--segmenter", "hpacellseg", "--nuclei-model", str(nuclei), "--cell-model", str(cell)]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert code == 1
    assert any(str(nuclei) in line for line in lines) and any(str(cell) in line for line in lines)
    assert len([line for line in lines if str(nuclei) in line]) == 1  # one line per problem
