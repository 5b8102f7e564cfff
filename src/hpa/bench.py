"""python -m hpa.bench loader data.root=DIR data.image_size=PX: is the data loader fast enough?

Through the real DataLoader, ImageDataset and train augmentations, on the same sample IDs, it
measures samples/s from raw image files and from the prepared cache (hpa.prepare) with each
`bench.workers` setting, then times one cached sample against a plain read of the same bytes.
Progress goes to stderr; stdout gets exactly one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from hpa.cli import compose, print_help, setup_logging, wants_help
from hpa.data.arraycache import DONE
from hpa.data.cache import CachedImages, keep_freed_memory, open_cache, open_cache_only
from hpa.data.dataset import ImageDataset, RawImages, SampleSource
from hpa.data.images import CHANNELS, channel_path
from hpa.data.records import read_records
from hpa.data.transforms import build_transform
from hpa.errors import InputError, exit_on_input_error
from hpa.labels import NUM_CLASSES
from hpa.prepare import prepare_cache
from hpa.threads import configure_threads

COMMANDS = ("loader",)


def bench_loader(cfg: DictConfig) -> dict[str, Any]:
    """Raw vs cache samples/s per worker count, and single-sample load vs plain read."""
    # paths.output_dir interpolates Hydra's run dir, which a composed config lacks: resolve data only.
    data = OmegaConf.to_container(cfg.data, resolve=True)
    opts = OmegaConf.to_container(cfg.bench, resolve=True)
    root, image_dir, size = Path(data["root"]), data["image_dir"], data["image_size"]
    batch_size = opts["batch_size"] or data["batch_size"]
    # Threads that do not fight the DataLoader workers: the free cores left by the most workers
    # measured (1 on a 2-core box), or threads=N.
    configure_threads(cfg.get("threads"), workers=max(opts["workers"], default=0))
    cache_root = data.get("cache_dir")
    if opts["prepare"] and (root / image_dir).is_dir():  # a cache-only root has nothing to add
        prepare_cache(root, image_dir, size, cache_root=cache_root)
    raw: RawImages | None = None
    if (root / image_dir).is_dir():
        raw = RawImages(root / image_dir, size)
        cached = open_cache(root, image_dir, size, fallback=raw, cache_root=cache_root)
    else:  # a root from `hpa.kaggle data`: the cache is all there is to time
        cached = open_cache_only(root, image_dir, size, cache_root)
        _progress(f"raw: not measured, {root / image_dir} is missing (a cache-only data root)")
    if cached is None:
        raise InputError(f"no usable cache for {root / image_dir} at {size} px; run hpa.prepare")
    keep_freed_memory()  # as training does with a cache (hpa.data.datamodule)
    ids = _cached_ids(root / data["train_csv"], cached, opts["max_samples"])
    transform = build_transform(data["augment"]["train"])
    _warm_page_cache(raw, cached, ids)

    per_workers = {}
    for workers in opts["workers"]:
        raw_rate = None
        if raw is not None:
            raw_rate = throughput(raw, ids, transform, workers, batch_size, opts["raw_batches"])
            _progress(f"raw   {workers} workers: {raw_rate:9.1f} samples/s")
        cache_rate = throughput(cached, ids, transform, workers, batch_size, opts["cache_batches"])
        _progress(f"cache {workers} workers: {cache_rate:9.1f} samples/s")
        per_workers[str(workers)] = {
            "raw_samples_per_s": _rounded(raw_rate),
            "cache_samples_per_s": round(cache_rate, 2),
            "ratio": _rounded(raw_rate and cache_rate / raw_rate),
        }
    best_raw = _rounded(raw and max(v["raw_samples_per_s"] for v in per_workers.values()))
    best_cache = max(v["cache_samples_per_s"] for v in per_workers.values())
    single = single_sample(cached, ids, opts["single_reps"])
    _progress(
        f"one sample: cache {single['cache_load_ms']} ms, plain read {single['plain_read_ms']} ms"
    )
    return {
        "bench": "loader",
        "data_root": str(root),
        "image_dir": image_dir,
        "image_size": size,
        "samples": len(ids),
        "batch_size": batch_size,
        "augment": "train",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cache": str(cached.cache.folder),
        # Best over the worker settings for each; per-setting numbers are under "workers".
        "raw_samples_per_s": best_raw,
        "cache_samples_per_s": best_cache,
        "ratio": _rounded(best_raw and best_cache / best_raw),  # null: no raw images
        "workers": per_workers,
        "single_sample": single,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _cached_ids(csv_path: Path, cached: CachedImages, limit: int) -> list[str]:
    """Up to `limit` train.csv IDs the cache holds, in a fixed shuffled order."""
    cache = cached.cache
    rows = cache.rows
    ids = [i for i in read_records(csv_path)["ID"] if i in rows and cache.state[rows[i]] == DONE]
    if not ids:
        raise InputError(f"no sample of {csv_path} is in the cache {cache.folder}; run hpa.prepare")
    return np.random.default_rng(0).permutation(ids)[:limit].tolist()


def throughput(
    source: SampleSource, ids: list[str], transform, workers: int, batch_size: int, batches: int
) -> float:
    """Steady-state samples/s of a DataLoader over `ids` (cycled), worker start-up excluded."""
    # The first batch of every worker is untimed (start-up); timing whole rounds of `workers`
    # batches keeps the batches already prefetched during warm-up from inflating the rate.
    warmup = max(1, workers)
    timed = -(-batches // warmup) * warmup
    n = (warmup + timed) * batch_size
    order = np.resize(np.random.default_rng(0).permutation(ids), n).tolist()
    dataset = ImageDataset(order, np.zeros((n, NUM_CLASSES), np.float32), source, transform)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, drop_last=True)
    start, count = 0.0, 0
    for seen, (images, _) in enumerate(loader, start=1):
        if seen == warmup:
            start = time.perf_counter()
        elif seen > warmup:
            count += len(images)
    return count / (time.perf_counter() - start)


def single_sample(cached: CachedImages, ids: list[str], reps: int) -> dict[str, Any]:
    """Median time of `cached.load(id)` vs opening the cache file and reading that row's bytes."""
    cache = cached.cache
    picks = np.random.default_rng(1).choice(ids, reps).tolist()
    load_s, read_s = [], []
    for sid in picks:
        offset = cache.rows[sid] * cache.row_bytes
        t0 = time.perf_counter()
        cached.load(sid)
        t1 = time.perf_counter()
        with open(cache.data_path, "rb") as f:
            f.seek(offset)
            f.read(cache.row_bytes)
        t2 = time.perf_counter()
        load_s.append(t1 - t0)
        read_s.append(t2 - t1)
    load, read = statistics.median(load_s), statistics.median(read_s)
    return {
        "bytes": cache.row_bytes,
        "cache_load_ms": round(load * 1e3, 4),
        "plain_read_ms": round(read * 1e3, 4),
        "load_vs_read": round(load / read, 2),
    }


def _warm_page_cache(raw: RawImages | None, cached: CachedImages, ids: list[str]) -> None:
    """Read every file once so that raw and cache are both timed from the page cache."""
    for sid in ids:
        for channel in CHANNELS if raw is not None else ():
            channel_path(raw.image_dir, sid, channel).read_bytes()
        cached.load(sid)


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv[:1]):
        print_help("bench", f"usage: python -m hpa.bench {'|'.join(COMMANDS)} [key=value ...]")
        return
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}" if argv else "no command"
        raise InputError(
            f"{got}; usage: python -m hpa.bench {'|'.join(COMMANDS)} data.root=DIR data.image_size=PX"
        )
    setup_logging()
    cfg = compose("bench", argv[1:])
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line and nothing else
        result = bench_loader(cfg)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
