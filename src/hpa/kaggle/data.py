"""python -m hpa.kaggle data --out DIR: the competition's data, straight into the decode-once cache.

    python -m hpa.kaggle data --out DIR [--sizes 512 ...] [--keep-images] [--delete-archive]
        [--archive-dir DIR2] [--workers N]

1. Disk first: the CLI's file listing (`kaggle competitions files`) gives the archive's size and
   the number of samples; the space the archive, the caches (samples x 4 x size^2 bytes per
   size) and with --keep-images the PNGs need is stated, and the command stops with one line
   when it is not free, before anything is downloaded.
2. train.csv and sample_submission.csv with `kaggle competitions download -f`, then the archive
   (hpa-single-cell-image-classification.zip, ~160 GB) with `kaggle competitions download -p`:
   the CLI resumes a partial file and skips a complete one, so a rerun after a kill or a dropped
   connection goes on; a progress bar shows bytes, rate and time left. A complete archive (its
   central directory reads) is never downloaded again.
3. Each image folder of the zip (train/, test/) decoded as it stands into
   DIR/.hpa_cache/<folder>_<size>/ (hpa.kaggle.archive), on all cores; --keep-images unpacks the
   PNGs into DIR/train, DIR/test and builds the caches from them with hpa.prepare instead.
4. --delete-archive removes the archive once every cache is complete; never otherwise.

DIR is then a data root for `python -m hpa.train data.root=DIR` (whole images at a cached size).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hpa.data.arraycache import TODO, ArrayCache, CacheError
from hpa.data.cache import cache_dir, image_manifest
from hpa.errors import InputError
from hpa.fsio import atomic_path, free_bytes
from hpa.kaggle.archive import IMAGE_DIRS, MEMBER, cache_from_archive, extract_images
from hpa.kaggle.metadata import COMPETITION
from hpa.kaggle.push import KaggleCli, cli_problem
from hpa.outputs import lock
from hpa.prepare import prepare_cache
from hpa.threads import available_cpus

ARCHIVE = f"{COMPETITION}.zip"
CSVS = ("train.csv", "sample_submission.csv")
STAGING = ".hpa-kaggle-download"  # single files land here before they are moved into place
POLL_S = 0.5  # between looks at the archive's size while the CLI downloads it
STALL_S = 1800.0  # no new byte for this long: the CLI is stopped, a rerun resumes
MAX_PAGES = 10_000  # of `competitions files`: far more than the competition's files need
GIB = 2**30

Log = Callable[[str], None]


@dataclass
class Listing:
    """The competition's files as the CLI lists them: name -> bytes."""

    files: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.files.values())

    def samples(self, image_dir: str) -> int:
        ids = set()
        for name in self.files:
            match = MEMBER.match(name)
            if match and match["dir"] == image_dir:
                ids.add(match["id"])
        return len(ids)

    def image_bytes(self) -> int:
        return sum(n for name, n in self.files.items() if MEMBER.match(name))


_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'123', '12MB', '1.5 GB' -> bytes (the CLI prints raw bytes in CSV mode, units in tables)."""
    match = _SIZE.match(text)
    if not match:
        raise InputError(f"kaggle competitions files: cannot read the size {text!r}")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def list_files(cli: KaggleCli) -> Listing:
    """Every file of the competition, page by page (`-v`: CSV, `--page-token`: the next page)."""
    files: dict[str, int] = {}
    token = None
    for _ in range(MAX_PAGES):
        args = ["competitions", "files", "-c", COMPETITION, "-v"]
        done = cli.run(*args, *(["--page-token", token] if token else []))
        token = None
        lines = []
        for line in done.stdout.splitlines():
            found = re.match(r"\s*Next Page Token\s*=\s*(\S+)", line)
            if found:
                token = found[1]
            elif line.strip():
                lines.append(line)
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            name = row.get("name") or row.get("ref")
            size = row.get("size") or row.get("totalBytes")
            if name and size:
                files[name] = parse_size(size)
        if not token:
            break
    if not files:
        raise InputError(
            f"kaggle competitions files -c {COMPETITION} listed nothing: accept the competition's "
            f"rules on kaggle.com/competitions/{COMPETITION} with the account of your API token"
        )
    return Listing(files)


def archive_complete(path: Path) -> bool:
    """True when the zip's central directory reads: the download finished."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def cache_complete(root: Path, image_dir: str, size: int) -> bool:
    """A cache with a row for every sample and none left to do (bad rows are done: listed)."""
    try:
        cache = ArrayCache.open(cache_dir(root, image_dir, size), image_manifest(image_dir, size))
    except CacheError:
        return False
    return bool(cache.rows) and not cache.live_rows(TODO)


