"""python -m hpa.kaggle push|status|output|submit against a fake `kaggle` CLI on PATH.

The fake (a Python script written here) logs its arguments, the files of the folder it was given
(-p) and the metadata there, keeps which data sets "exist", and can be told to fail. The bundle is
built from a minimal hpa wheel and wheels of the installed versions (like tests/faultboot.py
--fake-pip): no pip download, no wheel build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from hpa.kaggle import bundle as bundle_module
from hpa.kaggle import push as push_module
from hpa.kaggle.__main__ import main
from hpa.kaggle.metadata import COMPETITION, PLACEHOLDER_USER, default_user
from hpa.outputs import MANIFEST

FAKE_KAGGLE = r'''#!{python}
"""A stand-in for the kaggle CLI: logs each call, answers like the real one."""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
state_file = Path(os.environ["FAKE_KAGGLE_STATE"])
state = json.loads(state_file.read_text()) if state_file.exists() else {
    "existing": [d for d in os.environ.get("FAKE_KAGGLE_EXISTING", "").split(",") if d],
    "status_calls": 0,
}
entry = {"args": args}
if "-p" in args:
    folder = Path(args[args.index("-p") + 1])
    entry["files"] = sorted(p.name for p in folder.iterdir())
    for name in ("dataset-metadata.json", "kernel-metadata.json"):
        if (folder / name).exists():
            entry["metadata"] = json.loads((folder / name).read_text())
with open(os.environ["FAKE_KAGGLE_LOG"], "a") as f:
    f.write(json.dumps(entry) + "\n")


def done(code=0):
    state_file.write_text(json.dumps(state))
    sys.exit(code)


command = " ".join(args)
if os.environ.get("FAKE_KAGGLE_FAIL") and command.startswith(os.environ["FAKE_KAGGLE_FAIL"]):
    print("403 Client Error: Forbidden for url: https://example.invalid/api", file=sys.stderr)
    print("", file=sys.stderr)
    print("You don't have access to this resource.", file=sys.stderr)
    done(1)
if os.environ.get("FAKE_KAGGLE_SAYS") and command.startswith(os.environ["FAKE_KAGGLE_SAYS"]):
    print("Kernel push error: Notebook title is taken")  # the real CLI exits 0 after this
    done(0)
if args[:2] == ["datasets", "status"]:
    if args[2] not in state["existing"]:
        print("404 Client Error: Not Found for url: https://example.invalid/api", file=sys.stderr)
        print("", file=sys.stderr)
        print("The resource was not found. Check the spelling of the reference.", file=sys.stderr)
        done(1)
    state["status_calls"] += 1
    pending = int(os.environ.get("FAKE_KAGGLE_PENDING", "0"))
    print(os.environ.get("FAKE_KAGGLE_STATUS", "pending") if state["status_calls"] <= pending else "ready")
elif args[:2] == ["datasets", "create"]:
    state["existing"].append(entry["metadata"]["id"])
    print("Your private Dataset is being created. Please check progress at https://example.invalid")
elif args[:2] == ["datasets", "version"]:
    print("Dataset version is being created. Please check progress at https://example.invalid")
elif args[:2] == ["kernels", "push"]:
    print("Kernel version 7 successfully pushed.  Please check progress at https://example.invalid")
elif args[:2] == ["kernels", "status"] and os.environ.get("FAKE_KAGGLE_RUNS"):
    # FAKE_KAGGLE_RUNS=N: running for the first N status calls, then complete
    state["kernel_status"] = state.get("kernel_status", 0) + 1
    running = state["kernel_status"] <= int(os.environ["FAKE_KAGGLE_RUNS"])
    print(args[2] + ' has status "KernelWorkerStatus.' + ("RUNNING" if running else "COMPLETE") + '"')
elif args[:2] == ["kernels", "status"]:
    print(args[2] + ' has status "KernelWorkerStatus.ERROR"')
    print('Failure message: "RuntimeError: exit status 2"')
elif args[:2] == ["kernels", "logs"]:  # one more line at each call, as a running kernel's
    state["log_calls"] = state.get("log_calls", 0) + 1
    print("".join(f"log line {i}\n" for i in range(1, state["log_calls"] + 1)), end="")
elif args[:2] == ["kernels", "output"]:
    out = Path(args[args.index("-p") + 1])
    (out / "submission.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\n")
    (out / "hpa-inference.log").write_text("[]")
    print("Output file downloaded to " + str(out / "submission.csv"))
elif args[:2] == ["competitions", "submit"]:
    print("Successfully submitted to Human Protein Atlas - Single Cell Classification")
elif args[:2] in (["competitions", "files"], ["competitions", "download"]):
    # The competition: $FAKE_KAGGLE_COMPETITION/archive.zip (what `download` serves whole) and its
    # single files; `files -v` lists the zip's members as CSV, in two pages.
    import zipfile
    comp = Path(os.environ["FAKE_KAGGLE_COMPETITION"])
    if args[1] == "files":
        with zipfile.ZipFile(comp / "archive.zip") as zf:
            rows = [f"{i.filename},{i.file_size},2021-01-26 12:00:00" for i in zf.infolist()]
        half = len(rows) // 2
        if "--page-token" not in args:
            print("Next Page Token = page-2")
        print("name,size,creationDate")
        print("\n".join(rows[half:] if "--page-token" in args else rows[:half]))
        done(0)
    folder = Path(args[args.index("-p") + 1])
    folder.mkdir(parents=True, exist_ok=True)
    if "-f" in args:
        name = args[args.index("-f") + 1]
        (folder / name).write_bytes((comp / name).read_bytes())
        done(0)
    data = (comp / "archive.zip").read_bytes()
    dest = folder / (args[args.index("-c") + 1] + ".zip")
    have = dest.stat().st_size if dest.exists() else 0
    if have == len(data):
        print(dest.name + ": Skipping, found more recently modified local copy")
        done(0)
    if have:
        state.setdefault("resumed_from", []).append(have)
    # FAKE_KAGGLE_STALL=N:FILE: the first download writes up to byte N, creates FILE and waits
    # there (a slow connection) until it is killed.
    stall = os.environ.get("FAKE_KAGGLE_STALL", "")
    stop = int(stall.split(":")[0]) if stall and not state.get("stalled") else len(data)
    with open(dest, "ab") as f:
        f.write(data[have:max(have, stop)])
        f.flush()
        os.fsync(f.fileno())
    if stop < len(data):
        state["stalled"] = True
        state_file.write_text(json.dumps(state))
        Path(stall.split(":", 1)[1]).write_text("stalled")
        import time
        while True:
            time.sleep(1)
done(0)
'''


def write_wheel(folder: Path, name: str, version: str, requires=(), files=()) -> Path:
    """A minimal wheel, byte for byte the same every time (as poetry-core and pip give them)."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    entries = {
        f"{dist}-{version}.dist-info/METADATA": meta,
        f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nTag: py3-none-any\n",
        **dict.fromkeys(files, ""),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name_in_zip, text in entries.items():
            zf.writestr(zipfile.ZipInfo(name_in_zip, (2016, 1, 1, 0, 0, 0)), text)
    return path


