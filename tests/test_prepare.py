"""hpa.prepare and the cache it builds: resumable, idempotent, skips bad images, never stale."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpa.data.arraycache import DONE, ArrayCache
from hpa.data.cache import CachedImages, cache_dir, image_manifest, open_cache
from hpa.data.datamodule import HPADataModule, open_source
from hpa.data.dataset import ImageDataset, RawImages
from hpa.data.images import CHANNELS, read_sample, write_channel
from hpa.data.transforms import build_transform
from hpa.prepare import main, prepare_cache, read_report
from procs import child_env

FAULTBOOT = Path(__file__).with_name("faultboot.py")  # runs a command with a pause point

TRAIN_AUGMENT = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},
    {"name": "Affine", "scale": [0.9, 1.1], "rotate": [-20, 20], "p": 0.5},
    {"name": "PerChannelBrightnessContrast", "brightness": 0.1, "contrast": 0.15, "p": 0.5},
]


def make_set(root: Path, n: int, size: int, bit_depth: int = 16, seed: int = 0) -> list[str]:
    """train.csv + train/{ID}_{channel}.png of smooth noise; returns the IDs."""
    rng = np.random.default_rng(seed)
    ids = [f"s{seed}-{i:03d}" for i in range(n)]
    (root / "train").mkdir(parents=True, exist_ok=True)
    top = 65535 if bit_depth == 16 else 255
    for sid in ids:
        for channel in CHANNELS:
            plane = cv2.GaussianBlur(rng.random((size, size), np.float32), (0, 0), 1.5) * top
            write_channel(root / "train" / f"{sid}_{channel}.png", plane.astype(f"uint{bit_depth}"))
    labels = "\n".join(f"{sid},{i % 19}" for i, sid in enumerate(ids))
    (root / "train.csv").write_text(f"ID,Label\n{labels}\n")
    return ids


def cache_files(folder: Path) -> dict[str, bytes]:
    """Everything that defines a cache's content (the manifest minus when and where it was made)."""
    files = {name: (folder / name).read_bytes() for name in ("data.u8", "state.u8", "index.json")}
    manifest = (folder / "manifest.json").read_text().splitlines()
    files["manifest"] = "\n".join(x for x in manifest if '"created"' not in x).encode()
    return files


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("small")
    return root, make_set(root, n=6, size=96)


def test_prepare_caches_every_sample_as_read_sample_would(small_set, capsys):
    root, ids = small_set
    main([f"data.root={root}", "data.image_size=48", "prepare.workers=2"])
    assert "6 of 6 samples at 48 px" in capsys.readouterr().out
    cache = ArrayCache.open(cache_dir(root, "train", 48), image_manifest("train", 48))
    assert sorted(cache.rows) == sorted(ids)
    for sid in ids:
        assert cache.state[cache.rows[sid]] == DONE
        np.testing.assert_array_equal(
            cache.read(cache.rows[sid]), read_sample(root / "train", sid, 48)
        )
    assert read_report(cache.report_path) == {}


def test_second_prepare_is_a_no_op(small_set, capsys):
    root, _ = small_set
    prepare_cache(root, "train", 40)
    data = cache_dir(root, "train", 40) / "data.u8"
    before = data.stat().st_mtime_ns
    main([f"data.root={root}", "data.image_size=40"])
    assert "up to date" in capsys.readouterr().out
    assert data.stat().st_mtime_ns == before


def test_new_and_changed_samples_are_prepared_on_rerun(tmp_path):
    ids = make_set(tmp_path, n=3, size=64)
    prepare_cache(tmp_path, "train", 32, workers=1)
    extra = make_set(tmp_path / "extra", n=1, size=64, seed=1)[0]
    for channel in CHANNELS:
        shutil.copy(tmp_path / "extra" / "train" / f"{extra}_{channel}.png", tmp_path / "train")
    red = tmp_path / "train" / f"{ids[0]}_red.png"
    write_channel(red, np.full((64, 64), 40000, np.uint16))
    result = prepare_cache(tmp_path, "train", 32, workers=1)
    assert (result.diff.new, result.diff.changed, result.prepared) == ([extra], [ids[0]], 2)
    source = open_source(tmp_path, "train", 32)
    assert isinstance(source, CachedImages)
    for sid in [*ids, extra]:
        np.testing.assert_array_equal(source.load(sid), read_sample(tmp_path / "train", sid, 32))