def _dev(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev


@dataclass
class Plan:
    """What the command will write and where, and the space that needs."""

    out: Path
    archive: Path
    sizes: list[int]
    keep_images: bool
    samples: dict[str, int]  # image folder -> samples
    archive_bytes: int  # still to download
    cache_bytes: int
    image_bytes: int
    needs: dict[Path, int] = field(default_factory=dict)  # a folder per disk -> bytes

    def __post_init__(self) -> None:
        here = self.cache_bytes + self.image_bytes
        if _dev(self.archive.parent) == _dev(self.out):
            self.needs = {self.out: here + self.archive_bytes}
        else:
            self.needs = {self.out: here, self.archive.parent: self.archive_bytes}

    def describe(self) -> str:
        counts = ", ".join(f"{n} {d}" for d, n in self.samples.items())
        parts = [
            f"archive {self.archive_bytes / GIB:.1f} GiB still to download to {self.archive}",
            f"caches at {'+'.join(map(str, self.sizes))} px {self.cache_bytes / GIB:.1f} GiB "
            f"({counts} samples x 4 x size^2 bytes)",
        ]
        if self.keep_images:
            parts.append(f"unpacked images {self.image_bytes / GIB:.1f} GiB")
        free = ", ".join(
            f"{need / GIB:.1f} GiB needed and {_free(folder) / GIB:.1f} GiB free in {folder}"
            for folder, need in self.needs.items()
        )
        return f"disk: {'; '.join(parts)}: {free}"

    def check(self) -> None:
        for folder, need in self.needs.items():
            free = _free(folder)
            if need > free:
                raise InputError(
                    f"not enough space in {folder}: {need / GIB:.1f} GiB needed, {free / GIB:.1f} "
                    "GiB free (nothing downloaded); free some space, use fewer --sizes, or put the "
                    "archive on another disk with --archive-dir"
                )


def _free(folder: Path) -> int:
    free = free_bytes(folder)
    return free if free is not None else 2**62  # unknown: let the write itself say it is full


def make_plan(
    cli: KaggleCli, out: Path, archive: Path, sizes: list[int], keep_images: bool
) -> Plan:
    """Counts from the complete archive when it is there, else from the CLI's listing."""
    if archive_complete(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = {i.filename: i.file_size for i in zf.infolist()}
        listing, left = Listing(infos), 0
    else:
        listing = list_files(cli)
        have = archive.stat().st_size if archive.exists() else 0
        left = max(0, listing.total - have)
    samples = {d: n for d in IMAGE_DIRS if (n := listing.samples(d))}
    cache = 0
    for size in sizes:
        for image_dir, n in samples.items():
            data = cache_dir(out, image_dir, size) / "data.u8"
            # blocks, not st_size: the rows file is made full length (sparse) and filled in
            have = data.stat().st_blocks * 512 if data.exists() else 0
            cache += max(0, n * 4 * size * size - have)
    images = 0
    if keep_images:
        images = sum(n for name, n in listing.files.items() if MEMBER.match(name))
        images -= sum(p.stat().st_size for d in samples for p in (out / d).glob("*") if p.is_file())
    return Plan(out, archive, sizes, keep_images, samples, left, cache, max(0, images))


def download_csvs(cli: KaggleCli, out: Path, log: Log) -> None:
    """train.csv and sample_submission.csv, each moved into place whole (a kill leaves none)."""
    staging = out / STAGING
    for name in CSVS:
        if (out / name).is_file():
            continue
        staging.mkdir(parents=True, exist_ok=True)
        log(f"kaggle competitions download -c {COMPETITION} -f {name} -p {staging}")
        cli.run("competitions", "download", "-c", COMPETITION, "-f", name, "-p", str(staging), "-q")
        got, zipped = staging / name, staging / f"{name}.zip"  # the CLI may get it compressed
        with atomic_path(out / name) as tmp:
            if zipped.is_file():
                with zipfile.ZipFile(zipped) as zf, zf.open(name) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            elif got.is_file():
                shutil.copyfile(got, tmp)
            else:
                raise InputError(f"kaggle competitions download -f {name} wrote no {got}")
        for path in (got, zipped):
            path.unlink(missing_ok=True)
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()


def download_archive(cli: KaggleCli, archive: Path, expected: int | None, log: Log) -> None:
    """The CLI downloads (resuming a partial file itself); this shows its progress and a stall."""
    args = ["competitions", "download", "-c", COMPETITION, "-p", str(archive.parent), "-q"]
    log(f"kaggle {' '.join(args)}")
    archive.parent.mkdir(parents=True, exist_ok=True)

    def size() -> int:  # the archive, or a partial file the CLI names after it
        found = [p.stat().st_size for p in archive.parent.glob(f"{archive.name}*") if p.is_file()]
        return max(found, default=0)

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([cli.exe, *args], stdout=out, stderr=err, text=True)
        bar = tqdm(
            total=expected, initial=size(), unit="B", unit_scale=True, unit_divisor=1024,
            desc=archive.name,
        )  # fmt: skip
        last, moved = bar.n, time.monotonic()
        try:
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL_S)
                now = size()
                if now != last:
                    bar.update(now - last)
                    last, moved = now, time.monotonic()
                elif time.monotonic() - moved > STALL_S:
                    raise InputError(
                        f"the download of {archive} made no progress in {STALL_S:.0f} s; check "
                        "the connection and run the same command again (it resumes)"
                    )
        finally:
            if proc.poll() is None:  # stopped (SIGTERM, a stall): the partial file stays
                proc.terminate()
                proc.wait()
            bar.close()
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read())
    problem = cli_problem(done)
    if problem is not None:
        raise InputError(
            f"kaggle competitions download failed: {problem}; run the same command again "
            "(the download resumes)"
        )


