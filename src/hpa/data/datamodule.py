"""The Lightning data module: records -> folds -> datasets -> loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from hpa.data.arraycache import DONE
from hpa.data.bags import BagDataset
from hpa.data.cache import CachedImages, keep_freed_memory, open_cache, open_cache_only
from hpa.data.cell_cache import build_cell_cache
from hpa.data.cells import CellDataset, read_cell_targets
from hpa.data.dataset import ImageDataset, RawImages, SampleSource, negative_augment
from hpa.data.folds import grouped_stratified_folds, stratified_folds
from hpa.data.records import read_records, targets
from hpa.data.sampler import ClassBalancedSampler
from hpa.data.transforms import build_transform
from hpa.errors import InputError

log = logging.getLogger(__name__)


def open_source(
    root: Path, image_dir: str, size: int, cache_root: str | None = None
) -> SampleSource:
    """The fastest available source for this data set and size: a matching cache, else raw files."""
    folder = root / image_dir
    if not folder.is_dir():  # a root from `hpa.kaggle data`: its caches, or one line
        return open_cache_only(root, image_dir, size, cache_root)
    raw = RawImages(folder, size)
    # A cache is used only if it matches the files on disk; open_cache logs why it is not.
    return open_cache(root, image_dir, size, fallback=raw, cache_root=cache_root) or raw


def cached_records(records: pd.DataFrame, source: CachedImages) -> pd.DataFrame:
    """The rows of a cache-only root's CSV that its cache holds; the rest skipped, logged."""
    cache = source.cache
    done = [sid in cache.rows and cache.state[cache.rows[sid]] == DONE for sid in records["ID"]]
    kept = records[done].reset_index(drop=True)
    if len(kept) < len(records):
        skipped = records["ID"][[not d for d in done]].tolist()
        log.warning(
            "data: skipping %d samples the cache does not hold (bad in the archive, see %s): %s",
            len(skipped),
            cache.report_path,
            ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
        )
    return kept


