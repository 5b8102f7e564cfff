"""python -m hpa.prepare data.root=DIR data.image_size=PX: decode every sample once, into the cache.

Reads every `{ID}_{red,green,blue,yellow}.{png,tif,tiff,jpg,jpeg}` in DIR/<data.image_dir> (the
competition's train or test folder, or public HPA images named the same way; 8- or 16-bit),
resizes each sample to data.image_size px with area interpolation and writes the rows of
DIR/.hpa_cache/<image_dir>_<size>/ (format: hpa.data.cache; under data.cache_dir=FOLDER instead
when DIR is read-only), on all cores. Training then reads the cache instead of decoding PNGs.
Killed at any moment, a re-run finishes only what is missing; on a prepared set it is a no-op.
Bad samples are skipped and listed in report.csv next to the cache.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
from tqdm import tqdm

from hpa import __version__
from hpa.cli import compose, setup_logging
from hpa.data.arraycache import BAD, DONE, TODO, ArrayCache, CacheError, Diff, write_row
from hpa.data.cache import archive_hint, cache_dir, cached_sizes, image_manifest, scan_sources
from hpa.data.images import CHANNELS, channel_path, read_channel, read_sample
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import atomic_path, disk_full_as_error, size_text
from hpa.signals import die_with_parent, graceful_sigterm
from hpa.threads import available_cpus, configure_threads

log = logging.getLogger(__name__)

FLUSH_S = 0.1  # finished rows are marked at most this often: each marking costs one fdatasync
REPORT_FIELDS = ("ID", "file", "reason")
RESUME_HINT = "finished samples are kept; run the same command to go on"


@dataclass
class PrepareResult:
    folder: Path
    size: int
    total: int  # samples found in the image folder
    cached: int  # samples the cache holds
    prepared: int  # rows written by this run
    seconds: float
    diff: Diff
    bad: dict[str, dict[str, str]] = field(default_factory=dict)  # ID -> report row

    def summary(self) -> str:
        head = (
            f"prepared {self.prepared} samples in {self.seconds:.1f} s; "
            if self.prepared
            else "cache is up to date; "
        )
        lines = [f"{head}{self.cached} of {self.total} samples at {self.size} px in {self.folder}"]
        if self.bad:
            lines.append(
                f"skipped {len(self.bad)} bad samples (listed in {self.folder / 'report.csv'}):"
            )
            lines += [f"  {row['ID']}: {row['reason']}" for row in list(self.bad.values())[:20]]
            if len(self.bad) > 20:
                lines.append(f"  ... and {len(self.bad) - 20} more")
        return "\n".join(lines)


def prepare_cache(
    root: str | Path,
    image_dir: str,
    size: int,
    workers: int | None = None,
    cache_root: str | Path | None = None,
) -> PrepareResult:
    """Bring the cache of root/image_dir at `size` px up to date with the files there."""
    start = time.monotonic()
    if not isinstance(size, int) or size < 8:
        raise InputError(f"data.image_size={size!r}: use a whole number of pixels, e.g. 512")
    source = Path(root) / image_dir
    if not source.is_dir():
        sizes = cached_sizes(root, image_dir, cache_root)
        if sizes:  # a root from `hpa.kaggle data`: decoded from the zip, nothing to read here
            raise InputError(
                f"missing image folder {source}: {root} holds caches at "
                f"{', '.join(map(str, sizes))} px made from the competition's zip; for {size} px "
                f"run `{archive_hint(root, size)}`"
            )
        raise InputError(f"missing image folder {source}; set data.root (and data.image_dir)")
    sources = scan_sources(source)
    if not sources:
        raise InputError(
            f"no images named {{ID}}_{{{','.join(CHANNELS)}}}.png (or .tif, .jpg) in {source}"
        )
    folder = cache_dir(root, image_dir, size, cache_root=cache_root)
    with writing_cache(folder):
        cache = open_or_create(folder, image_manifest(image_dir, size), source)
        diff = cache.sync(sources)
        known_bad = read_report(cache.report_path)
        # A bad row whose reason was lost (report deleted) is simply tried again.
        retry = [r for r in cache.live_rows(BAD) if cache.keys[r] not in known_bad]
        bad = {
            cache.keys[r]: known_bad[cache.keys[r]] for r in cache.live_rows(BAD) if r not in retry
        }
        todo = cache.live_rows(TODO) + retry
        check_space(cache, len(todo))
        new_bad = _run(cache, source, size, todo, workers or os.cpu_count() or 1)
        bad.update(new_bad)
        if bad != known_bad or not cache.report_path.exists():  # a no-op run touches nothing
            write_report(cache.report_path, bad)
    cached = len(cache.live_rows(DONE))
    result = PrepareResult(
        folder=cache.folder,
        size=size,
        total=len(sources),
        cached=cached,
        prepared=len(todo) - len(new_bad),
        seconds=time.monotonic() - start,
        diff=diff,
        bad=bad,
    )
    if not cached:
        first = next(iter(bad.values()))
        raise InputError(
            f"none of the {len(sources)} samples in {source} could be prepared "
            f"(e.g. {first['ID']}: {first['reason']}); see {cache.report_path}"
        )
    return result


def open_or_create(folder: Path, expect: dict, source: Path) -> ArrayCache:
    try:
        return ArrayCache.open(folder, expect)
    except CacheError as err:
        if (folder / "manifest.json").exists():
            log.warning("rebuilding the cache: %s", err)
    made = {
        "source": str(source.resolve()),
        "hpa_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return ArrayCache.create(folder, {**expect, **made})


@contextlib.contextmanager
def writing_cache(folder: Path) -> Iterator[None]:
    """A cache that cannot be written (read-only, a file in the way, a full disk): one line."""
    try:
        with disk_full_as_error(folder):
            yield
    except OSError as err:
        raise InputError(
            f"cannot write the cache into {folder} ({err.strerror or err}); set data.cache_dir "
            "to a writable folder (e.g. data.cache_dir=/kaggle/working/cache)"
        ) from None


def check_space(cache: ArrayCache, rows: int) -> None:
    need, free = rows * cache.row_bytes, shutil.disk_usage(cache.folder).free
    if need > free:
        raise InputError(
            f"the cache needs {size_text(need)} more in {cache.folder} but only "
            f"{size_text(free)} are free; free some space or use a smaller data.image_size"
        )


def _run(cache: ArrayCache, source: Path, size: int, rows: list[int], workers: int) -> dict:
    """Decode `rows` in parallel; mark each as done or bad; return the bad ones' report rows."""
    if not rows:
        return {}
    finished: dict[int, list[int]] = {DONE: [], BAD: []}

    def flush() -> None:
        for value, done in finished.items():
            cache.mark(done, value)
            done.clear()

    def settle(future: Future) -> tuple[str, str, str]:
        row, file, reason = future.result()
        finished[BAD if reason else DONE].append(row)
        return cache.keys[row], file, reason

    def submit(pool: ProcessPoolExecutor) -> list[Future]:
        return [
            pool.submit(_prepare_one, source, cache.keys[r], size, cache.data_path, r) for r in rows
        ]

    return decode_in_parallel(min(workers, len(rows)), submit, f"prepare {size} px", settle, flush)