def test_bad_images_are_reported_and_the_rest_prepared(tmp_path, capsys):
    ids = make_set(tmp_path, n=4, size=64)
    corrupt = tmp_path / "train" / f"{ids[1]}_green.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (tmp_path / "train" / f"{ids[2]}_yellow.png").unlink()
    main([f"data.root={tmp_path}", "data.image_size=32", "prepare.workers=2"])  # no SystemExit
    captured = capsys.readouterr()
    assert "skipped 2 bad samples" in captured.out
    assert ids[1] in captured.err and ids[2] in captured.err  # listed as they happen, too
    folder = cache_dir(tmp_path, "train", 32)
    report = read_report(folder / "report.csv")
    assert sorted(report) == [ids[1], ids[2]]
    assert report[ids[1]]["file"] == corrupt.name and "cannot decode" in report[ids[1]]["reason"]
    assert (
        report[ids[2]]["file"] == f"{ids[2]}_yellow.png" and "missing" in report[ids[2]]["reason"]
    )
    cache = ArrayCache.open(folder, image_manifest("train", 32))
    assert [cache.state[cache.rows[i]] == DONE for i in ids] == [True, False, False, True]
    # Fixing the file is noticed; the sample still missing a channel stays in the report.
    write_channel(corrupt, np.zeros((64, 64), np.uint16))
    result = prepare_cache(tmp_path, "train", 32)
    assert result.prepared == 1 and sorted(result.bad) == [ids[2]]
    assert sorted(read_report(folder / "report.csv")) == [ids[2]]


def test_nothing_preparable_exits_2(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a_red.png").write_bytes(b"junk")
    with pytest.raises(SystemExit) as exit_info:
        main([f"data.root={tmp_path}", "data.image_size=32", "prepare.workers=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "none of the 1 samples" in err and "Traceback" not in err


def test_missing_folder_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([f"data.root={tmp_path}", "data.image_size=32"])
    assert exit_info.value.code == 2
    assert "missing image folder" in capsys.readouterr().err


def test_datamodule_uses_a_matching_cache_else_raw_and_says_why(small_set, tmp_path, caplog):
    root, ids = small_set
    prepare_cache(root, "train", 40)
    caplog.set_level(logging.INFO)
    dm = HPADataModule(str(root), image_size=40, batch_size=2, n_folds=2)
    dm.setup()
    assert isinstance(dm.train_set.source, CachedImages)
    assert "data: cache" in caplog.text
    caplog.clear()
    assert isinstance(open_source(root, "train", 24), RawImages)  # no cache at this size
    assert "no cache" in caplog.text and "hpa.prepare" in caplog.text
    # A stale cache: one source file changed after prepare.
    stale = tmp_path / "stale"
    shutil.copytree(root, stale)  # keeps mtimes: the copy's cache still matches
    assert isinstance(open_source(stale, "train", 40), CachedImages)
    red = stale / "train" / f"{ids[0]}_red.png"
    times = (red.stat().st_atime_ns, red.stat().st_mtime_ns)
    os.utime(red, ns=(times[0], times[1] + 10**9))
    caplog.clear()
    assert isinstance(open_source(stale, "train", 40), RawImages)
    assert "stale" in caplog.text and ids[0] in caplog.text
    # A cache made by another format version.
    os.utime(red, ns=times)
    manifest = cache_dir(stale, "train", 40) / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"version": 0}))
    caplog.clear()
    assert isinstance(open_source(stale, "train", 40), RawImages)
    assert "version=0" in caplog.text and caplog.records[-1].levelno == logging.WARNING


def test_cache_and_raw_give_the_same_batch_for_the_same_seed(small_set):
    root, ids = small_set
    prepare_cache(root, "train", 40)
    raw = RawImages(root / "train", 40)
    cached = open_cache(root, "train", 40, fallback=raw)
    batches = []
    for source in (raw, cached):
        transform = build_transform(TRAIN_AUGMENT)
        transform.set_random_seed(7)
        torch.manual_seed(7)
        dataset = ImageDataset(ids, np.zeros((len(ids), 19), np.float32), source, transform)
        batches.append(next(iter(DataLoader(dataset, batch_size=len(ids), shuffle=True)))[0])
    # Same pixels in, same pixels out: the cache holds exactly what read_sample returns.
    assert torch.equal(batches[0], batches[1])


