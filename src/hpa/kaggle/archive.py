"""The competition's zip decoded as it stands into hpa.prepare's cache: no unpacked copy.

Each sample's four members (`train/{ID}_{red,green,blue,yellow}.png`) are read from the zip,
decoded by the function that reads the files (hpa.data.images.decode_channel), resized once per
size asked for and written to the rows of `OUT/.hpa_cache/<train|test>_<size>/`: the same cache,
byte for byte, that `python -m hpa.prepare` builds from the unpacked files. A sample's signature
is its members' names, sizes and CRCs, so a rerun finishes what a killed one left (finished rows
are kept); a member that does not read (a bad CRC, a broken PNG) is listed in report.csv and
skipped, like a bad file for hpa.prepare.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import zipfile
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from hpa.data.arraycache import BAD, DONE, TODO, ArrayCache, write_row
from hpa.data.cache import cache_dir, image_manifest
from hpa.data.images import CHANNELS, EXTENSIONS, decode_channel, resize, stack_sample
from hpa.errors import InputError
from hpa.fsio import atomic_path
from hpa.prepare import (
    PrepareResult,
    check_space,
    decode_in_parallel,
    open_or_create,
    read_report,
    write_report,
    writing_cache,
)

IMAGE_DIRS = ("train", "test")
# A member that cannot be read as it should: its bytes fail the CRC or do not inflate.
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)
MEMBER = re.compile(
    rf"^(?P<dir>[^/]+)/(?P<id>[^/]+)_(?P<channel>{'|'.join(CHANNELS)})"
    rf"(?:{'|'.join(re.escape(e) for e in EXTENSIONS)})$"
)


@dataclass
class ArchiveSample:
    """The members of one sample in the zip, channel -> member name (missing ones absent)."""

    sample_id: str
    members: dict[str, str]
    signature: str


def archive_samples(zf: zipfile.ZipFile, image_dir: str) -> dict[str, ArchiveSample]:
    """Sample ID -> its members under `image_dir/` in the zip, in ID order (hpa.prepare's)."""
    found: dict[str, list[zipfile.ZipInfo]] = {}
    for info in zf.infolist():
        match = MEMBER.match(info.filename)
        if match and match["dir"] == image_dir:
            found.setdefault(match["id"], []).append(info)
    samples = {}
    for sid, infos in sorted(found.items()):
        parts = sorted(f"{i.filename}:{i.file_size}:{i.CRC}" for i in infos)
        signature = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
        members = {MEMBER.match(i.filename)["channel"]: i.filename for i in infos}
        samples[sid] = ArchiveSample(sid, members, signature)
    return samples


def image_members(zf: zipfile.ZipFile) -> dict[str, int]:
    """Image folder -> number of samples in it, for the folders the zip has (train, test)."""
    return {d: n for d in IMAGE_DIRS if (n := len(archive_samples(zf, d)))}


def cache_from_archive(
    archive: Path, root: Path, image_dir: str, sizes: list[int], workers: int
) -> list[PrepareResult]:
    """Bring the caches of root/image_dir at `sizes` up to date with the zip's members."""
    start = time.monotonic()
    with zipfile.ZipFile(archive) as zf:
        samples = archive_samples(zf, image_dir)
    if not samples:
        raise InputError(f"no {image_dir}/{{ID}}_{{{','.join(CHANNELS)}}}.png in {archive}")
    signatures = {sid: s.signature for sid, s in samples.items()}
    source = archive / image_dir  # named in the manifest: where the rows came from
    jobs: dict[str, list[tuple[int, ArrayCache, int]]] = {}  # ID -> (size, cache, row) to write
    state = []
    for size in sizes:
        folder = cache_dir(root, image_dir, size)
        with writing_cache(folder):
            cache = open_or_create(folder, image_manifest(image_dir, size), source)
            diff = cache.sync(signatures)
        known_bad = read_report(cache.report_path)
        retry = [r for r in cache.live_rows(BAD) if cache.keys[r] not in known_bad]
        todo = cache.live_rows(TODO) + retry
        with writing_cache(folder):
            check_space(cache, len(todo))
        for row in todo:
            jobs.setdefault(cache.keys[row], []).append((size, cache, row))
        bad = {
            cache.keys[r]: known_bad[cache.keys[r]] for r in cache.live_rows(BAD) if r not in retry
        }
        state.append((size, cache, diff, known_bad, bad, [cache.keys[r] for r in todo]))
    new_bad = _run(archive, samples, jobs, workers, image_dir)
    results = []
    for size, cache, diff, known_bad, bad, todo_ids in state:
        now_bad = {sid: new_bad[sid] for sid in todo_ids if sid in new_bad}
        bad.update(now_bad)
        if bad != known_bad or not cache.report_path.exists():  # a no-op run touches nothing
            with writing_cache(cache.folder):
                write_report(cache.report_path, bad)
        results.append(
            PrepareResult(
                folder=cache.folder,
                size=size,
                total=len(samples),
                cached=len(cache.live_rows(DONE)),
                prepared=len(todo_ids) - len(now_bad),
                seconds=time.monotonic() - start,
                diff=diff,
                bad=bad,
            )
        )
    return results


def _run(
    archive: Path,
    samples: dict[str, ArchiveSample],
    jobs: dict[str, list[tuple[int, ArrayCache, int]]],
    workers: int,
    image_dir: str,
) -> dict[str, dict[str, str]]:
    """Decode each sample of `jobs` once, write its rows, mark them; return the bad ones."""
    if not jobs:
        return {}
    caches = {id(c): c for targets in jobs.values() for _, c, _ in targets}
    finished: dict[tuple[int, int], list[int]] = {}

    def flush() -> None:
        for (key, value), rows in finished.items():
            caches[key].mark(rows, value)
            rows.clear()

    futures: dict[Future, str] = {}

    def submit(pool: ProcessPoolExecutor) -> dict[Future, str]:
        for sid, targets in jobs.items():
            rows = [(size, cache.data_path, row) for size, cache, row in targets]
            futures[pool.submit(_decode_one, archive, samples[sid], rows)] = sid
        return futures

    def settle(future: Future) -> tuple[str, str, str]:
        sid = futures[future]
        file, reason = future.result()
        for _, cache, row in jobs[sid]:
            finished.setdefault((id(cache), BAD if reason else DONE), []).append(row)
        return sid, file, reason

    sizes = sorted({size for targets in jobs.values() for size, _, _ in targets})
    desc = f"{image_dir} {'+'.join(map(str, sizes))} px from {archive.name}"
    return decode_in_parallel(min(workers, len(jobs)), submit, desc, settle, flush)


_open_zips: dict[Path, zipfile.ZipFile] = {}  # per worker process: its central directory read once


def _decode_one(
    archive: Path, sample: ArchiveSample, targets: list[tuple[int, Path, int]]
) -> tuple[str, str]:
    """(file, reason): the sample decoded from the zip and written to each target row (worker)."""
    if archive not in _open_zips:
        _open_zips[archive] = zipfile.ZipFile(archive)
    zf = _open_zips[archive]
    planes = []
    for channel in CHANNELS:
        name = sample.members.get(channel)
        if name is None:
            other = next(iter(sample.members.values()))
            missing = f"{other.rsplit('/', 1)[0]}/{sample.sample_id}_{channel}{Path(other).suffix}"
            return missing, f"missing {missing} in {archive.name}; every sample needs 4 channels"
        try:
            planes.append((name, decode_channel(zf.read(name), name)))
        except UNREADABLE as err:
            return name, f"cannot read {name} from {archive.name} ({err}); the archive is damaged"
        except (InputError, cv2.error) as err:
            return name, str(err)
    try:
        image = stack_sample(planes, sample.sample_id)
    except InputError as err:
        return f"{sample.sample_id}_*", str(err)
    for size, data_path, row in targets:
        write_row(data_path, row, image if image.shape[:2] == (size, size) else resize(image, size))
    return "", ""


def extract_images(archive: Path, root: Path, image_dir: str) -> int:
    """keep_images: the zip's image_dir/ members written to root/image_dir as they are.

    Each file is written whole (hpa.fsio) and one already there with the member's size is kept,
    so a rerun goes on where a killed one stopped. Returns the number of files written.
    """
    written = 0
    with zipfile.ZipFile(archive) as zf:
        members = [
            name
            for sample in archive_samples(zf, image_dir).values()
            for name in sample.members.values()
        ]
        sizes = {i.filename: i.file_size for i in zf.infolist()}
        for name in tqdm(members, desc=f"unpack {image_dir}", unit="file"):
            path = root / name
            if path.is_file() and path.stat().st_size == sizes[name]:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(name) as src, atomic_path(path) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except UNREADABLE as err:  # kept out; hpa.prepare lists the sample as bad
                tqdm.write(f"skipped {name}: cannot read it from {archive.name} ({err})")
                continue
            written += 1
    return written