def decode_in_parallel(
    workers: int,
    submit: Callable[[ProcessPoolExecutor], Collection[Future]],
    desc: str,
    settle: Callable[[Future], tuple[str, str, str]],
    flush: Callable[[], None],
) -> dict[str, dict[str, str]]:
    """Run the samples `submit` queues on a pool of `workers`, under a progress bar; `settle`
    takes one finished and says (ID, file, reason: "" when it is fine). Finished rows are
    flushed at most every FLUSH_S and at the end, an interrupt included. The bad ones' report."""
    bad: dict[str, dict[str, str]] = {}
    pool = ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        futures = submit(pool)
        last = time.monotonic()
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="img"):
            sample_id, file, reason = settle(future)
            if reason:
                bad[sample_id] = {"ID": sample_id, "file": file, "reason": reason}
                tqdm.write(f"skipped {sample_id}: {reason}", file=sys.stderr)
            if time.monotonic() - last >= FLUSH_S:
                flush()
                last = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        flush()  # rows finished before an interrupt are kept
    return bad


def _prepare_one(source: Path, sample_id: str, size: int, data_path: Path, row: int):
    """(row, file, reason): one sample decoded, resized and written to its row (worker process)."""
    try:
        image = read_sample(source, sample_id, size)
    except (InputError, cv2.error, ValueError) as err:
        return row, _culprit(source, sample_id), str(err)
    write_row(data_path, row, image)
    return row, "", ""


def _culprit(source: Path, sample_id: str) -> str:
    """The first channel file of a bad sample that is missing or undecodable."""
    for channel in CHANNELS:
        try:
            path = channel_path(source, sample_id, channel)
        except InputError:
            return f"{sample_id}_{channel}.png"
        try:
            read_channel(path)
        except (InputError, cv2.error):
            return path.name
    return f"{sample_id}_*"  # every channel reads: their sizes disagree


def read_report(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["ID"]: row for row in csv.DictReader(f)}


def write_report(path: Path, bad: dict[str, dict[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
        writer.writeheader()
        writer.writerows(bad[k] for k in sorted(bad))


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    setup_logging()
    cfg = compose("prepare", sys.argv[1:] if argv is None else argv)
    data = cfg.data
    # Decoding processes: the cores this process may use (affinity, cgroup quota), not all the
    # machine's; the main process only collects results, so torch gets what the pool leaves.
    workers = cfg.prepare.workers or available_cpus()
    configure_threads(cfg.get("threads"), workers=workers)
    try:
        with graceful_sigterm(RESUME_HINT):
            result = prepare_cache(
                data.root,
                data.image_dir,
                data.image_size,
                workers,
                cache_root=data.get("cache_dir"),
            )
    except KeyboardInterrupt:
        print(f"interrupted: {RESUME_HINT}", file=sys.stderr)
        sys.exit(130)
    print(result.summary())


if __name__ == "__main__":
    main()
