"""Every promise kept by one mechanism (hpa.outputs, hpa.inputs, hpa.errors, hpa.fsio), tested
against the mechanism for every command that takes an output, not case by case.

- Ownership: a command pointed at a folder of the user's own files, named as the command's own
  outputs are named, leaves every byte of them as it was and exits 2 in one line.
- One writer: a second writer of an output stops at once, naming the holder's PID.
- Resume only what is the same: checksums, moved runs, changed settings.
- Bounded reads: FIFOs, stalled `kaggle` calls, crafted masks; IDs that are paths.
- One line: Hydra's errors, model-folder mismatches, read-only folders.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.errors import InputError
from hpa.outputs import MANIFEST, foreign, lock, output, owner, record, replace_folder
from procs import child_env

# ---- ownership: every command against a folder of the user's own files --------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def users_folder(root: Path, names: list[str]) -> Path:
    """A folder of the user's own files, each named as a command's output would be."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"the user's own {name}\n".encode() + os.urandom(8))
    return root


def one_error(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def hpa(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=child_env(), cwd=cwd
    )


@pytest.fixture(scope="module")
def truth_set(tmp_path_factory) -> Path:
    from hpa.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("truth") / "set"
    cfg = SyntheticConfig(n_images=3, image_size=64, seed=3, split="test", workers=1)
    return generate_dataset(cfg, root, progress=False)


# Each command that takes an output: the user's folder, its files named as that command's
# outputs, and the command line pointed at them. Every byte must survive.
def evaluate_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    run = users_folder(tmp / "run", ["metrics.json", "submission.csv"])
    (run / "submission.csv").write_bytes((truth / "sample_submission.csv").read_bytes())
    return ["hpa.evaluate", f"submission={run / 'submission.csv'}", f"truth_dir={truth}"], run


def evaluate_run_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """A training run's metrics.json beside the submission: the run owns it (its manifest)."""
    run = users_folder(tmp / "run", ["metrics.json", "submission.csv"])
    (run / "submission.csv").write_bytes((truth / "sample_submission.csv").read_bytes())
    record(run / "metrics.json", "hpa.train")
    metrics = run / "metrics.json"
    return ["hpa.evaluate", f"submission={run / 'submission.csv'}", f"truth_dir={truth}",
            f"metrics={metrics}"], run  # fmt: skip


def predict_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """The submission named as the sample submission: its own input."""
    data = users_folder(tmp / "data", ["sample_submission.csv"])
    sample = data / "sample_submission.csv"
    sample.write_bytes((truth / "sample_submission.csv").read_bytes())
    return ["hpa.predict", f"models=[{tmp}]", f"input_dir={truth / 'test'}",
            f"sample_submission={sample}", f"submission={sample}"], data  # fmt: skip


def pseudo_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """pseudo's out named as its own train.csv."""
    data = users_folder(tmp / "data", ["train.csv", "oof.csv"])
    return ["hpa.pseudo", f"oof={data / 'oof.csv'}", f"data.root={data}",
            f"out={data / 'train.csv'}"], data  # fmt: skip


def ensemble_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    data = users_folder(tmp / "runs", ["a/oof.csv", "ensemble.yaml"])
    record(data / "ensemble.yaml", "hpa.train")  # someone else's, by its manifest
    return [
        "hpa.ensemble",
        f"oof=[{data / 'a' / 'oof.csv'}]",
        f"out={data / 'ensemble.yaml'}",
    ], data


def synthetic_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    data = users_folder(tmp / "data", ["train.csv", "cells.csv", "masks/a.png", "notes.txt"])
    return ["hpa.synthetic", f"out={data}", "n_images=2", "image_size=64"], data


def kaggle_bundle_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    out = users_folder(tmp / "mine", ["x-1.0-py3-none-any.whl", "dataset-metadata.json"])
    return ["hpa.kaggle", "bundle", "--out", str(out), "--user", "me"], out


def kaggle_model_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """--out pointed at the trained model itself."""
    model = users_folder(tmp / "run" / "model", ["config.json", "model.safetensors"])
    (model / "config.json").write_text(json.dumps({"format": "hpa-model/1"}))
    return [
        "hpa.kaggle",
        "model",
        "--model",
        str(model),
        "--out",
        str(model),
        "--user",
        "me",
    ], model


def kaggle_kernels_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    out = users_folder(tmp / "k", ["hpa-inference/kernel-metadata.json", "hpa-train/notes.md"])
    return ["hpa.kaggle", "kernels", "--out", str(out), "--user", "me"], out


def train_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """paths.output_dir guarded while hydra.run.dir names another folder: refused outright."""
    run = users_folder(tmp / "run", ["metrics.json", "model/config.json"])
    return ["hpa.train", f"paths.output_dir={run}", f"hydra.run.dir={tmp / 'elsewhere'}"], run


def train_sweep_case(tmp: Path, truth: Path) -> tuple[list[str], Path]:
    """A sweep rerun into a sweep folder whose jobs hold runs."""
    sweep = users_folder(tmp / "sweep", ["0/metrics.json", "0/model/config.json"])
    return ["hpa.train", "-m", f"hydra.sweep.dir={sweep}", "seed=1,2"], sweep


CASES = {
    "evaluate": evaluate_case,
    "evaluate-run-metrics": evaluate_run_case,
    "predict": predict_case,
    "pseudo": pseudo_case,
    "ensemble": ensemble_case,
    "synthetic": synthetic_case,
    "kaggle-bundle": kaggle_bundle_case,
    "kaggle-model": kaggle_model_case,
    "kaggle-kernels": kaggle_kernels_case,
    "train": train_case,
    "train-sweep": train_sweep_case,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_command_touches_the_users_files(case, tmp_path, truth_set):
    args, folder = CASES[case](tmp_path, truth_set)
    before = snapshot(folder)
    result = hpa(*args, cwd=tmp_path)
    line = one_error(result)
    assert snapshot(folder) == before, f"{case} changed the user's files: {line}"
    assert any(w in line for w in ("did not write", "input of", "belongs to", "already holds",
                                   "two folders", "was not written")), line  # fmt: skip


def test_replace_folder_replaces_only_what_it_wrote(tmp_path):
    out = tmp_path / "bundle"
    with replace_folder(out, "--out", "hpa.kaggle bundle") as tmp:
        (tmp / "a.whl").write_text("first")
    assert owner(out / "a.whl") == "hpa.kaggle bundle" and not foreign(out)
    with replace_folder(out, "--out", "hpa.kaggle bundle") as tmp:  # its own: replaced whole
        (tmp / "b.whl").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "b.whl"]
    (out / "notes.txt").write_text("mine")  # the user adds a file: the folder is not ours alone
    refused = pytest.raises(InputError, match=r"did not write \(notes.txt\)")
    with refused, replace_folder(out, "--out", "hpa.kaggle bundle"):
        pytest.fail("must refuse before yielding")
    assert (out / "notes.txt").read_text() == "mine" and (out / "b.whl").read_text() == "second"
    refused = pytest.raises(InputError, match="did not write")  # another command's folder
    with refused, replace_folder(out, "--out", "hpa.kaggle output"):
        pass


# ---- one writer --------------------------------------------------------------------------

HOLDER = """
import sys
from hpa.outputs import lock
with lock(sys.argv[1], "submission"):
    print("locked", flush=True)
    sys.stdin.read()  # held until the test closes our stdin
"""


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout.readline().strip() == "locked"  # an event, not a sleep
    return proc


@pytest.mark.parametrize("command", ["evaluate", "predict", "train"])
def test_a_second_writer_stops_at_once_naming_the_holder(command, tmp_path, truth_set):
    out = tmp_path / ("run" if command == "train" else "out.csv")
    args = {
        "evaluate": ["hpa.evaluate", f"submission={truth_set / 'sample_submission.csv'}",
                     f"truth_dir={truth_set}", f"metrics={out}"],
        "predict": ["hpa.predict", f"models=[{tmp_path}]", f"input_dir={truth_set / 'test'}",
                    f"sample_submission={truth_set / 'sample_submission.csv'}",
                    f"submission={out}"],
        "train": ["hpa.train", f"paths.output_dir={out}"],
    }[command]  # fmt: skip
    holder = hold_lock(out)
    try:
        line = one_error(hpa(*args, cwd=tmp_path))
    finally:
        holder.stdin.close()
        holder.wait()
    assert f"pid {holder.pid}" in line and str(out) in line
    assert not out.exists()  # the holder wrote nothing and neither did the second writer
    with lock(out):  # released when its holder ended: free again, and the lock file is gone
        pass
    assert not any(p.name.endswith(".hpa-lock") for p in tmp_path.iterdir())


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = hold_lock(tmp_path / "x.csv")
    holder.kill()
    holder.wait()
    with lock(tmp_path / "x.csv"):  # the kernel dropped it with the process: no stale lock
        pass


def test_default_run_folders_are_unique_within_a_second():
    from omegaconf import OmegaConf

    import hpa.train  # noqa: F401  (registers the resolvers)

    text = (Path(hpa.train.__file__).parent / "configs" / "hydra" / "default.yaml").read_text()
    assert text.count("${hpa_pid:}") == 2  # run and sweep folders
    cfg = OmegaConf.create({"a": "${hpa_pid:}"})
    assert cfg.a == str(os.getpid())


# ---- resume only what is the same ----------------------------------------------------------


def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path):
    import torch

    from hpa.train import check_ckpt
    from hpa.training.checkpointing import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(4096.0)}}, path)
    assert check_ckpt(str(path)) == str(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed in the middle: torch would load it
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged"):
        check_ckpt(str(path))
    AtomicCheckpointIO().remove_checkpoint(path)  # the checksum goes with its checkpoint
    assert not list(path.parent.iterdir())


def test_a_moved_run_resumes_with_its_own_checkpoints(tmp_path):
    from hpa.training.checkpointing import RunCheckpoint

    new, old = tmp_path / "run" / "checkpoints", tmp_path / "run" / "previous-1" / "checkpoints"
    saved = RunCheckpoint(dirpath=str(new), filename="best").state_dict()
    saved.update(best_model_path=str(new / "best.ckpt"), best_k_models={str(new / "best.ckpt"): 1})
    resumed = RunCheckpoint(dirpath=str(old), filename="best")
    resumed.load_state_dict(saved)  # saved while the run was at run/, resumed from previous-1/
    assert resumed.best_model_path == str(old / "best.ckpt")
    assert list(resumed.best_k_models) == [str(old / "best.ckpt")]


@pytest.mark.parametrize(
    ("key", "saved", "now", "expected"),
    [
        ("image_size", 64, 96, "image_size 64, this run has 96"),
        ("class_names", ["a", "b"], ["a"], "2 classes, this run has 1 classes"),
    ],
)
def test_a_resume_that_changes_what_the_model_depends_on_is_one_line(key, saved, now, expected):
    from types import SimpleNamespace

    from hpa.train import check_ckpt_matches

    module = SimpleNamespace(hparams={key: now}, state_dict=dict)
    with pytest.raises(InputError, match=expected):
        check_ckpt_matches(
            "last.ckpt", {"hyper_parameters": {key: saved}, "state_dict": {}}, module
        )


def test_resuming_past_max_epochs_is_one_line():
    from hpa.train import check_resume_epochs

    check_resume_epochs("last.ckpt", {"epoch": 1}, 2)  # one epoch left: fine
    with pytest.raises(InputError, match="raise trainer.max_epochs"):
        check_resume_epochs("last.ckpt", {"epoch": 4}, 2)


def test_an_export_carries_a_checksum_checked_at_load(tmp_path):
    import torch

    from hpa.models.export import export_model, load_exported
    from hpa.models.factory import create_backbone
    from hpa.models.net import HPANet

    net = HPANet(create_backbone("resnet10t", num_classes=19, in_chans=4), [0.0] * 4, [1.0] * 4)
    meta = {"backbone": "resnet10t", "num_classes": 19, "in_chans": 4,
            "class_names": [str(i) for i in range(19)], "image_size": 32}  # fmt: skip
    out = export_model(net, tmp_path / "model", meta)
    weights = out / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == stat.S_IMODE(
        (out / "config.json").stat().st_mode
    )
    load_exported(out)
    data = bytearray(weights.read_bytes())
    data[-100:-90] = bytes(10)
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged"):
        load_exported(out)
    # A config that disagrees with its weights: one line naming the first differing weight.
    export_model(net, out, meta)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "num_classes": 5}))
    with pytest.raises(InputError) as info:
        load_exported(out)
    assert "\n" not in str(info.value) and "weight " in str(info.value)
    del torch


