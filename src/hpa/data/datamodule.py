"""The Lightning data module: records -> folds -> datasets -> loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from hpa.data.dataset import ImageDataset, RawImages, SampleSource
from hpa.data.folds import stratified_folds
from hpa.data.records import read_records, targets
from hpa.data.transforms import build_transform
from hpa.errors import InputError

log = logging.getLogger(__name__)


def open_source(root: Path, image_dir: str, size: int) -> SampleSource:
    """The fastest available source for this data set and size: a matching cache, else raw files."""
    folder = root / image_dir
    if not folder.is_dir():
        raise InputError(f"missing image folder {folder}; set data.root (and data.image_dir) to your data")
    return RawImages(folder, size)


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
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augment: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ):
        super().__init__()
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.fold, self.n_folds, self.fold_seed = fold, n_folds, fold_seed
        self.train_csv, self.image_dir = train_csv, image_dir
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment = augment or {}
        if not 0 <= fold < n_folds:
            raise InputError(f"data.fold={fold} is outside 0..{n_folds - 1} (data.n_folds={n_folds})")
        self.records = None

    def setup(self, stage: str | None = None) -> None:
        if self.records is not None:
            return
        records = read_records(self.root / self.train_csv)
        y = targets(records)
        records["fold"] = stratified_folds(y, self.n_folds, self.fold_seed)
        self.records = records
        source = open_source(self.root, self.image_dir, self.image_size)
        log.info("data: %s", source.description)
        train = np.flatnonzero(records["fold"].to_numpy() != self.fold)
        val = np.flatnonzero(records["fold"].to_numpy() == self.fold)
        ids = records["ID"].tolist()
        self.train_set = ImageDataset(
            [ids[i] for i in train], y[train], source, build_transform(self.augment.get("train"))
        )
        self.val_set = ImageDataset([ids[i] for i in val], y[val], source, build_transform(self.augment.get("val")))
        log.info("data: fold %d/%d, %d train / %d val samples", self.fold, self.n_folds, len(train), len(val))

    def _loader(self, dataset: ImageDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
