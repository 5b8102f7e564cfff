"""Cell crops, their cache and the cell-level data mode (`data.level=cell`)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from hpa.data.cache import cache_dir
from hpa.data.cell_cache import build_cell_cache
from hpa.data.cells import CellDataset, crop_cells, fit_square
from hpa.data.datamodule import HPADataModule
from hpa.data.records import read_records, targets
from hpa.errors import InputError
from hpa.synthetic import SyntheticConfig, generate_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells_data")
    cfg = SyntheticConfig(n_images=10, seed=3, image_size=64, cells_per_image=(2, 4), workers=1)
    return generate_dataset(cfg, root, progress=False)


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 60 image: cell 1 a wide 10 x 30 bar lit in red only, cell 2 its neighbour lit in
    green only, background dim blue everywhere."""
    labels = np.zeros((40, 60), np.int32)
    labels[10:20, 10:40] = 1
    labels[10:30, 40:50] = 2
    image = np.zeros((40, 60, 4), np.uint8)
    image[..., 2] = 7
    image[labels == 1, 0] = 100
    image[labels == 2, 1] = 200
    return image, labels


def test_crops_mask_out_other_cells_and_keep_background():
    image, labels = two_cells()
    crops, ids = crop_cells(image, labels, size=32, margin=0.2)
    assert crops.shape == (2, 32, 32, 4) and crops.dtype == np.uint8
    assert ids.tolist() == [1, 2]
    first, second = crops
    # Each crop shows its own cell and background, never its neighbour (despite the margin).
    assert first[..., 0].max() == 100 and not first[..., 1].any() and first[..., 2].max() == 7
    assert second[..., 1].max() == 200 and not second[..., 0].any() and second[..., 2].max() == 7


def test_crops_keep_aspect_ratio_with_zero_padding():
    image, labels = two_cells()
    crops, _ = crop_cells(image, labels, size=60, margin=0.0)
    rows = np.flatnonzero(crops[0, :, :, 0].any(axis=1))
    cols = np.flatnonzero(crops[0, :, :, 0].any(axis=0))
    assert len(cols) == 60  # the longer side fills the crop
    assert 18 <= len(rows) <= 22  # 10 x 30 box -> 20 x 60, centred
    assert abs((rows[0] + rows[-1]) / 2 - 29.5) <= 1


def test_fit_square_grows_small_patches():
    patch = np.full((5, 10, 4), 9, np.uint8)
    out = fit_square(patch, 20)
    assert out.shape == (20, 20, 4)
    assert out[:, :, 0].any(axis=1).sum() == 10


def test_crops_of_an_image_without_cells_are_empty():
    crops, ids = crop_cells(np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16), np.int32), 8, 0.1)
    assert crops.shape == (0, 8, 8, 4) and len(ids) == 0


def true_cell_counts(root) -> dict[str, int]:
    counts = {}
    for path in (root / "masks").glob("*.png"):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        counts[path.stem] = len(np.setdiff1d(np.unique(mask), [0]))
    return counts


def test_cache_holds_one_crop_per_true_cell(synthetic):
    ids = read_records(synthetic / "train.csv")["ID"].tolist()
    cache = build_cell_cache(synthetic, ids, size=24, margin=0.05, progress=False)
    assert cache.folder == cache_dir(synthetic, "train", 24, kind="cells")
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["mask_source"] == "masks/" and manifest["size"] == 24
    counts = true_cell_counts(synthetic)
    for sid in ids:
        crops = cache.load(sid)
        assert crops.shape == (counts[sid], 24, 24, 4)


def test_cache_resumes_and_rebuilds_what_is_stale(synthetic):
    ids = read_records(synthetic / "train.csv")["ID"].tolist()
    cache = build_cell_cache(synthetic, ids, size=20, margin=0.05, progress=False)
    for path in cache.files.values():
        os.utime(path, (1, 1))
    cache.files[ids[0]].unlink()  # killed before this image was cropped
    cache = build_cell_cache(synthetic, ids, size=20, margin=0.05, progress=False)
    assert cache.files[ids[0]].exists()
    assert all(os.stat(cache.files[sid]).st_mtime == 1 for sid in ids[1:])  # the rest was kept

    mask = synthetic / "masks" / f"{ids[1]}.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))  # mask edited
    again = build_cell_cache(synthetic, ids, size=20, margin=0.05, progress=False)
    assert again.files[ids[1]] != cache.files[ids[1]] and not cache.files[ids[1]].exists()
    assert again.files[ids[2]] == cache.files[ids[2]]
    assert len(list(again.folder.glob("*.npy"))) == len(ids)

    other = build_cell_cache(synthetic, ids, size=20, margin=0.2, progress=False)  # other recipe
    assert all(os.stat(other.files[sid]).st_mtime != 1 for sid in ids)
    assert json.loads((other.folder / "manifest.json").read_text())["margin"] == 0.2