def test_a_resumed_prediction_refuses_a_model_exported_anew(tmp_path):
    from hpa.models.export import model_checksums

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"a")
    first = model_checksums(model)
    (model / "model.safetensors").write_bytes(b"b")  # same folder, other weights
    assert model_checksums(model) != first  # so the partial submission's fingerprint differs


# ---- bounded reads -------------------------------------------------------------------------


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_where_an_image_should_be_is_named_not_waited_on(tmp_path):
    from hpa.data.images import read_sample

    fifo(tmp_path / "a_red.png")
    with pytest.raises(InputError, match="is a FIFO"):  # returns at once: nobody writes it
        read_sample(tmp_path, "a")


@pytest.mark.parametrize(
    "reader",
    ["records", "sample_submission", "submission", "oof"],
)
def test_a_fifo_where_a_table_should_be_is_named(reader, tmp_path):
    from hpa.data.records import read_records
    from hpa.pseudo import read_oof
    from hpa.submission.predictions import read_submission
    from hpa.submission.writer import read_sample_submission

    read = {"records": read_records, "sample_submission": read_sample_submission,
            "submission": read_submission, "oof": read_oof}[reader]  # fmt: skip
    with pytest.raises(InputError, match="is a FIFO"):
        read(fifo(tmp_path / "table.csv"))


