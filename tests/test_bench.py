"""python -m hpa.bench loader: one JSON line comparing raw files and the cache, per worker count."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest

from hpa.bench import main
from hpa.data.cache import cache_dir
from hpa.data.dataset import channels_first
from hpa.data.images import CHANNELS, write_channel
from hpa.data.transforms import PerChannelBrightnessContrast, RandomRotate90, build_transform


@pytest.fixture
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    ids = [f"b{i}" for i in range(5)]
    for sid in ids:
        for channel in CHANNELS:
            plane = (rng.random((80, 80)) * 65535).astype(np.uint16)
            write_channel(tmp_path / "train" / f"{sid}_{channel}.png", plane)
    (tmp_path / "train.csv").write_text(
        "ID,Label\n" + "".join(f"{s},0|{i}\n" for i, s in enumerate(ids))
    )
    return tmp_path


def test_loader_prints_one_json_line_with_raw_and_cache_rates(data_root, capsys):
    main(
        ["loader", f"data.root={data_root}", "data.image_size=32", "bench.batch_size=2",
         "bench.raw_batches=1", "bench.cache_batches=2", "bench.workers=[0,1]",
         "bench.single_reps=20"]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    result = json.loads(out[0])
    assert result["raw_samples_per_s"] > 0 and result["cache_samples_per_s"] > 0
    ratio = result["cache_samples_per_s"] / result["raw_samples_per_s"]
    assert result["ratio"] == pytest.approx(ratio, abs=0.01)
    assert set(result["workers"]) == {"0", "1"}
    for rates in result["workers"].values():
        assert rates["raw_samples_per_s"] > 0 and rates["cache_samples_per_s"] > 0
    single = result["single_sample"]
    assert single["bytes"] == 32 * 32 * 4
    assert single["cache_load_ms"] > 0 and single["plain_read_ms"] > 0
    assert result["samples"] == 5 and result["image_size"] == 32
    assert result["cache"] == str(cache_dir(data_root, "train", 32))  # built on the way


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["speed", "data.root=x"])
    assert exit_info.value.code == 2
    assert "usage: python -m hpa.bench loader" in capsys.readouterr().err


def test_channel_brightness_contrast_table_matches_per_pixel_arithmetic():
    """The look-up-table version (a loader speed-up) gives exactly the per-pixel result."""
    rng = np.random.default_rng(0)
    transform = PerChannelBrightnessContrast(brightness=0.3, contrast=0.5, p=1.0)
    for shape in [(16, 16, 4), (9, 7, 3), (8, 8), (6, 5, 7)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        n = shape[2] if len(shape) == 3 else 1
        alpha, beta = 1 + rng.uniform(-0.5, 0.5, n), rng.uniform(-0.3, 0.3, n)
        expected = np.clip(image.astype(np.float32) * alpha + beta * 255.0, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(transform.apply(image, alpha, beta), expected)


def test_channels_first_matches_transpose_for_any_layout():
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    for view in (image, np.rot90(image), image[::2, ::-1], image[..., :1]):
        out = channels_first(view)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, view.transpose(2, 0, 1))


def test_random_rotate90_matches_albumentations():
    """The cv2.rotate version (a loader speed-up) gives albumentations' output and randomness."""
    rng = np.random.default_rng(0)
    ours, theirs = RandomRotate90(p=1.0), A.RandomRotate90(p=1.0)
    for shape in [(6, 9, 4), (6, 9, 1), (6, 9), (5, 5, 3), (6, 9, 7)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        for factor in range(4):
            np.testing.assert_array_equal(ours.apply(image, factor), theirs.apply(image, factor))
    built = build_transform([{"name": "RandomRotate90", "p": 0.5}])
    reference = A.Compose([A.RandomRotate90(p=0.5)])
    built.set_random_seed(3)
    reference.set_random_seed(3)
    image = rng.integers(0, 256, (16, 12, 4), dtype=np.uint8)
    for _ in range(20):
        np.testing.assert_array_equal(built(image=image)["image"], reference(image=image)["image"])