def test_cache_requires_masks_when_asked(tmp_path, synthetic):
    with pytest.raises(InputError, match="cell_masks"):
        build_cell_cache(tmp_path, ["x"], size=16, margin=0.0, masks="masks", progress=False)
    with pytest.raises(InputError, match="use one of"):
        build_cell_cache(synthetic, ["x"], size=16, margin=0.0, masks="maybe", progress=False)


def test_cache_segments_with_the_configured_segmenter(tmp_path, synthetic):
    from hpa.cli import compose
    from hpa.pipeline import segmenter_factory

    ids = read_records(synthetic / "train.csv")["ID"].tolist()[:2]
    with pytest.raises(InputError, match="no segmenter configured"):
        build_cell_cache(synthetic, ids, size=16, margin=0.05, masks="segmenter", progress=False)

    def crops(overrides, store):
        cfg = compose("train", overrides)
        make, key = segmenter_factory(OmegaConf.to_container(cfg.segmenter, resolve=True))
        cache = build_cell_cache(
            synthetic,
            ids,
            size=16,
            margin=0.05,
            masks="segmenter",
            progress=False,
            segmenter=make,
            segmenter_key=key,
            cache_root=store,
        )
        manifest = json.loads((cache.folder / "manifest.json").read_text())
        return sum(len(cache.load(sid)) for sid in ids), manifest["mask_source"]

    n_default, source = crops([], tmp_path / "a")
    assert n_default > 0 and source.startswith("segmenter:watershed-")
    # A setting of configs/segmenter/watershed.yaml reaches the crops (it was ignored before):
    # cells must be 1000x the median nucleus area, so none is kept.
    n_strict, strict_source = crops(["segmenter.min_cell=1000"], tmp_path / "b")
    assert n_strict == 0 and strict_source != source


def test_cell_dataset_gives_every_cell_its_image_labels(synthetic):
    records = read_records(synthetic / "train.csv")
    ids, y = records["ID"].tolist(), targets(records)
    cache = build_cell_cache(synthetic, ids, size=24, margin=0.05, progress=False)
    dataset = CellDataset(cache, ids, y)
    assert len(dataset) == sum(true_cell_counts(synthetic).values())
    for item, (image_index, cell) in enumerate(dataset.index):
        crop, target = dataset[item]
        assert crop.shape == (4, 24, 24) and str(crop.dtype) == "torch.uint8"
        assert np.array_equal(target.numpy(), y[image_index])
        assert np.array_equal(crop.numpy().transpose(1, 2, 0), cache.load(ids[image_index])[cell])
    capped = CellDataset(cache, ids, y, cells_per_image=2)
    assert len(capped) == sum(min(2, n) for n in true_cell_counts(synthetic).values())


def test_datamodule_cell_level_keeps_each_image_in_one_fold(synthetic):
    dm = HPADataModule(
        root=str(synthetic),
        image_size=24,
        batch_size=4,
        n_folds=2,
        level="cell",
        persistent_workers=False,
    )
    dm.prepare_data()
    dm.setup()
    train_images = {dm.train_set.ids[i] for i, _ in dm.train_set.index}
    val_images = {dm.val_set.ids[i] for i, _ in dm.val_set.index}
    assert train_images and val_images and not train_images & val_images
    assert len(dm.train_set) + len(dm.val_set) == sum(true_cell_counts(synthetic).values())
    crops, target = next(iter(dm.train_dataloader()))
    assert crops.shape[1:] == (4, 24, 24) and target.shape[1] == 19


def test_datamodule_rejects_unknown_level(synthetic):
    with pytest.raises(InputError, match="data.level"):
        HPADataModule(root=str(synthetic), image_size=24, batch_size=4, level="pixel")


def test_cell_crops_go_under_cache_dir_when_set(synthetic, tmp_path):
    ids = read_records(synthetic / "train.csv")["ID"].tolist()[:3]
    store = tmp_path / "cache"
    inside = cache_dir(synthetic, "train", 18, kind="cells")
    assert not inside.exists()  # (no other test crops at 18 px)
    cache = build_cell_cache(synthetic, ids, size=18, margin=0.05, progress=False, cache_root=store)
    assert cache.folder == cache_dir(synthetic, "train", 18, kind="cells", cache_root=store)
    assert cache.folder.is_relative_to(store) and len(list(cache.folder.glob("*.npy"))) == 3
    assert not inside.exists()