def test_a_read_that_stalls_is_one_line_not_a_hang(tmp_path, monkeypatch):
    """A stalled network mount: the read never returns until the test lets it go."""
    from hpa.data.images import read_sample

    released = threading.Event()
    real = Path.read_bytes

    def stalled(self):
        if self.name == "a_red.png":
            released.wait()  # an event the test sets only after the command gave up
        return real(self)

    for channel in ("red", "green", "blue", "yellow"):
        (tmp_path / f"a_{channel}.png").write_bytes(b"")
    monkeypatch.setattr(Path, "read_bytes", stalled)
    monkeypatch.setenv("HPA_READ_TIMEOUT", "0.2")
    try:
        with pytest.raises(InputError, match=r"a_red.png gave no data in 0 s .*HPA_READ_TIMEOUT"):
            read_sample(tmp_path, "a")
    finally:
        released.set()


STALLED_KAGGLE = """#!/bin/sh
echo started > "$FAKE_KAGGLE_READY"
exec sleep 3600
"""


def test_a_stalled_kaggle_call_ends_in_one_line(tmp_path, monkeypatch):
    from hpa.kaggle.push import KaggleCli

    exe = tmp_path / "kaggle"
    exe.write_text(STALLED_KAGGLE)
    exe.chmod(0o755)
    monkeypatch.setenv("FAKE_KAGGLE_READY", str(tmp_path / "ready"))
    cli = KaggleCli(str(exe), timeout_s=0.5)  # never answers: the limit always ends it
    with pytest.raises(InputError, match="gave no answer in 0 s|gave no answer in 1 s"):
        cli.run("kernels", "status", "me/x")
    assert (tmp_path / "ready").exists()