def init_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process, which saves a checkpoint and stops
    them itself (a signal to the whole process group used to kill them mid-batch, and the main
    process died with a worker traceback); they die with it if it is killed outright."""
    from lightning_fabric.utilities.seed import pl_worker_init_function

    from hpa.signals import die_with_parent

    die_with_parent()
    pl_worker_init_function(worker_id)  # what seed_everything(workers=True) would have set


class HPADataModule(pl.LightningDataModule):
    def __init__(
        self,
        root: str,
        image_size: int,
        batch_size: int,
        fold: int = 0,
        n_folds: int = 5,
        fold_seed: int = 42,
        train_csv: str = "train.csv",
        image_dir: str = "train",
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        augment: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        level: str = "image",
        cell_margin: float = 0.05,
        cell_masks: str = "auto",
        cells_per_image: int | None = None,
        group_column: str | None = None,
        cache_dir: str | None = None,
        check_images: bool = True,
        segmenter: Callable[[], Any] | None = None,
        segmenter_key: str = "",
        sampler: str | None = None,
        sampler_cap: float | None = 10,
        negative_aug: Mapping[str, float] | None = None,
        cell_targets: str | None = None,
    ):
        super().__init__()
        # One place for defaults, the YAML: None takes data/default.yaml's augment, negative_aug.
        if augment is None or negative_aug is None:
            from hpa.build import option

            base = option("data", "default")
            augment = base["augment"] if augment is None else augment
            negative_aug = base["negative_aug"] if negative_aug is None else negative_aug
        # Rare classes and self-training (training set only; validation stays as labelled).
        if sampler not in (None, "balanced"):
            raise InputError(f"data.sampler={sampler!r}: use null or balanced")
        self.sampler, self.sampler_cap = sampler, sampler_cap
        self.negative_aug = negative_augment(negative_aug)
        if cell_targets and level != "cell":
            raise InputError("data.cell_targets needs cell-level data: add data=cells")
        self.cell_targets = cell_targets
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.fold, self.n_folds, self.fold_seed = fold, n_folds, fold_seed
        self.train_csv, self.image_dir = train_csv, image_dir
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment = augment
        # Folds keep a group's rows together when the table has this column (data/merged.yaml).
        self.group_column = group_column
        # level=cell: samples are cell crops of image_size px, each with its image's labels.
        # level=bag: samples are bags of an image's cell crops (hpa.data.bags, model=mil).
        if level not in ("image", "cell", "bag"):
            raise InputError(f"data.level={level!r}: use image, cell or bag")
        if level == "bag" and not cells_per_image:
            raise InputError("data.cells_per_image=null: data=bags needs a bag size, e.g. 16")
        if level == "bag" and negative_aug and negative_aug.get("p"):
            raise InputError("data.negative_aug is not for data=bags; set data.negative_aug.p=0")
        self.level, self.cell_margin, self.cell_masks = level, cell_margin, cell_masks
        self.cells_per_image = cells_per_image
        # level=cell without masks: makes the configured segmenter (hpa.pipeline composes it).
        self.segmenter, self.segmenter_key = segmenter, segmenter_key
        if not 0 <= fold < n_folds:
            raise InputError(
                f"data.fold={fold} is outside 0..{n_folds - 1} (data.n_folds={n_folds})"
            )
        # Where prepared caches live: None = inside root (data.cache_dir).
        self.cache_dir = cache_dir
        # Headers of every raw image checked before the first epoch (data.check_images).
        self.check_images = check_images
        self._checked = False
        self.records = None

    def _check_raw_images(self, ids: list[str]) -> None:
        """A bad file stops the run here, named, before any worker or epoch starts."""
        if not self.check_images or self._checked:
            return
        from hpa.data.check import check_images

        check_images(
            self.root,
            self.image_dir,
            ids,
            workers=max(4, self.num_workers),
            cache_root=self.cache_dir,
        )
        self._checked = True

    def prepare_data(self) -> None:
        if self.level in ("cell", "bag"):  # crop once, on one process per node
            ids = read_records(self.root / self.train_csv)["ID"].tolist()
            if (self.root / self.image_dir).is_dir():
                self._check_raw_images(ids)
            self._cell_cache(ids)

    def _cell_cache(self, ids: list[str]):
        folder = self.root / self.image_dir
        if not folder.is_dir():  # a cache-only root (hpa.kaggle data): whole images, no crops
            raise InputError(
                f"data.level={self.level} crops cells from the raw images, and {folder} is "
                f"missing; get them with `python -m hpa.kaggle data --out {self.root} "
                "--keep-images`, or train whole images (data=default)"
            )
        return build_cell_cache(
            self.root,
            ids,
            self.image_size,
            self.cell_margin,
            image_dir=self.image_dir,
            masks=self.cell_masks,
            workers=self.num_workers,
            cache_root=self.cache_dir,
            segmenter=self.segmenter,
            segmenter_key=self.segmenter_key,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.records is not None:
            return
        records = read_records(self.root / self.train_csv)
        raw_there = (self.root / self.image_dir).is_dir()
        if not raw_there and self.level != "image":
            self._cell_cache([])  # says what a cache-only root cannot do, in one line
        source = open_source(self.root, self.image_dir, self.image_size, self.cache_dir)
        if not raw_there:  # nothing to decode a sample from: train on what the cache holds
            records = cached_records(records, source)
        y = targets(records)
        if self.group_column and self.group_column in records.columns:
            groups = records[self.group_column]
            records["fold"] = grouped_stratified_folds(y, groups, self.n_folds, self.fold_seed)
        else:
            if self.group_column:
                log.info(
                    "data: %s has no column %r; folds by sample", self.train_csv, self.group_column
                )
            records["fold"] = stratified_folds(y, self.n_folds, self.fold_seed)
        self.records = records
        log.info("data: %s", source.description)
        if isinstance(source, CachedImages):
            # A process-wide malloc setting, made here in plain sight: ~1.3x cached samples/s
            # (see keep_freed_memory); forked DataLoader workers inherit it.
            keep_freed_memory()
        if isinstance(source, RawImages) or (self.level != "image" and raw_there):
            self._check_raw_images(records["ID"].tolist())
        train = np.flatnonzero(records["fold"].to_numpy() != self.fold)
        val = np.flatnonzero(records["fold"].to_numpy() == self.fold)
        ids = records["ID"].tolist()
        train_tf = build_transform(self.augment.get("train"))
        val_tf = build_transform(self.augment.get("val"))
        if self.level == "bag":
            cache, size, seed = self._cell_cache(ids), self.cells_per_image, self.fold_seed
            self.train_set = BagDataset(cache, [ids[i] for i in train], y[train], size, train_tf)
            self.val_set = BagDataset(
                cache, [ids[i] for i in val], y[val], size, val_tf, train=False, seed=seed
            )
        elif self.level == "cell":
            # Folds stay per image: all cells of an image land in the same fold.
            cache = self._cell_cache(ids)
            train_ids, val_ids = [ids[i] for i in train], [ids[i] for i in val]
            cap, seed = self.cells_per_image, self.fold_seed
            own = read_cell_targets(self.cell_targets) if self.cell_targets else None
            self.train_set = CellDataset(
                cache, train_ids, y[train], train_tf, cap, seed, own, self.negative_aug
            )
            if own is not None:
                log.info(
                    "data: %d of %d train cells take their targets from %s",
                    self.train_set.replaced,
                    len(self.train_set),
                    self.cell_targets,
                )
            self.val_set = CellDataset(cache, val_ids, y[val], val_tf)
            n_train, n_val = len(self.train_set), len(self.val_set)
            log.info("data: %d train / %d val cell crops in %s", n_train, n_val, cache.folder)
        else:
            self.train_set = ImageDataset(
                [ids[i] for i in train], y[train], source, train_tf, self.negative_aug
            )
            self.val_set = ImageDataset([ids[i] for i in val], y[val], source, val_tf)
        log.info(
            "data: fold %d/%d, %d train / %d val samples",
            self.fold,
            self.n_folds,
            len(train),
            len(val),
        )

    def class_frequencies(self) -> np.ndarray:
        """Mean training target per class (the share of samples with it), e.g. for pos_weight."""
        return self.train_set.item_targets().mean(axis=0)

    def _train_sampler(self) -> ClassBalancedSampler | None:
        """data.sampler=balanced: one draw per epoch shared by all DDP ranks, each its share."""
        if self.sampler is None:
            return None
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        labels = self.train_set.item_targets()
        return ClassBalancedSampler(
            self.train_set, labels, self.sampler_cap, world, rank, seed=self.fold_seed
        )

    def _loader(self, dataset: ImageDataset, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            worker_init_fn=init_worker if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, sampler=self._train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