def test_sigkill_then_rerun_gives_the_uninterrupted_cache(tmp_path):
    make_set(tmp_path, n=40, size=384, seed=3)
    args = ["hpa.prepare", f"data.root={tmp_path}", "data.image_size=64"]
    env = child_env(threads=None)
    folder = cache_dir(tmp_path, "train", 64)
    subprocess.run([sys.executable, "-m", *args], check=True, env=env, capture_output=True)
    reference = cache_files(folder)
    shutil.rmtree(folder)

    # The one worker stops after writing the last sample's pixels, before handing it back: the
    # run cannot finish, however fast or slow the machine, while finished rows get marked.
    pause = ["hpa.data.arraycache:write_row@40", str(tmp_path / "paused"), "--"]
    proc = subprocess.Popen([sys.executable, str(FAULTBOOT), *pause, *args, "prepare.workers=1"],
                            env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    done = 0
    while proc.poll() is None and done == 0:  # rows are marked done every 0.1 s
        time.sleep(0.005)
        state = folder / "state.u8"
        done = state.read_bytes().count(DONE) if state.exists() else 0
    os.killpg(proc.pid, signal.SIGKILL)  # the workers too, as a kill of the job would
    proc.wait()
    assert 0 < done < 40, f"prepare ended (exit {proc.returncode}) before it was killed"
    # Whatever the kill left, every row marked done holds the whole sample.
    cache = ArrayCache.open(folder, image_manifest("train", 64))
    for sid, row in cache.rows.items():
        if cache.state[row] == DONE:
            np.testing.assert_array_equal(cache.read(row), read_sample(tmp_path / "train", sid, 64))
    subprocess.run([sys.executable, "-m", *args], check=True, env=env, capture_output=True)
    assert cache_files(folder) == reference


def test_real_images(real_fixtures, tmp_path):
    shutil.copytree(real_fixtures / "train", tmp_path / "train")
    ids = sorted({p.name.rsplit("_", 1)[0] for p in (tmp_path / "train").glob("*.png")})
    result = prepare_cache(tmp_path, "train", 256, workers=2)
    assert result.cached == len(ids) == 2
    source = open_source(tmp_path, "train", 256)
    for sid in ids:
        np.testing.assert_array_equal(source.load(sid), read_sample(tmp_path / "train", sid, 256))


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_cache_dir_keeps_a_read_only_root_untouched(tmp_path, capsys, caplog):
    # Kaggle's /kaggle/input is read-only; root here is writable, so "untouched" is checked.
    root = tmp_path / "input" / "hpa"
    ids = make_set(root, n=4, size=64)
    before = tree(root)
    store = tmp_path / "working" / "cache"
    main([f"data.root={root}", "data.image_size=32", f"data.cache_dir={store}"])
    assert "4 of 4 samples at 32 px" in capsys.readouterr().out
    assert tree(root) == before  # nothing written inside the data root
    folder = cache_dir(root, "train", 32, cache_root=store)
    assert folder.parent.parent == store and folder.parent.name.startswith("hpa-")
    assert (folder / "data.u8").is_file() and not cache_dir(root, "train", 32).exists()

    caplog.set_level(logging.INFO)
    dm = HPADataModule(str(root), image_size=32, batch_size=2, n_folds=2, cache_dir=str(store))
    dm.setup()
    assert isinstance(dm.train_set.source, CachedImages)
    assert str(folder) in caplog.text
    # Without data.cache_dir the same root has no cache, and the hint names the option back.
    caplog.clear()
    assert isinstance(open_source(root, "train", 32), RawImages)
    caplog.clear()
    assert isinstance(open_source(root, "train", 16, cache_root=str(store)), RawImages)
    assert f"data.cache_dir={store}" in caplog.text
    assert sorted(ArrayCache.open(folder, image_manifest("train", 32)).rows) == sorted(ids)


def test_two_roots_with_one_name_share_a_cache_dir_without_colliding(tmp_path):
    store = tmp_path / "cache"
    a, b = tmp_path / "a" / "hpa", tmp_path / "b" / "hpa"
    make_set(a, n=2, size=48, seed=1)
    make_set(b, n=3, size=48, seed=2)
    prepare_cache(a, "train", 24, workers=1, cache_root=store)
    prepare_cache(b, "train", 24, workers=1, cache_root=store)
    ca, cb = (cache_dir(r, "train", 24, cache_root=store) for r in (a, b))
    assert ca != cb
    assert isinstance(open_cache(a, "train", 24, RawImages(a / "train", 24), store), CachedImages)
    assert isinstance(open_cache(b, "train", 24, RawImages(b / "train", 24), store), CachedImages)


def test_unwritable_cache_location_exits_2_naming_the_option(tmp_path, capsys):
    root = tmp_path / "data"
    make_set(root, n=1, size=32)
    (root / ".hpa_cache").write_text(
        ""
    )  # a file where the cache folder must go (fails as root too)
    with pytest.raises(SystemExit) as done:
        main([f"data.root={root}", "data.image_size=16"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write the cache" in err and "data.cache_dir=" in err