def test_kaggle_output_that_is_not_utf8_is_no_traceback(tmp_path):
    from hpa.kaggle.push import KaggleCli

    exe = tmp_path / "kaggle"
    exe.write_text("#!/bin/sh\nprintf 'status: \\377\\376 complete\\n'\n")
    exe.chmod(0o755)
    done = KaggleCli(str(exe)).run("kernels", "status", "me/x", stdout_errors=False)
    assert "complete" in done.stdout


def test_sigterm_while_a_kaggle_call_hangs_is_one_line_and_143(tmp_path):
    from procs import signal_when

    exe = tmp_path / "bin" / "kaggle"
    exe.parent.mkdir()
    exe.write_text(STALLED_KAGGLE)
    exe.chmod(0o755)
    ready = tmp_path / "ready"
    env = child_env(
        PATH=f"{exe.parent}{os.pathsep}{os.environ['PATH']}",
        FAKE_KAGGLE_READY=str(ready),
        KAGGLE_USERNAME="me",
    )
    cmd = [sys.executable, "-m", "hpa.kaggle", "status", "--kernel", "me/hpa-inference"]
    stopped = signal_when(cmd, ready, env=env, timeout_s=120, settle_s=0)
    assert stopped.returncode == 143, stopped.stderr
    lines = [ln for ln in stopped.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM"), stopped.stderr
    with pytest.raises(ProcessLookupError):  # the kaggle child did not outlive it
        os.killpg(stopped.pid, 0)


# ---- IDs are names, not paths --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../x", "/etc/passwd", "a/b", "a\\b", "x\x1by", "..", " "])
def test_ids_that_are_paths_are_refused_wherever_a_table_is_read(bad, tmp_path):
    from hpa.data.images import read_sample
    from hpa.data.records import read_records
    from hpa.submission.writer import read_sample_submission

    train = tmp_path / "train.csv"
    pd.DataFrame({"ID": ["ok", bad], "Label": ["0", "1"]}).to_csv(train, index=False)
    with pytest.raises(InputError, match="row 3.*never a path|row 3.*is empty"):
        read_records(train)
    sample = tmp_path / "sample.csv"
    frame = pd.DataFrame({"ID": [bad], "ImageWidth": [8], "ImageHeight": [8]})
    frame.to_csv(sample, index=False)
    with pytest.raises(InputError, match="row 2"):
        read_sample_submission(sample)
    with pytest.raises(InputError, match="never a path|is empty"):
        read_sample(tmp_path, bad)


def test_external_listings_drop_ids_that_are_paths(tmp_path):
    from hpa.inputs import id_problem

    assert id_problem("10580_1610_C1_1") is None
    assert id_problem("x\x00y") and id_problem("C:x")
    assert id_problem("../10580") and id_problem("a/b")


# ---- bounded decoding ----------------------------------------------------------------------


def test_a_mask_that_inflates_past_its_rows_size_is_refused_before_decoding():
    from hpa.submission.encoding import decode_binary_mask, max_counts_bytes

    bomb = base64.b64encode(zlib.compress(b"0" * (64 << 20), 9)).decode()  # 64 MB from ~64 KB
    assert len(bomb) < 200_000
    with pytest.raises(InputError, match="would decode to"):
        decode_binary_mask(bomb, 64, 64)
    assert max_counts_bytes(64, 64) < 1 << 20


def test_an_image_larger_than_its_row_says_is_not_decoded(tmp_path):
    import cv2

    from hpa.data.images import read_channel, read_sample

    for channel in ("red", "green", "blue", "yellow"):
        cv2.imwrite(str(tmp_path / f"a_{channel}.png"), np.zeros((40, 50), np.uint8))
    assert read_sample(tmp_path, "a", max_pixels=50 * 40).shape == (40, 50, 4)
    with pytest.raises(InputError, match=r"says it is 50x40 px, more than the 1,999 pixels"):
        read_sample(tmp_path, "a", max_pixels=50 * 40 - 1)
    # A header that claims a huge image (a 20000 x 20000 PNG of zeros compresses to ~1 MB): the
    # default limit refuses it before OpenCV allocates 400 MB for its pixels.
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((1, 1), np.uint8))
    data = bytearray(big.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the chunk's CRC, redone
    big.write_bytes(bytes(data))
    with pytest.raises(InputError, match="20000x20000 px"):
        read_channel(big)


def test_real_masks_still_decode():
    from hpa.submission import encode_binary_mask
    from hpa.submission.encoding import decode_binary_mask

    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.5  # the worst case for run lengths: noise
    assert (decode_binary_mask(encode_binary_mask(mask), 37, 53) == mask).all()


# ---- one line always -----------------------------------------------------------------------


def test_a_mistyped_trainer_key_is_one_line(tmp_path):
    line = one_error(hpa("hpa.train", "trainer.max_epoch=3", cwd=tmp_path))
    assert "trainer.max_epoch" in line
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run folder


def test_a_read_only_folder_is_one_line(tmp_path):
    from hpa.errors import exit_on_input_error

    @exit_on_input_error
    def writes_there() -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "cache"))

    with pytest.raises(SystemExit) as info:
        writes_there()
    assert info.value.code == 2