def get_data(
    out: Path,
    sizes: list[int],
    keep_images: bool = False,
    delete_archive: bool = False,
    archive_dir: Path | None = None,
    workers: int | None = None,
    log: Log = print,
) -> Plan | None:
    """Everything `python -m hpa.kaggle data` does; returns the plan (None: nothing to do)."""
    workers = workers or available_cpus()
    for size in sizes:
        if size < 8:
            raise InputError(f"--sizes {size}: use a whole number of pixels, e.g. 512")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    # One writer: a second `hpa.kaggle data` into the same folder stops at once (hpa.outputs).
    with lock(out, "--out"):
        return _get_data(out, sizes, keep_images, delete_archive, archive_dir, workers, log)


def _get_data(
    out: Path,
    sizes: list[int],
    keep_images: bool,
    delete_archive: bool,
    archive_dir: Path | None,
    workers: int,
    log: Log,
) -> Plan | None:
    archive = (archive_dir or out) / ARCHIVE
    if not archive.exists() and _all_done(out, sizes, keep_images):
        log(f"{out} is up to date: {', '.join(CSVS)} and the caches at {sizes} px")
        return None
    cli = KaggleCli.find()
    plan = make_plan(cli, out, archive, sizes, keep_images)
    log(plan.describe())
    plan.check()
    out.mkdir(parents=True, exist_ok=True)
    download_csvs(cli, out, log)
    if not archive_complete(archive):
        download_archive(cli, archive, plan.archive_bytes + _size(archive), log)
        if not archive_complete(archive):
            raise InputError(
                f"{archive} is incomplete or damaged ({_size(archive)} bytes): run the same "
                "command again to resume the download; if it stays damaged, delete it and rerun"
            )
    with zipfile.ZipFile(archive) as zf:
        dirs = [d for d in IMAGE_DIRS if any(n.startswith(f"{d}/") for n in zf.namelist())]
    for image_dir in dirs:
        # Images there already (unpacked by hand, a --keep-images run): a cache from the zip would
        # not match them (hpa.train would call it stale), so the rest are unpacked beside them.
        if not keep_images and (out / image_dir).is_dir():
            log(
                f"{out / image_dir} holds images already: unpacking the rest there and caching them"
            )
        if keep_images or (out / image_dir).is_dir():
            extract_images(archive, out, image_dir)
            results = [prepare_cache(out, image_dir, s, workers) for s in sizes]
        else:
            results = cache_from_archive(archive, out, image_dir, sizes, workers)
        for result in results:
            log(result.summary())
    unfinished = [(d, s) for d in dirs for s in sizes if not cache_complete(out, d, s)]
    if unfinished:
        raise InputError(f"caches left unfinished: {unfinished}; run the same command again")
    if delete_archive:
        archive.unlink()
        log(f"deleted {archive} (--delete-archive; every cache is complete)")
    else:
        log(f"kept {archive}; --delete-archive removes it once the caches are complete")
    log(f"train from it: python -m hpa.train data.root={out} data.image_size={sizes[0]}")
    return plan


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _all_done(out: Path, sizes: list[int], keep_images: bool) -> bool:
    """Without the archive: CSVs and every cache there (a run with --delete-archive finished)."""
    if not all((out / name).is_file() for name in CSVS):
        return False
    if keep_images and not (out / "train").is_dir():
        return False
    train = all(cache_complete(out, "train", s) for s in sizes)
    # test/ is cached where the archive had it: complete, or never started
    test = all(
        cache_complete(out, "test", s) or not cache_dir(out, "test", s).exists() for s in sizes
    )
    return train and test
