"""Fault injection: every command, stopped or starved mid-run, loses nothing and says why in a line.

One loop: COMMANDS (a row per command: its arguments, where a run is stopped mid-way, what an
earlier run left behind, how a finished run looks) x the scenarios below (SIGTERM, SIGKILL then a
re-run, a full disk, a read-only output folder). Every scenario asserts the exit status, a
one-line message and no traceback, that every file present before is still there byte for byte,
and that no process of the run is left. Commands run as subprocesses through tests/faultboot.py,
which stops them at a known point (after the N-th call of a function) instead of after a guessed
delay. Training joins as one more Command row.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from hpa.synthetic import SyntheticConfig, generate_dataset
from procs import child_env

BOOT = Path(__file__).with_name("faultboot.py")
ENV = child_env(PYTHONUNBUFFERED="1")
FSIO_TEMP = re.compile(r"^\..+\.tmp-\d+")  # hpa.fsio's temp files and folders
N_TRAIN = 8  # samples prepare caches
N_TEST = 3  # images predict and evaluate go through


@dataclass
class Run:
    """Where one scenario runs: the shared inputs (never written), its output folder, its cwd."""

    inputs: Path
    out: Path
    work: Path


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # python -m MODULE
    argv: Callable[[Run], list[str]]  # writes only under run.out
    pause: str  # `module:attr@N`: the run is stopped after the N-th call (faultboot.py)
    previous: Callable[[Run], None]  # what an earlier run (or the user) left in run.out
    finished: Callable[[Run, subprocess.CompletedProcess], None]  # asserts a complete result
    resumed: str | None = None  # regex in a re-run's output after SIGTERM: it went on, not over
    kill_resumes: bool = False  # the same after SIGKILL (work is kept as it is done)
    boot_flags: tuple[str, ...] = ()
    rerun: Callable[[Run], list[str]] = lambda run: []  # what a re-run adds (train: ckpt_path)
    # The output hpa.outputs locks (None: prepare, whose cache takes concurrent writers by design)
    output: Callable[[Run], Path] | None = None
    # Overrides that point one input at a FIFO made there (None: the command reads no file)
    fifo: Callable[[Path], list[str]] | None = None
    # More pause points, one per phase (set-up, export): SIGTERM there is one line and resumable
    phases: tuple[str, ...] = ()


# --- the commands -----------------------------------------------------------------------------


def _prepare_previous(run: Run) -> None:
    from hpa.prepare import prepare_cache

    # A cache at another size: a run at 32 px must leave it alone.
    prepare_cache(run.inputs / "train", "train", 16, workers=1, cache_root=run.out / "cache")


def _prepare_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    assert f"{N_TRAIN} of {N_TRAIN} samples at 32 px" in done.stdout


def _predict_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    sub = pd.read_csv(run.out / "sub.csv", keep_default_na=False, dtype={"ID": str})
    sample = pd.read_csv(run.inputs / "test" / "sample_submission.csv", dtype={"ID": str})
    assert sub["ID"].tolist() == sample["ID"].tolist()
    assert all(len(s.split()) % 3 == 0 and s for s in sub["PredictionString"])


def _evaluate_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    assert '"mAP"' in (run.out / "metrics.json").read_text()


def _synthetic_previous(run: Run) -> None:
    # The same set made before: the generator only ever writes into a folder it made.
    config = SyntheticConfig(n_images=3, seed=1, image_size=64, workers=1)
    generate_dataset(config, run.out / "syn", progress=False)


def _synthetic_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    assert len(pd.read_csv(run.out / "syn" / "train.csv")) == 3


def _bundle_previous(run: Run) -> None:
    from hpa.outputs import record

    old = run.out / "bundle"
    old.mkdir(parents=True)
    for name, data in (("hpa-0.0.1-py3-none-any.whl", b"an older wheel"),
                       ("dataset-metadata.json", b'{"id": "me/hpa-bundle"}\n')):  # fmt: skip
        (old / name).write_bytes(data)
        record(old / name, "hpa.kaggle bundle")  # an earlier bundle's, by its manifest


def _bundle_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    names = sorted(p.name for p in (run.out / "bundle").iterdir())
    assert "dataset-metadata.json" in names and any(n.startswith("hpa-0.1") for n in names)
    assert "hpa-0.0.1-py3-none-any.whl" not in names  # replaced whole


def _train_argv(run: Run) -> list[str]:
    return [
        f"data.root={run.inputs / 'train'}",
        "data.synthetic=null",
        "data.image_size=32",
        "data.batch_size=2",  # 6 training samples: 3 steps an epoch
        "data.num_workers=1",
        "data.n_folds=4",
        "model.backbone=test_resnet",
        "model.pretrained=false",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "logger=csv",
        "report=false",  # no pictures (tests/tiny_train.py)
        f"paths.output_dir={run.out / 'run'}",
    ]


def _train_finished(run: Run, done: subprocess.CompletedProcess) -> None:
    assert '"epochs_run": 3' in (run.out / "run" / "metrics.json").read_text()
    assert (run.out / "run" / "model" / "model.safetensors").is_file()


def _write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


COMMANDS = [
    Command(
        "prepare",
        "hpa.prepare",
        lambda r: [
            f"data.root={r.inputs / 'train'}",
            "data.image_size=32",
            f"data.cache_dir={r.out / 'cache'}",
            "prepare.workers=2",
        ],
        # The main process, after it took the second finished sample: one is kept, one is not.
        pause="concurrent.futures._base:Future.result@2",
        previous=_prepare_previous,
        finished=_prepare_finished,
        resumed=rf"prepared [1-{N_TRAIN - 1}] samples",
        # (a FIFO among its images: tests/test_ownership.py, through read_channel)
    ),
    Command(
        "predict",
        "hpa.predict",
        lambda r: [
            f"models=[{r.inputs / 'model'}]",
            f"input_dir={r.inputs / 'test' / 'test'}",
            f"sample_submission={r.inputs / 'test' / 'sample_submission.csv'}",
            f"submission={r.out / 'sub.csv'}",
            "progress=false",
        ],
        pause="hpa.submission.writer:SubmissionWriter.write@1",
        previous=lambda r: _write(
            r.out / "sub.csv", "ID,ImageWidth,ImageHeight,PredictionString\n"
        ),
        finished=_predict_finished,
        resumed="resuming after 1 rows",
        kill_resumes=True,
        output=lambda r: r.out / "sub.csv",
        fifo=lambda f: [f"sample_submission={f}"],
        phases=("hpa.inference.classifiers:load_classifiers@1",),  # models loaded, none run
    ),
    Command(
        "evaluate",
        "hpa.evaluate",
        lambda r: [
            f"submission={r.inputs / 'test' / 'sample_submission.csv'}",
            f"truth_dir={r.inputs / 'test'}",
            f"metrics={r.out / 'metrics.json'}",
            "progress=false",
        ],
        pause="hpa.submission.metric:MeanAveragePrecision.add_image@1",
        previous=lambda r: _write(r.out / "metrics.json", '{"mAP": 0.5}\n'),
        finished=_evaluate_finished,
        output=lambda r: r.out / "metrics.json",
        fifo=lambda f: [f"submission={f}"],
    ),
    Command(
        "synthetic",
        "hpa.synthetic",
        lambda r: [f"out={r.out / 'syn'}", "n_images=3", "image_size=64", "seed=1", "workers=1"],
        pause="hpa.data.images:write_channel@1",
        previous=_synthetic_previous,
        finished=_synthetic_finished,
        output=lambda r: r.out / "syn",
    ),
    Command(
        "kaggle-bundle",
        "hpa.kaggle",
        lambda r: ["bundle", "--out", str(r.out / "bundle"), "--user", "me"],
        pause="hpa.kaggle.wheels:build_hpa_wheel@1",
        previous=_bundle_previous,
        finished=_bundle_finished,
        boot_flags=("--fake-pip",),
        output=lambda r: r.out / "bundle",
    ),
]
COMMANDS.append(
    Command(
        "train",
        "hpa.train",
        _train_argv,
        # The second step of epoch 1: epoch 0's last.ckpt is on disk, epoch 1 is half done.
        pause="hpa.training.module:HPAModule.training_step@5",
        previous=lambda r: _write(r.out / "notes.txt", "a user's file beside the run\n"),
        finished=_train_finished,
        resumed=r"resuming from \S*last\.ckpt \(epoch [01], step [3-5];",
        kill_resumes=True,
        # Resumed where a checkpoint was saved; started anew where none was (SIGTERM in set-up).
        rerun=lambda r: (
            [f"ckpt_path={last}"]
            if (last := r.out / "run" / "checkpoints" / "last.ckpt").is_file()
            else []
        ),
        output=lambda r: r.out / "run",
        fifo=lambda f: [f"data.root={f.parent}"],  # its train.csv
        phases=(
            "hpa.pipeline:build_datamodule@1",  # data set up, no step taken
            "hpa.models.export:export_model@1",  # trained and exported, plots and oof not yet
        ),
    )
)
BY_NAME = pytest.mark.parametrize("cmd", COMMANDS, ids=[c.name for c in COMMANDS])
_WRITERS = [c for c in COMMANDS if c.output]
_READERS = [c for c in COMMANDS if c.fifo]
_PHASES = [(c, p) for c in COMMANDS for p in c.phases]


# --- inputs shared by every scenario (read only) ------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from untrained_model import export_untrained

    root = tmp_path_factory.mktemp("inputs")
    generate_dataset(
        SyntheticConfig(n_images=N_TRAIN, seed=2, image_size=64, workers=1),
        root / "train",
        progress=False,
    )
    generate_dataset(
        SyntheticConfig(n_images=N_TEST, seed=3, image_size=64, split="test", workers=1),
        root / "test",
        progress=False,
    )
    export_untrained(root / "model", "image", 64)
    return root


@pytest.fixture
def run(inputs, tmp_path) -> Run:
    out = tmp_path / "out"
    out.mkdir()
    return Run(inputs, out, tmp_path)


# --- processes ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, pp in parents.items() if pp == parent} - found
        found |= kids
        todo.extend(kids)
    return found


def _still_running(pids: set[int], within_s: float = 60) -> set[int]:
    """The pids still alive once they had `within_s` to go (a bound, not a measured time)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = {p for p in pids if _alive(p)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture
def reaper():
    """Collects the pids a test started; whatever outlives the test is SIGKILLed by id."""
    started: set[int] = set()
    yield started
    for pid in started:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _boot(cmd: Command, run: Run, pause: str) -> list[str]:
    marker = run.work / f"paused-{cmd.name}"
    return [sys.executable, str(BOOT), pause, str(marker), *cmd.boot_flags, "--", cmd.module]


def run_command(cmd: Command, run: Run, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """The command from start to end, no pause."""
    args = [*_boot(cmd, run, "-"), *cmd.argv(run), *extra]
    return subprocess.run(
        args, cwd=run.work, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


def start_paused(cmd: Command, run: Run, reaper: set[int]) -> tuple[subprocess.Popen, set[int]]:
    """Start the command and wait until it pauses mid-run; returns it and its processes."""
    marker = run.work / f"paused-{cmd.name}"
    proc = subprocess.Popen(
        [*_boot(cmd, run, cmd.pause), *cmd.argv(run)],
        cwd=run.work,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reaper.add(proc.pid)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{cmd.name} never reached {cmd.pause} (exit {proc.returncode}):\n{err}")
        time.sleep(0.02)
    family = _descendants(proc.pid)
    reaper.update(family)
    return proc, family


# --- what every scenario checks -----------------------------------------------------------------


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def assert_kept(before: dict[Path, bytes]) -> None:
    lost = [str(p) for p in before if not p.is_file()]
    changed = [str(p) for p in before if p.is_file() and p.read_bytes() != before[p]]
    assert not lost and not changed, f"lost {lost}, changed {changed}"


def assert_no_temp_files(folder: Path) -> None:
    left = [str(p) for p in folder.rglob("*") if FSIO_TEMP.match(p.name)]
    assert not left, f"temp files left behind: {left}"


def one_line(stdout: str, stderr: str, prefix: str) -> str:
    """The run's message: the last line of stderr, starting with `prefix`; no traceback."""
    assert "Traceback" not in stdout + stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(prefix), stderr
    assert sum(line.startswith(("error:", "stopped by")) for line in lines) == 1, stderr
    return lines[-1]


def finish(cmd: Command, run: Run) -> subprocess.CompletedProcess:
    """Re-run to the end: it must succeed and leave a complete result."""
    done = run_command(cmd, run, extra=cmd.rerun(run))
    assert done.returncode == 0, done.stderr[-3000:]
    cmd.finished(run, done)
    return done


# --- the scenarios ------------------------------------------------------------------------------


@BY_NAME
def test_sigterm_stops_cleanly_and_a_rerun_goes_on(cmd, run, reaper):
    cmd.previous(run)
    before = snapshot(run.out, run.inputs)
    proc, family = start_paused(cmd, run, reaper)
    proc.send_signal(signal.SIGTERM)
    Path(f"{run.work / f'paused-{cmd.name}'}.go").touch()  # a paused pool worker carries on
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    message = one_line(out, err, "stopped by SIGTERM; ")
    assert "run the same command" in message
    assert_kept(before)
    assert_no_temp_files(run.out)
    assert not _still_running(family | {proc.pid})
    done = finish(cmd, run)
    if cmd.resumed:
        assert re.search(cmd.resumed, done.stdout + done.stderr), done.stdout + done.stderr


@BY_NAME
def test_sigkill_leaves_no_process_and_a_rerun_completes(cmd, run, reaper):
    cmd.previous(run)
    before = snapshot(run.out, run.inputs)
    proc, family = start_paused(cmd, run, reaper)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    # Pool workers die with their parent (prctl PDEATHSIG), not whenever they notice (orphans
    # would also hold its output pipes open: read them only once they are gone).
    survivors = _still_running(family)
    assert not survivors, f"{cmd.name}: {len(survivors)} processes outlived a SIGKILLed parent"
    proc.communicate(timeout=60)
    assert_kept(before)
    done = finish(cmd, run)
    if cmd.resumed and cmd.kill_resumes:
        assert re.search(cmd.resumed, done.stdout + done.stderr), done.stdout + done.stderr


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("mounts a tmpfs (Linux)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "512k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of `disk` (a file the test made; it stays as it is)."""
    chunk = b"\0" * 65536
    with open(disk / "filler", "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
    for size in (4096, 512, 1):  # the last partial block
        try:
            with open(disk / "filler", "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * size)
        except OSError:
            pass


@BY_NAME
def test_full_disk_is_one_line_and_keeps_what_was_there(cmd, inputs, tmp_path, small_disk):
    run = Run(inputs, small_disk / "out", tmp_path)
    run.out.mkdir()
    cmd.previous(run)
    fill(small_disk)
    before = snapshot(small_disk, inputs)
    done = run_command(cmd, run)
    assert done.returncode == 2, done.stderr[-3000:]
    message = one_line(done.stdout, done.stderr, "error: ")
    assert "space" in message and str(small_disk) in message
    assert_kept(before)
    assert_no_temp_files(small_disk)


@pytest.fixture
def read_only(tmp_path):
    """(folder, freeze): freeze() makes the folder read-only: a read-only tmpfs as root (where
    permission bits do not stop writes), permission bits otherwise."""
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        _mount_tmpfs(folder, "4m")

        def freeze():
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

        yield folder, freeze
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.mkdir()
        frozen = []

        def freeze():
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)
                    frozen.append(path)

        yield folder, freeze
        for path in frozen:
            path.chmod(0o755)


@BY_NAME
def test_read_only_output_is_one_line_and_keeps_what_was_there(cmd, inputs, tmp_path, read_only):
    folder, freeze = read_only
    run = Run(inputs, folder / "out", tmp_path)
    run.out.mkdir()
    cmd.previous(run)
    freeze()
    before = snapshot(folder, inputs)
    done = run_command(cmd, run)
    assert done.returncode == 2, done.stderr[-3000:]
    message = one_line(done.stdout, done.stderr, "error: ")
    assert str(folder) in message
    assert_kept(before)


# --- one writer, bounded reads, SIGTERM in every phase (hpa.outputs, hpa.inputs, hpa.errors) --

HOLDER = """
import sys
from hpa.outputs import lock
with lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("cmd", _WRITERS, ids=[c.name for c in _WRITERS])
def test_a_concurrent_writer_stops_at_once_naming_the_holder(cmd, run):
    cmd.previous(run)
    before = snapshot(run.out, run.inputs)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cmd.output(run))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # an event: the lock is held
        done = run_command(cmd, run)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    message = one_line(done.stdout, done.stderr, "error: ")
    assert f"pid {holder.pid}" in message and "another hpa process" in message
    assert_kept(before)


@pytest.mark.parametrize("cmd", _READERS, ids=[c.name for c in _READERS])
def test_a_fifo_among_the_inputs_is_named_not_waited_on(cmd, run):
    """Nobody ever writes the FIFO: a command that opened it would block forever."""
    fifo = run.work / "fifo" / ("train.csv" if "data.root" in cmd.fifo(Path("x"))[0] else "in.csv")
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    (fifo.parent / "train").mkdir()  # a data root: its images' folder, and train.csv a FIFO
    cmd.previous(run)
    before = snapshot(run.out, run.inputs)
    done = run_command(cmd, run, extra=cmd.fifo(fifo))
    assert done.returncode == 2, done.stderr[-3000:]
    message = one_line(done.stdout, done.stderr, "error: ")
    assert "is a FIFO" in message and str(fifo) in message
    assert_kept(before)


@pytest.mark.parametrize(
    ("cmd", "phase"), _PHASES, ids=[f"{c.name}-{p.split(':')[1]}" for c, p in _PHASES]
)
def test_sigterm_in_every_phase_is_one_line_and_a_rerun_finishes(cmd, phase, run, reaper):
    from dataclasses import replace

    at = replace(cmd, pause=phase)
    cmd.previous(run)
    before = snapshot(run.out, run.inputs)
    proc, family = start_paused(at, run, reaper)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "run the same command" in one_line(out, err, "stopped by SIGTERM; ")
    assert_kept(before)
    assert_no_temp_files(run.out)
    assert not _still_running(family | {proc.pid})
    finish(cmd, run)