def test_sigterm_before_the_commands_own_phase_is_one_line(tmp_path):
    """exit_on_input_error holds SIGTERM from the entry point's first line to its last."""
    from hpa.errors import exit_on_input_error

    started = threading.Event()

    @exit_on_input_error
    def setting_up() -> None:
        started.set()
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM must end the command")

    with pytest.raises(SystemExit) as info:
        setting_up()
    assert started.is_set() and info.value.code == 143


def test_small_promises(tmp_path, capsys):
    from hpa.fsio import size_text
    from hpa.kaggle.metadata import check_user

    assert size_text(5 << 20) == "5.0 MiB" and size_text(3 << 30) == "3.0 GiB"
    with pytest.raises(InputError, match="not a user name"):
        check_user("me/../x")
    from hpa.synthetic.__main__ import main

    main([f"out={tmp_path / 's'}", "n_images=2", "image_size=64", "split=test", "workers=1"])
    said = capsys.readouterr().out
    assert "test.csv" in said and "train.csv" not in said


def test_output_records_and_refuses_what_another_command_owns(tmp_path):
    path = tmp_path / "metrics.json"
    with output(path, "metrics", "hpa.evaluate", named_by_user=False):
        path.write_text("{}")
    with output(path, "metrics", "hpa.evaluate", named_by_user=False):  # its own: again
        pass
    refused = pytest.raises(InputError, match="belongs to hpa.evaluate")
    with refused, output(path, "out", "hpa.pseudo"):
        pass


def test_a_command_that_writes_nothing_leaves_no_record(tmp_path):
    path = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), output(path, "out", "hpa.x"):
        raise RuntimeError("failed before writing")
    assert not list(tmp_path.iterdir())  # no manifest, no lock file: the folder as it was
