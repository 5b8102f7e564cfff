"""`convert2018`: the 2018 competition set (`Id,Target`, 28 classes) -> a 19-class data root."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.data.images import CHANNELS, channel_path
from hpa.errors import InputError
from hpa.external.labels import LabelMapper, translate_2018
from hpa.external.store import StoreOptions, decode_resized, has_format, link_into_place
from hpa.fsio import write_bytes
from hpa.inputs import read_table


@dataclass
class ConvertReport:
    rows: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> samples
    dropped_labels: Counter[str] = field(
        default_factory=Counter
    )  # 2018 class -> samples that lost it
    failed: dict[str, str] = field(default_factory=dict)  # sample ID -> why its images are unusable
    linked: int = 0  # channel files taken over as they were (hard link or copy)
    converted: int = 0


def read_2018_table(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise InputError(f"missing {csv}; pass csv= the 2018 train.csv (columns Id,Target)")
    frame = read_table(csv, str(csv), "columns Id,Target", id_column="Id", dtype=str)
    if not {"Id", "Target"} <= set(frame.columns):
        raise InputError(f"{csv} has columns {list(frame.columns)}; the 2018 layout is Id,Target")
    return frame


def take_over(src: Path, dest: Path) -> None:
    """Hard link (no extra disk), or copy across file systems; atomic either way."""
    link_into_place(src, dest)


def convert_sample(
    sample_id: str, images: Path, image_dir: Path, store: StoreOptions
) -> tuple[int, int]:
    """Store the four channels of one sample; returns (files linked, files converted).

    A sample with a missing or corrupt channel leaves nothing behind: hpa.prepare reads every
    file in the folder, and three channels of four are a bad sample there.
    """
    linked = converted = 0
    dests = [image_dir / f"{sample_id}_{channel}{store.suffix}" for channel in CHANNELS]
    try:
        sources = [channel_path(images, sample_id, channel) for channel in CHANNELS]
        for src, dest in zip(sources, dests, strict=True):
            if dest.exists():
                continue
            if _storable_as_is(src, store):
                take_over(src, dest)
                linked += 1
            else:
                plane, _ = decode_resized(src, store)
                write_bytes(dest, store.encode(plane))
                converted += 1
    except InputError:
        for dest in dests:
            dest.unlink(missing_ok=True)
        raise
    return linked, converted


def _storable_as_is(src: Path, store: StoreOptions) -> bool:
    """8-bit grayscale, already at the wanted size and format (the Kaggle 2018 PNGs at 512 px)."""
    image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)  # decoded even when linked: a check
    if image is None or image.size == 0:
        raise InputError(
            f"cannot decode {src}: the file is corrupt or not an image; re-download it"
        )
    size_ok = store.size is None or image.shape[:2] == (store.size, store.size)
    return image.ndim == 2 and image.dtype == np.uint8 and size_ok and has_format(src, store.format)


def convert_2018(
    csv: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    store: StoreOptions,
    unmapped_labels: str,
    workers: int,
    progress: bool = True,
) -> ConvertReport:
    """Map labels to the 19 classes, store the images, write OUT/train.csv; resumable."""
    csv, images, out = Path(csv), Path(images), Path(out)
    if not images.is_dir():
        raise InputError(f"missing image folder {images}; pass images= the 2018 train/ folder")
    frame = read_2018_table(csv)
    mapper = LabelMapper(translate_2018, unmapped_labels)
    report = ConvertReport(rows=len(frame))
    rows = []
    for i, (sid, target) in enumerate(zip(frame["Id"], frame["Target"], strict=True)):
        try:
            label = mapper(target)
        except InputError as err:
            raise InputError(f"{csv} row {i + 2} (Id {sid}): {err}") from None
        if label is not None:
            rows.append((sid, label))
    report.dropped.update(mapper.dropped_samples)
    report.dropped_labels.update(mapper.dropped_labels)
    image_dir = out / "train"
    image_dir.mkdir(parents=True, exist_ok=True)
    kept = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [
            (sid, label, pool.submit(convert_sample, sid, images, image_dir, store))
            for sid, label in rows
        ]
        for sid, label, future in tqdm(
            futures, desc="convert2018", unit="sample", disable=not progress
        ):
            try:
                linked, converted = future.result()
            except InputError as err:
                report.failed[sid] = str(err)
                continue
            report.linked += linked
            report.converted += converted
            kept.append((sid, label))
    report.kept = len(kept)
    write_bytes(
        out / "train.csv", pd.DataFrame(kept, columns=["ID", "Label"]).to_csv(index=False).encode()
    )
    return report
