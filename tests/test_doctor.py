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