def fake_hpa_wheel(root: Path, dest: Path) -> Path:
    """hpa's wheel, minimal: two requirements Kaggle's image lacks (their wheels get fetched)."""
    dest.mkdir(parents=True, exist_ok=True)
    requires = ["hydra-core>=1.3", "iterative-stratification>=0.1"]
    return write_wheel(dest, "hpa", "0.1.0", requires, ["hpa/configs/train.yaml"])


class InstalledVersions:
    """A fetcher serving a wheel of the installed version (it meets hpa's range), no deps."""

    def __call__(self, req, dest: Path) -> Path:
        return write_wheel(dest, req.name, metadata.version(req.name))


class FakeKaggle:
    def __init__(self, folder: Path):
        self.folder = folder
        self.log = folder / "calls.jsonl"

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        return [c["args"][:2] + c["args"][2:3] for c in self.calls()]

    def forget_calls(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def kaggle(tmp_path, monkeypatch) -> FakeKaggle:
    folder = tmp_path / "fake-kaggle"
    (folder / "bin").mkdir(parents=True)
    exe = folder / "bin" / "kaggle"
    exe.write_text(FAKE_KAGGLE.replace("{python}", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(folder / "calls.jsonl"))
    monkeypatch.setenv("FAKE_KAGGLE_STATE", str(folder / "state.json"))
    for key in (
        "FAKE_KAGGLE_FAIL",
        "FAKE_KAGGLE_SAYS",
        "FAKE_KAGGLE_EXISTING",
        "FAKE_KAGGLE_STALL",
        "FAKE_KAGGLE_RUNS",
        "FAKE_KAGGLE_COMPETITION",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setattr(bundle_module, "build_hpa_wheel", fake_hpa_wheel)
    monkeypatch.setattr(bundle_module, "PipFetcher", InstalledVersions)
    monkeypatch.setattr(push_module, "POLL_S", 0.0)
    monkeypatch.chdir(tmp_path)
    return FakeKaggle(folder)


def exported(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"format": "hpa-model/1"}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def push(tmp_path: Path, *models: Path, extra=()) -> None:
    args = ["push", "--out", str(tmp_path / "dist")]
    for model in models:
        args += ["--model", str(model)]
    main([*args, *extra])


def test_first_push_creates_the_data_sets_and_pushes_the_notebook(tmp_path, kaggle, capsys):
    a, b = exported(tmp_path / "a" / "model"), exported(tmp_path / "b" / "model", b"other")
    push(tmp_path, a, b)
    dist = tmp_path / "dist"
    assert kaggle.commands() == [
        ["datasets", "status", "me/hpa-bundle"],  # which exist: none
        ["datasets", "status", "me/hpa-model"],
        ["datasets", "status", "me/hpa-model-2"],
        ["datasets", "create", "-p"],
        ["datasets", "status", "me/hpa-bundle"],  # processed?
        ["datasets", "create", "-p"],
        ["datasets", "status", "me/hpa-model"],
        ["datasets", "create", "-p"],
        ["datasets", "status", "me/hpa-model-2"],
        ["kernels", "push", "-p"],
    ]
    creates = [c for c in kaggle.calls() if c["args"][:2] == ["datasets", "create"]]
    bundle, model_a, model_b = creates
    assert bundle["args"] == ["datasets", "create", "-p", str(dist / "hpa-bundle")]
    assert bundle["metadata"]["id"] == "me/hpa-bundle"
    assert "dataset-metadata.json" in bundle["files"]
    assert {"hpa", "hydra_core", "iterative_stratification"} <= {
        f.split("-")[0] for f in bundle["files"] if f.endswith(".whl")
    }
    for call, slug in ((model_a, "hpa-model"), (model_b, "hpa-model-2")):
        assert call["files"] == [
            MANIFEST,
            "config.json",
            "dataset-metadata.json",
            "model.safetensors",
        ]
        assert call["metadata"]["id"] == f"me/{slug}"
    assert (dist / "hpa-model-2" / "model.safetensors").read_bytes() == b"other"

    (kernel,) = [c for c in kaggle.calls() if c["args"][:2] == ["kernels", "push"]]
    assert kernel["args"] == ["kernels", "push", "-p", str(dist / "kernels" / "hpa-inference")]
    meta = kernel["metadata"]
    assert meta["id"] == "me/hpa-inference" and meta["code_file"] in kernel["files"]
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["docker_image_pinning_type"] == "original"
    assert meta["dataset_sources"] == ["me/hpa-bundle", "me/hpa-model", "me/hpa-model-2"]
    assert meta["competition_sources"] == [COMPETITION]

    out = capsys.readouterr().out
    for step in (
        "data set me/hpa-model: not on Kaggle yet",
        "bundle: building",
        f"model: {a} ->",
        "data set me/hpa-bundle: new: kaggle datasets create",
        "data set me/hpa-model-2: ready",
        "notebook me/hpa-inference: kaggle kernels push",
        "pushed me/hpa-inference version 7",
    ):
        assert step in out, step
    state = json.loads((dist / "push.json").read_text())
    assert state["kernel"] == "me/hpa-inference" and state["version"] == 7


def test_a_later_push_versions_what_changed_and_skips_the_rest(tmp_path, kaggle, capsys):
    a, b = exported(tmp_path / "a" / "model"), exported(tmp_path / "b" / "model", b"other")
    push(tmp_path, a, b)
    kaggle.forget_calls()
    exported(tmp_path / "b" / "model", b"retrained")
    push(tmp_path, a, b, extra=["--message", "retrained b"])
    uploads = [c["args"] for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    dist = tmp_path / "dist"
    assert uploads == [
        ["datasets", "version", "-p", str(dist / "hpa-model-2"), "-m", "retrained b"]
    ]
    out = capsys.readouterr().out
    assert "data set me/hpa-bundle: unchanged since the last push, not uploaded" in out
    assert "data set me/hpa-model-2: new version: kaggle datasets version" in out
    assert ["kernels", "push", "-p"] in kaggle.commands()


def test_data_sets_already_on_kaggle_get_a_new_version(tmp_path, kaggle, monkeypatch):
    """No record of a previous push here (another machine): exists on Kaggle -> version."""
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", "me/hpa-bundle,me/hpa-model")
    push(tmp_path, exported(tmp_path / "a" / "model"))
    uploads = [c["args"][:2] for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    assert uploads == [["datasets", "version"], ["datasets", "version"]]


def test_push_waits_until_kaggle_has_processed_the_upload(tmp_path, kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_PENDING", "2")
    push(tmp_path, exported(tmp_path / "a" / "model"))
    statuses = [c for c in kaggle.commands() if c == ["datasets", "status", "me/hpa-bundle"]]
    assert len(statuses) == 1 + 3  # exists?, then pending, pending, ready
    assert kaggle.commands()[-1] == ["kernels", "push", "-p"]


def one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FAKE_KAGGLE_PENDING": "99"}, "is still 'pending' after 0 s"),
        ({"FAKE_KAGGLE_PENDING": "1", "FAKE_KAGGLE_STATUS": "error"}, "could not process"),
    ],
)
def test_an_upload_kaggle_does_not_finish_exits_2(
    tmp_path, kaggle, monkeypatch, capsys, env, expected
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"), extra=["--wait", "0"])
    assert info.value.code == 2
    line = one_error_line(capsys)
    assert "me/hpa-bundle" in line and expected in line
    assert ["kernels", "push", "-p"] not in kaggle.commands()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"FAKE_KAGGLE_FAIL": "kernels push"},
            "error: kaggle kernels push failed: 403 Client Error: Forbidden",
        ),
        (  # the CLI says so on stdout and exits 0
            {"FAKE_KAGGLE_SAYS": "kernels push"},
            "error: kaggle kernels push failed: Kernel push error: Notebook title is taken",
        ),
        (
            {"FAKE_KAGGLE_FAIL": "datasets status"},
            "error: kaggle datasets status failed: 403 Client Error: Forbidden",
        ),
    ],
)
def test_a_cli_error_is_one_line_and_exit_2(tmp_path, kaggle, monkeypatch, capsys, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"))
    assert info.value.code == 2
    assert one_error_line(capsys).startswith(expected)


def test_uploads_done_before_a_failure_are_not_repeated(tmp_path, kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_FAIL", "kernels push")
    model = exported(tmp_path / "a" / "model")
    with pytest.raises(SystemExit):
        push(tmp_path, model)
    monkeypatch.delenv("FAKE_KAGGLE_FAIL")
    kaggle.forget_calls()
    push(tmp_path, model)
    assert not [c for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    assert kaggle.commands()[-1] == ["kernels", "push", "-p"]


def test_without_the_kaggle_cli_push_stops_before_building(tmp_path, kaggle, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"))
    assert info.value.code == 2
    assert "pip install kaggle" in one_error_line(capsys)
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--accelerator", "NvidiaTeslaP100"], "P100"),
        (["--model-slug", "Bad Slug"], "Bad Slug"),
        (["--model-slug", "one", "--model-slug", "two"], "one slug per model"),
    ],
)
def test_bad_options_stop_before_any_call(tmp_path, kaggle, capsys, args, expected):
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"), extra=args)
    assert info.value.code == 2
    assert expected in one_error_line(capsys)
    assert kaggle.calls() == [] and not (tmp_path / "dist").exists()


def test_not_a_model_stops_before_any_call(tmp_path, kaggle, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as info:
        push(tmp_path, tmp_path / "run")
    assert info.value.code == 2
    assert "not an exported hpa model" in one_error_line(capsys)
    assert kaggle.calls() == []


def test_the_user_comes_from_kaggle_json(tmp_path, kaggle, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    config = tmp_path / "kaggle-config"
    config.mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert default_user() == PLACEHOLDER_USER
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"))
    assert info.value.code == 2 and "no Kaggle user" in one_error_line(capsys)

    (config / "kaggle.json").write_text(json.dumps({"username": "fromfile", "key": "x"}))
    push(tmp_path, exported(tmp_path / "a" / "model"))
    (kernel,) = [c for c in kaggle.calls() if c["args"][:2] == ["kernels", "push"]]
    assert kernel["metadata"]["id"] == "fromfile/hpa-inference"
    assert kernel["metadata"]["dataset_sources"] == ["fromfile/hpa-bundle", "fromfile/hpa-model"]


def test_status_output_and_submit_follow_the_last_push(tmp_path, kaggle, capsys):
    push(tmp_path, exported(tmp_path / "a" / "model"))
    kaggle.forget_calls()
    pushed = ["--pushed", str(tmp_path / "dist")]
    main(["status", *pushed])
    # The kernel's own failure message is shown, not taken for a CLI error.
    assert 'has status "KernelWorkerStatus.ERROR"' in capsys.readouterr().out

    main(["output", "--out", str(tmp_path / "result"), *pushed])
    assert (tmp_path / "result" / "submission.csv").is_file()
    main(["output", "--out", str(tmp_path / "result"), *pushed])  # again: replaced
    main(["submit", "--message", "first try", *pushed])
    calls = [c["args"] for c in kaggle.calls()]
    assert calls[0] == ["kernels", "status", "me/hpa-inference"]
    assert calls[1][:3] == ["kernels", "output", "me/hpa-inference"]
    assert calls[-1] == [
        "competitions",
        "submit",
        "-c",
        COMPETITION,
        "-k",
        "me/hpa-inference",
        "-v",
        "7",
        "-f",
        "submission.csv",
        "-m",
        "first try",
    ]
    assert "Successfully submitted" in capsys.readouterr().out


def test_output_refuses_a_folder_of_other_files(tmp_path, kaggle, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as info:
        main(["output", "--out", str(tmp_path / "mine")])
    assert info.value.code == 2 and "did not write (notes.txt)" in one_error_line(capsys)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_submit_without_a_version_exits_2(tmp_path, kaggle, capsys):
    with pytest.raises(SystemExit) as info:
        main(["submit", "--message", "m", "--pushed", str(tmp_path / "never")])
    assert info.value.code == 2 and "--version" in one_error_line(capsys)
    main(["submit", "--message", "m", "--kernel", "me/other", "--version", "3"])
    assert kaggle.calls()[-1]["args"][4:8] == ["-k", "me/other", "-v", "3"]


def test_push_runs_as_a_command(tmp_path, kaggle):
    """The real entry point in a child process (nothing faked but the CLI): a token the CLI
    rejects stops it at the first call, before the bundle is built, with one line and exit 2."""
    env = {**os.environ, "FAKE_KAGGLE_FAIL": "datasets status"}
    model = exported(tmp_path / "a" / "model")
    done = subprocess.run(
        [sys.executable, "-m", "hpa.kaggle", "push", "--model", str(model), "--out", "dist"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: kaggle datasets status failed: 403 Client Error: Forbidden for url: "
        "https://example.invalid/api"
    ]
    assert kaggle.commands() == [["datasets", "status", "me/hpa-bundle"]]
    assert not (tmp_path / "dist" / "hpa-bundle").exists()


def completed(rc: int, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["kaggle"], rc, stdout, stderr)


@pytest.mark.parametrize(
    ("done", "line"),
    [
        (completed(0, "ready\n"), None),
        (  # an HTTP error: the error, not the hint after it
            completed(
                1, stderr="404 Client Error: Not Found for url: u\n\nThe resource was not found.\n"
            ),
            "404 Client Error: Not Found for url: u",
        ),
        (  # an unexpected error: its line, not the request to report it
            completed(
                1,
                stderr="TypeError: bad\n\nIf this is unexpected, you can re-run with `kaggle "
                "--debug [command]` to see the full\ntraceback. If you think this is a bug, "
                "please report it at https://example.invalid\n",
            ),
            "TypeError: bad",
        ),
        (
            completed(1, "Authentication required to call the Kaggle API.\n\nFirst..."),
            "Authentication required to call the Kaggle API.",
        ),
        (
            completed(0, "Dataset creation error: Title taken\n"),
            "Dataset creation error: Title taken",
        ),
        (
            completed(
                0,
                "The following are not valid dataset sources and could not be added to the kernel: ['me/x']\n",
            ),
            "The following are not valid dataset sources and could not be added to the kernel: ['me/x']",
        ),
        (completed(3), "exit status 3"),
    ],
)
def test_what_a_cli_failure_says_in_one_line(done, line):
    assert push_module.cli_problem(done) == line


# --with-hpacellseg, --segmenter-weights, --predict-option: the bundle's no-deps wheels, the
# weights data set attached and the pushed notebook's parameters cell

NOTEBOOK = bundle_module.project_root() / "notebooks" / "kaggle_inference.ipynb"
SHARED_HPACELLSEG = sorted(
    NOTEBOOK.parents[2].joinpath("shared", "wheels").glob("hpacellseg-*.whl")
)
WEIGHTS = "other/hpacellseg-weights"


@pytest.fixture
def no_deps_wheels(tmp_path) -> tuple[Path, Path]:
    """Stand-ins for hpacellseg's and pytorch_zoo's wheels (pure Python, as Kaggle needs)."""
    (tmp_path / "wheels").mkdir()
    seg = write_wheel(tmp_path / "wheels", "hpacellseg", "0.1.8", files=["hpacellseg/__init__.py"])
    zoo = write_wheel(
        tmp_path / "wheels", "pytorch_zoo", "0.0.1", files=["pytorch_zoo/__init__.py"]
    )
    return seg, zoo


def parameters_cell(notebook: dict) -> dict:
    (cell,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    return cell


def pushed_parameters(dist: Path) -> dict:
    """The pushed notebook's parameters, as its first cell sets them when it runs."""
    notebook = json.loads((dist / "kernels" / "hpa-inference" / NOTEBOOK.name).read_text())
    namespace: dict = {}
    exec("".join(parameters_cell(notebook)["source"]), namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def test_push_with_hpacellseg_bundles_its_wheels_and_sets_the_notebook(
    tmp_path, kaggle, monkeypatch, capsys, no_deps_wheels
):
    seg, zoo = no_deps_wheels
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", WEIGHTS)
    repo_notebook = NOTEBOOK.read_bytes()
    options = ["--predict-option", "tta=d4", "--predict-option", "min_confidence=0.01"]
    hpacellseg = ["--with-hpacellseg", str(seg), "--with-wheel", str(zoo)]
    push(
        tmp_path,
        exported(tmp_path / "a" / "model"),
        extra=[*hpacellseg, "--segmenter-weights", WEIGHTS, *options],
    )
    dist = tmp_path / "dist"
    # The weights data set: checked before anything is built, attached, never uploaded.
    assert kaggle.commands()[:2] == [
        ["datasets", "status", "me/hpa-bundle"],
        ["datasets", "status", "me/hpa-model"],
    ]
    assert kaggle.commands()[2] == ["datasets", "status", WEIGHTS]
    uploads = [c for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    assert [c["metadata"]["id"] for c in uploads] == ["me/hpa-bundle", "me/hpa-model"]
    # The bundle carries both wheels as they are, listed for pip install --no-deps.
    assert {seg.name, zoo.name, "no-deps.txt"} <= set(uploads[0]["files"])
    assert (dist / "hpa-bundle" / "no-deps.txt").read_text().split() == [seg.name, zoo.name]
    assert (dist / "hpa-bundle" / seg.name).read_bytes() == seg.read_bytes()

    (kernel,) = [c for c in kaggle.calls() if c["args"][:2] == ["kernels", "push"]]
    assert kernel["metadata"]["dataset_sources"] == ["me/hpa-bundle", "me/hpa-model", WEIGHTS]
    parameters = pushed_parameters(dist)
    assert parameters["SEGMENTER"] == "hpacellseg"
    assert parameters["PREDICT_OPTIONS"] == ["tta=d4", "min_confidence=0.01"]
    assert parameters["NUCLEI_MODEL"] == parameters["CELL_MODEL"] == "auto"
    # Those two lines are all that differs from the repository's notebook, which is unchanged.
    assert NOTEBOOK.read_bytes() == repo_notebook
    pushed = (dist / "kernels" / "hpa-inference" / NOTEBOOK.name).read_text().splitlines()
    ours = repo_notebook.decode().splitlines()
    changed = [(a, b) for a, b in zip(ours, pushed, strict=True) if a != b]
    assert changed == [
        (
            '    "SEGMENTER = \\"watershed\\"  # or \\"hpacellseg\\"\\n",',
            """    "SEGMENTER = 'hpacellseg'\\n",""",
        ),
        (
            '    "PREDICT_OPTIONS = []"',
            """    "PREDICT_OPTIONS = ['tta=d4', 'min_confidence=0.01']\"""",
        ),
    ]
    out = capsys.readouterr().out
    assert f"data set {WEIGHTS}: on Kaggle (attached, not uploaded" in out
    assert "notebook me/hpa-inference: SEGMENTER = 'hpacellseg'" in out


@pytest.mark.skipif(not SHARED_HPACELLSEG, reason="no hpacellseg wheel in ../shared/wheels")
def test_push_with_hpacellseg_alone_takes_the_shared_wheel(tmp_path, kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", WEIGHTS)
    model = exported(tmp_path / "a" / "model")
    push(tmp_path, model, extra=["--with-hpacellseg", "--segmenter-weights", WEIGHTS])
    bundle = tmp_path / "dist" / "hpa-bundle"
    assert (bundle / "no-deps.txt").read_text().split() == [SHARED_HPACELLSEG[-1].name]
    assert pushed_parameters(tmp_path / "dist")["PREDICT_OPTIONS"] == []


def test_new_notebook_options_push_the_kernel_and_upload_only_what_changed(
    tmp_path, kaggle, monkeypatch, capsys, no_deps_wheels
):
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", WEIGHTS)  # read at the first call
    model = exported(tmp_path / "a" / "model")
    push(tmp_path, model)
    assert pushed_parameters(tmp_path / "dist")["SEGMENTER"] == "watershed"
    kaggle.forget_calls()
    push(tmp_path, model, extra=["--predict-option", "tta=flips"])
    assert not [c for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    assert kaggle.commands()[-1] == ["kernels", "push", "-p"]
    assert pushed_parameters(tmp_path / "dist")["PREDICT_OPTIONS"] == ["tta=flips"]

    kaggle.forget_calls()  # hpacellseg now: the bundle changed, the model did not
    hpacellseg = ["--with-hpacellseg", str(no_deps_wheels[0]), "--segmenter-weights", WEIGHTS]
    push(tmp_path, model, extra=hpacellseg)
    uploads = [c for c in kaggle.calls() if c["args"][1] in ("create", "version")]
    assert [(c["args"][1], c["metadata"]["id"]) for c in uploads] == [("version", "me/hpa-bundle")]
    assert "data set me/hpa-model: unchanged since the last push" in capsys.readouterr().out
    parameters = pushed_parameters(tmp_path / "dist")
    assert parameters["SEGMENTER"] == "hpacellseg" and parameters["PREDICT_OPTIONS"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--segmenter-weights", WEIGHTS], "add --with-hpacellseg"),
        (["--with-hpacellseg", "{seg}"], "add --segmenter-weights OWNER/SLUG"),
        (["--with-hpacellseg", "{seg}", "--segmenter-weights", "weights"], "use OWNER/SLUG"),
        (["--with-hpacellseg", "{seg}", "--segmenter-weights", "a/B C"], "use OWNER/SLUG"),
        (["--with-wheel", "{missing}"], "no such file"),
        (["--with-wheel", "{seg}", "--with-wheel", "{seg}"], "given twice"),
        (["--predict-option", "tta"], "--predict-option 'tta': write KEY=VALUE"),
        (
            ["--predict-option", "tta=d4", "--predict-option", "no_such_key=1"],
            "--predict-option no_such_key=1: Could not override 'no_such_key'",
        ),
        (["--predict-option", "min_confidence=2"], "--predict-option min_confidence=2:"),
        (  # what hpacellseg takes, but the notebook segments with the watershed
            ["--predict-option", "segmenter.scale_factor=0.5"],
            "--predict-option segmenter.scale_factor=0.5:",
        ),
    ],
)
def test_bad_hpacellseg_or_notebook_options_stop_before_any_call(
    tmp_path, kaggle, capsys, no_deps_wheels, args, expected
):
    paths = {
        "seg": no_deps_wheels[0],
        "missing": tmp_path / "wheels" / "missing-1.0-py3-none-any.whl",
    }
    args = [a.format(**paths) for a in args]
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"), extra=args)
    assert info.value.code == 2
    assert expected in one_error_line(capsys)
    assert kaggle.calls() == [] and not (tmp_path / "dist").exists()


def test_hpacellseg_options_pass_the_checks_of_the_notebook_they_set(
    tmp_path, kaggle, no_deps_wheels
):
    """segmenter.* options are checked against the segmenter the notebook uses: hpacellseg's."""
    args = ["--with-hpacellseg", str(no_deps_wheels[0]), "--segmenter-weights", WEIGHTS]
    args += ["--predict-option", "segmenter.scale_factor=0.5"]
    with pytest.raises(SystemExit):  # the weights are not on Kaggle: stops after the status calls
        push(tmp_path, exported(tmp_path / "a" / "model"), extra=args)
    assert kaggle.commands()[-1] == ["datasets", "status", WEIGHTS]


def test_segmenter_weights_not_on_kaggle_stop_before_building(
    tmp_path, kaggle, capsys, no_deps_wheels
):
    args = ["--with-hpacellseg", str(no_deps_wheels[0]), "--segmenter-weights", WEIGHTS]
    with pytest.raises(SystemExit) as info:
        push(tmp_path, exported(tmp_path / "a" / "model"), extra=args)
    assert info.value.code == 2
    line = one_error_line(capsys)
    assert f"--segmenter-weights {WEIGHTS}: no such data set on Kaggle" in line
    assert "dpn_unet_nuclei_v1.pth" in line
    assert all(c["args"][:2] == ["datasets", "status"] for c in kaggle.calls())
    assert not (tmp_path / "dist" / "hpa-bundle").exists()


def test_push_passes_the_run_time_limit_when_set(tmp_path, kaggle):
    model = exported(tmp_path / "a" / "model")
    push(tmp_path, model)
    (first,) = [c["args"] for c in kaggle.calls() if c["args"][:2] == ["kernels", "push"]]
    assert "-t" not in first  # Kaggle's own limit
    kaggle.forget_calls()
    push(tmp_path, model, extra=["--timeout", "32400"])
    (pushed,) = [c["args"] for c in kaggle.calls() if c["args"][:2] == ["kernels", "push"]]
    assert pushed[pushed.index("-t") + 1] == "32400"


def test_logs_shows_the_log_and_follow_shows_new_lines_until_the_kernel_ends(
    tmp_path, kaggle, monkeypatch, capsys
):
    monkeypatch.setattr(push_module, "LOG_POLL_S", 0.0)
    main(["logs", "--kernel", "me/hpa-inference"])
    assert capsys.readouterr().out == "log line 1\n"
    kaggle.forget_calls()
    monkeypatch.setenv("FAKE_KAGGLE_RUNS", "2")  # running for two looks, then complete
    main(["logs", "--follow", "--kernel", "me/hpa-inference"])
    out = capsys.readouterr().out.splitlines()
    # each line once, in order, though every call returns the whole log so far
    assert out[:-1] == ["log line 1", "log line 2", "log line 3", "log line 4"]
    assert "KernelWorkerStatus.COMPLETE" in out[-1]
    assert [c["args"][:2] for c in kaggle.calls()] == [
        ["kernels", "status"],
        ["kernels", "logs"],
    ] * 3
