"""python -m hpa.kaggle data: the competition's zip, from the fake `kaggle` CLI, into the cache.

The fake (tests/test_kaggle_push.py) serves a zip of synthetic samples in the competition's
layout: 16-bit PNGs at three image sizes, one corrupt file, train/ and test/, the two CSVs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hpa.cli import compose
from hpa.data.arraycache import BAD, DONE, ArrayCache
from hpa.data.cache import cache_dir, image_manifest
from hpa.data.images import CHANNELS, write_channel
from hpa.kaggle import data as data_module
from hpa.kaggle.__main__ import main
from hpa.kaggle.metadata import COMPETITION
from hpa.labels import format_labels
from hpa.prepare import prepare_cache
from hpa.synthetic.generator import SyntheticConfig, render_sample
from procs import child_env, signal_when
from test_kaggle_push import kaggle  # noqa: F401  the recording fake CLI, on PATH
from tiny_train import tiny

FAULTBOOT = Path(__file__).with_name("faultboot.py")  # runs a command with a pause point

ARCHIVE = f"{COMPETITION}.zip"
SIZES = [32, 48]
BAD_FILE = "train/{}_green.png"


def write_split(folder: Path, image_dir: str, n: int, seed: int) -> list[tuple[str, list[int]]]:
    """n samples at 64, 80 and 96 px in turn, 16-bit as the hidden test set's."""
    (folder / image_dir).mkdir(parents=True)
    samples = []
    for i in range(n):
        cfg = SyntheticConfig(image_size=(64, 80, 96)[i % 3], bit_depth=16, seed=seed, workers=1)
        s = render_sample(cfg, i)
        for c, channel in enumerate(CHANNELS):
            write_channel(folder / image_dir / f"{s.sample_id}_{channel}.png", s.image[..., c])
        samples.append((s.sample_id, s.image_labels))
    return samples


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    """unpacked/ (as `unzip` leaves it) and comp/ (archive.zip and the CSVs the fake serves)."""
    base = tmp_path_factory.mktemp("competition")
    unpacked, comp = base / "unpacked", base / "comp"
    train = write_split(unpacked, "train", 12, seed=5)
    test = write_split(unpacked, "test", 3, seed=6)
    bad = unpacked / BAD_FILE.format(train[4][0])
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated PNG: decodes to nothing
    rows = "".join(f"{sid},{format_labels(labels)}\n" for sid, labels in train)
    (unpacked / "train.csv").write_text("ID,Label\n" + rows)
    size = {sid: 64 + 16 * (i % 3) for i, (sid, _) in enumerate(test)}
    rows = "".join(f"{sid},{size[sid]},{size[sid]},\n" for sid, _ in test)
    (unpacked / "sample_submission.csv").write_text(
        "ID,ImageWidth,ImageHeight,PredictionString\n" + rows
    )
    comp.mkdir()
    with zipfile.ZipFile(comp / "archive.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(unpacked.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(unpacked).as_posix())
    for name in ("train.csv", "sample_submission.csv"):
        (comp / name).write_bytes((unpacked / name).read_bytes())
    return base


@pytest.fixture(scope="module")
def reference(competition, tmp_path_factory) -> Path:
    """The caches hpa.prepare builds from the unpacked files (a copy of them, not touched)."""
    root = tmp_path_factory.mktemp("reference")
    for image_dir in ("train", "test"):
        (root / image_dir).mkdir()
        for path in (competition / "unpacked" / image_dir).iterdir():
            (root / image_dir / path.name).write_bytes(path.read_bytes())
        for size in SIZES:
            prepare_cache(root, image_dir, size, workers=1)
    return root


@pytest.fixture
def fake(kaggle, competition, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FAKE_KAGGLE_COMPETITION", str(competition / "comp"))
    return kaggle


def get(out: Path, *extra: str) -> None:
    main(["data", "--out", str(out), "--sizes", *map(str, SIZES), "--workers", "1", *extra])


def same_caches(out: Path, reference: Path) -> None:
    """Every cache of `out` holds the rows hpa.prepare made, byte for byte, in the same order."""
    for image_dir in ("train", "test"):
        for size in SIZES:
            got, want = cache_dir(out, image_dir, size), cache_dir(reference, image_dir, size)
            for name in ("data.u8", "state.u8"):
                assert (got / name).read_bytes() == (want / name).read_bytes(), (got, name)
            keys = [json.loads((f / "index.json").read_text())["keys"] for f in (got, want)]
            assert keys[0] == keys[1]
            assert (got / "report.csv").read_text().splitlines()[1:] == [] or image_dir == "train"


def calls(kaggle) -> list[list[str]]:  # noqa: F811
    return [c["args"] for c in kaggle.calls()]


def test_the_zip_is_decoded_into_the_cache_prepare_builds(tmp_path, fake, reference, capsys):
    out = tmp_path / "hpa"
    get(out)
    same_caches(out, reference)
    assert not list(out.rglob("*.png")) and not (out / "train").exists()  # nothing unpacked
    for name in ("train.csv", "sample_submission.csv"):
        assert (out / name).read_bytes() == (fake_comp(fake) / name).read_bytes()
    assert (out / ARCHIVE).read_bytes() == (fake_comp(fake) / "archive.zip").read_bytes()
    # the bad-image report, as hpa.prepare writes it, for every size
    for size in SIZES:
        report = (cache_dir(out, "train", size) / "report.csv").read_text().splitlines()
        assert len(report) == 2 and BAD_FILE.split("{")[0] in report[1]
    # listed (both pages), the CSVs one by one, then the archive
    assert [c[:3] for c in calls(fake)] == [
        ["competitions", "files", "-c"],
        ["competitions", "files", "-c"],
        ["competitions", "download", "-c"],
        ["competitions", "download", "-c"],
        ["competitions", "download", "-c"],
    ]
    assert "--page-token" in calls(fake)[1]
    assert [c[c.index("-f") + 1] for c in calls(fake) if "-f" in c] == [
        "train.csv",
        "sample_submission.csv",
    ]
    text = capsys.readouterr().out
    assert "disk: archive" in text and f"kept {out / ARCHIVE}" in text
    assert f"skipped 1 bad samples (listed in {cache_dir(out, 'train', SIZES[0])}" in text


def fake_comp(kaggle) -> Path:  # noqa: F811
    import os

    return Path(os.environ["FAKE_KAGGLE_COMPETITION"])


def test_a_rerun_downloads_nothing_again_and_delete_archive_removes_it(tmp_path, fake, capsys):
    out = tmp_path / "hpa"
    get(out)
    fake.forget_calls()
    get(out, "--delete-archive")
    assert not any(c[:2] == ["competitions", "download"] for c in calls(fake))
    assert not (out / ARCHIVE).exists() and cache_dir(out, "train", SIZES[0]).is_dir()
    fake.forget_calls()
    get(out)  # the caches are complete: not even the listing is asked for
    assert calls(fake) == []
    assert "is up to date" in capsys.readouterr().out


def test_a_disk_too_small_stops_before_any_download(tmp_path, fake, monkeypatch, capsys):
    out = tmp_path / "hpa"
    monkeypatch.setattr(data_module, "free_bytes", lambda folder: 1000)
    with pytest.raises(SystemExit) as stopped:
        get(out)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"not enough space in {out}" in err[0] and "GiB free" in err[0]
    assert not any(c[:2] == ["competitions", "download"] for c in calls(fake))
    assert not (out / ARCHIVE).exists()


def test_the_space_needed_counts_archive_caches_and_images(tmp_path, fake, competition):
    cli = data_module.KaggleCli.find()
    out = tmp_path / "hpa"
    plan = data_module.make_plan(cli, out, out / ARCHIVE, SIZES, keep_images=True)
    archive = zipfile.ZipFile(competition / "comp" / "archive.zip")
    assert plan.samples == {"train": 12, "test": 3}
    assert plan.archive_bytes == sum(i.file_size for i in archive.infolist())
    assert plan.cache_bytes == 15 * 4 * (32 * 32 + 48 * 48)
    pngs = sum(i.file_size for i in archive.infolist() if i.filename.endswith(".png"))
    assert plan.image_bytes == pngs
    assert plan.needs == {out: plan.archive_bytes + plan.cache_bytes + plan.image_bytes}


def test_sizes_parse_as_the_cli_prints_them():
    assert data_module.parse_size("1234") == 1234
    assert data_module.parse_size("12MB") == 12_000_000
    assert data_module.parse_size("1.5 GB") == 1_500_000_000


def run_data(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hpa.kaggle", "data", "--out", str(out), "--sizes",
            *map(str, SIZES), "--workers", "1", *extra]  # fmt: skip


def test_sigterm_during_the_download_then_a_rerun_resumes_it(
    tmp_path, fake, reference, monkeypatch
):
    out = tmp_path / "hpa"
    ready = tmp_path / "stalled"
    monkeypatch.setenv("FAKE_KAGGLE_STALL", f"5000:{ready}")
    stopped = signal_when(
        run_data(out), ready, env=child_env(), timeout_s=120, settle_s=0.0, sig=signal.SIGTERM
    )
    assert stopped.returncode == 143, stopped.stderr
    assert "stopped by SIGTERM; the downloaded part of the archive" in stopped.stderr
    assert (out / ARCHIVE).stat().st_size == 5000  # the partial file is kept
    get(out)
    state = json.loads((fake.folder / "state.json").read_text())
    assert state["resumed_from"] == [5000]  # the CLI went on from there, not from byte 0
    same_caches(out, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_kill_while_decoding_then_a_rerun_finishes_the_caches(
    tmp_path, fake, reference, sig, capsys
):
    out = tmp_path / "hpa"
    # The decoding worker pauses after its third image (the cache has rows, others are to do)
    # and the command is killed there: mid-way on any machine, however fast it decodes.
    paused = tmp_path / "paused"
    pause = ["hpa.kaggle.archive:_decode_one@3", str(paused)]
    command = [sys.executable, str(FAULTBOOT), *pause, "--", "hpa.kaggle", *run_data(out)[3:]]
    stopped = signal_when(
        command, paused, env=child_env(), timeout_s=120, settle_s=0.0, sig=sig, group=True,
        release=Path(f"{paused}.go"),
    )  # fmt: skip
    assert stopped.returncode == (143 if sig == signal.SIGTERM else -sig), stopped.stderr
    state = (cache_dir(out, "train", SIZES[0]) / "state.u8").read_bytes()
    assert set(state) != {DONE}, "killed after the decoding, not during it"
    fake.forget_calls()
    get(out)
    assert not any(c[:2] == ["competitions", "download"] for c in calls(fake))  # not again
    same_caches(out, reference)


def test_keep_images_unpacks_the_pngs_as_they_are_and_caches_them(
    tmp_path, fake, reference, competition
):
    out = tmp_path / "hpa"
    get(out, "--keep-images")
    for image_dir in ("train", "test"):
        want = competition / "unpacked" / image_dir
        for path in want.iterdir():
            assert (out / image_dir / path.name).read_bytes() == path.read_bytes()
    same_caches(out, reference)


def test_images_already_in_the_root_are_completed_and_cached_from_the_files(
    tmp_path, fake, reference, competition
):
    out = tmp_path / "hpa"
    first = sorted((competition / "unpacked" / "train").iterdir())[0]
    (out / "train").mkdir(parents=True)
    (out / "train" / first.name).write_bytes(first.read_bytes())  # unpacked by hand, in part
    get(out)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        p.name for p in (competition / "unpacked" / "train").iterdir()
    )
    same_caches(out, reference)


def test_bad_options_stop_with_one_line(tmp_path, fake, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["data", "--out", str(tmp_path / "hpa"), "--sizes", "4"])
    assert stopped.value.code == 2
    assert "--sizes 4" in capsys.readouterr().err
    assert calls(fake) == []


# A data root with caches and CSVs and no raw images, as `hpa.kaggle data` leaves it.


@pytest.fixture(scope="module")
def cache_only(competition, reference, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache-only")
    for name in ("train.csv", "sample_submission.csv"):
        (root / name).write_bytes((competition / "unpacked" / name).read_bytes())
    for image_dir in ("train", "test"):
        for size in SIZES:
            src, dst = cache_dir(reference, image_dir, size), cache_dir(root, image_dir, size)
            dst.mkdir(parents=True)
            for path in src.iterdir():
                dst.joinpath(path.name).write_bytes(path.read_bytes())
    return root


def test_train_reads_a_cache_only_root_and_skips_the_bad_sample(cache_only, tmp_path, caplog):
    from hpa.train import train

    cfg = compose("train", ["data=default", *tiny(cache_only, tmp_path / "run", n_folds=3)])
    train(cfg)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert "skipping 1 samples the cache does not hold" in caplog.text
    cache = ArrayCache.open(cache_dir(cache_only, "train", 32), image_manifest("train", 32))
    assert sorted(set(cache.state.tolist())) == [DONE, BAD]


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=child_env()
    )


def test_a_size_the_root_has_no_cache_for_is_one_line_naming_the_command(cache_only, tmp_path):
    done = run_cli("hpa.train", "data=default", *tiny(cache_only, tmp_path / "run"),
                   "data.image_size=64")  # fmt: skip
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()[-1]
    assert "only caches at 32, 48 px" in err
    assert f"python -m hpa.kaggle data --out {cache_only} --sizes 64" in err
    done = run_cli("hpa.prepare", f"data.root={cache_only}", "data.image_size=64")
    assert done.returncode == 2
    assert f"python -m hpa.kaggle data --out {cache_only} --sizes 64" in done.stderr


def test_cell_level_training_needs_the_raw_images(cache_only, tmp_path):
    done = run_cli("hpa.train", "data=cells", *tiny(cache_only, tmp_path / "run"))
    assert done.returncode == 2
    assert "--keep-images" in done.stderr.strip().splitlines()[-1]


def test_bench_times_the_cache_alone_on_a_cache_only_root(cache_only, capsys):
    from hpa.bench import main as bench

    bench(["loader", f"data.root={cache_only}", "data.image_size=32", "bench.batch_size=2",
           "bench.raw_batches=1", "bench.cache_batches=2", "bench.workers=[0]",
           "bench.single_reps=5"])  # fmt: skip
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["cache_samples_per_s"] > 0
    assert result["raw_samples_per_s"] is None and result["ratio"] is None
    assert "raw: not measured" in captured.err


def test_predict_on_a_cache_only_root_names_what_it_needs(cache_only, tmp_path):
    done = run_cli("hpa.predict", f"models=[{tmp_path}]", f"input_dir={cache_only / 'test'}",
                   f"sample_submission={cache_only / 'sample_submission.csv'}",
                   f"submission={tmp_path / 'sub.csv'}")  # fmt: skip
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()[-1]
    assert "full resolution" in err and "--keep-images" in err


def test_decode_channel_reads_bytes_as_read_channel_reads_the_file(tmp_path):
    from hpa.data.images import decode_channel, read_channel

    plane = (np.random.default_rng(0).random((40, 50)) * 65535).astype(np.uint16)
    path = tmp_path / "x_red.png"
    write_channel(path, plane)
    assert np.array_equal(decode_channel(path.read_bytes(), path.name), read_channel(path))
