"""`merge`: several data roots -> one competition-layout root of links, duplicates removed.

Downstream code (folds, `hpa.prepare`, training) then sees an ordinary `train.csv` + `train/`.
Sources are listed in priority order: of two duplicates, the earlier source's row is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.data.images import CHANNELS, EXTENSIONS, channel_path
from hpa.data.records import read_records
from hpa.errors import InputError
from hpa.external.store import is_stale_temp
from hpa.fsio import atomic_path, write_bytes

log = logging.getLogger(__name__)
SOURCE_KEYS = ("name", "root", "csv", "image_dir")
LINKS = ("hardlink", "symlink", "copy")
# same ID; same URL stem; byte-identical green and blue files; perceptually close green and blue
# (the same field saved at another size or encoding: a competition PNG vs a public HPA JPG).
DEDUPE = ("id", "url", "sha1", "phash")
MANIFEST = "merge.json"
HASH_CACHE = ".merge_sha1.json"
PHASH_CACHE = ".merge_phash.json"
# Bits (of 128: green and blue pHash) two images may differ in and still be one field. Measured on
# the real fixtures: a JPG re-encode at 1/2 or 1/4 size differs in 0-4 bits, a gamma change in
# 0-4, while the two different fields differ in 64 (28 green + 36 blue).
PHASH_DISTANCE = 12
_CHANNEL_FILE = re.compile(
    rf"^(?P<id>.+)_(?:{'|'.join(CHANNELS)})(?:{'|'.join(map(re.escape, EXTENSIONS))})$"
)


@dataclass
class MergeReport:
    kept: Counter[str] = field(default_factory=Counter)  # source -> samples
    duplicates: Counter[str] = field(default_factory=Counter)  # "source: same id" -> samples
    missing: Counter[str] = field(default_factory=Counter)  # source -> samples without 4 images
    label_conflicts: int = 0  # duplicates whose labels differ (the earlier source's are kept)
    pruned: int = 0  # files of samples no longer in the merge, removed


def check_sources(sources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not sources:
        raise InputError(
            "data.sources is empty; list the data roots to merge (see data/merged.yaml)"
        )
    checked = []
    for i, source in enumerate(sources):
        missing = [k for k in SOURCE_KEYS if source.get(k) in (None, "")]
        if missing:
            raise InputError(
                f"data.sources[{i}] lacks {missing}; each source needs {', '.join(SOURCE_KEYS)}"
            )
        root = Path(source["root"])
        if not (root / source["csv"]).is_file():
            raise InputError(
                f"source {source['name']!r}: missing {root / source['csv']}; "
                "download or convert it first, or remove it from data.sources"
            )
        checked.append({k: str(source[k]) for k in SOURCE_KEYS})
    names = [s["name"] for s in checked]
    if len(set(names)) != len(names):
        raise InputError(f"data.sources names repeat ({names}); give each source its own name")
    return checked


def check_target(out: Path, sources: list[dict[str, Any]], train_csv: str) -> None:
    """The merged root is rebuilt and pruned: it must be a folder of its own."""
    for s in sources:
        if Path(s["root"]).resolve() == out.resolve():
            raise InputError(
                f"data.root={out} is also source {s['name']!r}; merge into a new folder"
            )
    if (out / train_csv).exists() and not (out / MANIFEST).exists():
        raise InputError(
            f"{out} holds a {train_csv} that merge did not write; set data.root to a new folder"
        )


def prune(folder: Path, keep: set[str]) -> int:
    """Remove channel files of samples that left the merge: hpa.prepare reads the whole folder."""
    removed = 0
    for path in folder.iterdir():
        match = _CHANNEL_FILE.match(path.name)
        if (match and match["id"] not in keep) or is_stale_temp(path.name):
            path.unlink(missing_ok=True)
            removed += bool(match)
    return removed


def fingerprint(sources: list[dict[str, Any]], options: Mapping[str, Any]) -> dict[str, Any]:
    """What the merged root was built from: the sources' tables (size, mtime) and the options."""
    tables = []
    for s in sources:
        stat = (Path(s["root"]) / s["csv"]).stat()
        tables.append(
            {
                **s,
                "root": str(Path(s["root"]).resolve()),
                "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        )
    return {"sources": tables, "options": dict(options)}


class Hashes:
    """sha1 of files, cached by (path, size, mtime) so a rebuild does not reread every image."""

    desc = "merge: hashing"
    workers = 8  # reading files: I/O bound

    def __init__(self, cache: Path):
        self.cache = cache
        self.known: dict[str, list] = json.loads(cache.read_text()) if cache.exists() else {}

    def digest(self, path: Path) -> str:
        return hashlib.sha1(path.read_bytes()).hexdigest()

    def of(self, paths: list[Path], progress: bool) -> list[str]:
        def one(path: Path) -> str:
            stat = path.stat()
            hit = self.known.get(str(path))
            if hit and hit[:2] == [stat.st_size, stat.st_mtime_ns]:
                return hit[2]
            digest = self.digest(path)
            self.known[str(path)] = [stat.st_size, stat.st_mtime_ns, digest]
            return digest

        # hashlib and cv2's decoders release the GIL: threads use every core
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(
                tqdm(
                    pool.map(one, paths),
                    total=len(paths),
                    desc=self.desc,
                    disable=not progress,
                )
            )

    def save(self) -> None:
        write_bytes(self.cache, json.dumps(self.known).encode())


class PerceptualHashes(Hashes):
    """64-bit pHash (imagehash) of a channel as decoded for training (8-bit, any format/size)."""

    desc = "merge: perceptual hashing"
    workers = max(os.cpu_count() or 1, 1)  # decoding images: CPU bound

    def __init__(self, cache: Path):
        try:
            import imagehash  # noqa: F401
        except ImportError:
            raise InputError(
                "merge.dedupe=phash needs the imagehash package: pip install 'hpa[external]' "
                "(or pip install imagehash), or drop phash from merge.dedupe"
            ) from None
        super().__init__(cache)

    def digest(self, path: Path) -> str:
        import imagehash
        from PIL import Image

        from hpa.data.images import read_channel

        try:
            plane = read_channel(path)
        except InputError as err:
            log.warning("merge: %s; it cannot be matched perceptually", err)
            return ""
        return str(imagehash.phash(Image.fromarray(plane), hash_size=8))


def near_duplicate_roots(codes: Sequence[str], max_distance: int) -> list[int]:
    """For each row, the first row of its near-duplicate cluster (itself when it has none).

    `codes` are equal-length hex strings (an empty one never matches); two rows are neighbours
    when their codes differ in at most `max_distance` bits, and clusters are the connected
    components. Candidates come from multi-index hashing: split into max_distance + 1 chunks,
    neighbours agree on at least one chunk (pigeonhole), so only rows sharing a chunk are compared.
    """
    n = len(codes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the earlier row (higher priority) is the root

    valid = [i for i, c in enumerate(codes) if c]
    if not valid:
        return parent
    first_of: dict[str, int] = {}
    for i in valid:  # identical codes first: blank or repeated images collapse to one row
        union(first_of.setdefault(codes[i], i), i)
    unique = list(first_of.values())
    bits = np.unpackbits(
        np.array([np.frombuffer(bytes.fromhex(codes[i]), np.uint8) for i in unique]), axis=1
    ).astype(bool)
    width = bits.shape[1]
    bounds = np.linspace(0, width, min(max_distance + 1, width) + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        _, groups = np.unique(np.packbits(bits[:, lo:hi], axis=1), axis=0, return_inverse=True)
        order = np.argsort(groups.ravel(), kind="stable")
        starts = np.flatnonzero(np.diff(groups.ravel()[order], prepend=-1))
        for members in np.split(order, starts[1:]):
            if len(members) < 2:
                continue
            block = bits[members]
            for k in range(0, len(members), 256):  # bounded memory for big buckets
                dist = (block[k : k + 256, None, :] != block[None, :, :]).sum(axis=2)
                for a, b in zip(*np.nonzero(dist <= max_distance), strict=True):
                    if k + a < b:
                        union(unique[members[k + a]], unique[members[b]])
    return [find(i) for i in range(n)]


def gather(source: dict[str, Any], report: MergeReport) -> pd.DataFrame:
    """The source's records with their channel files; samples missing a file are counted out."""
    root = Path(source["root"])
    records = read_records(root / source["csv"])
    folder = root / source["image_dir"]
    files, ok = [], []
    for sid in records["ID"]:
        try:
            files.append({ch: channel_path(folder, sid, ch) for ch in CHANNELS})
            ok.append(True)
        except InputError:
            files.append(None)
            ok.append(False)
    report.missing[source["name"]] += ok.count(False)
    frame = records.assign(files=files, source=source["name"])[ok]
    for column in ("group", "url"):
        frame[column] = frame[column].astype(str) if column in frame.columns else ""
    return frame[["ID", "Label", "group", "source", "url", "files"]]


def deduplicate(
    frame: pd.DataFrame,
    dedupe: Sequence[str],
    hashes: Hashes | None,
    report: MergeReport,
    progress: bool,
    phashes: PerceptualHashes | None = None,
    phash_distance: int = PHASH_DISTANCE,
) -> pd.DataFrame:
    """Keep the first of each duplicate set (sources are in priority order)."""
    keys = {}
    if "id" in dedupe:
        keys["id"] = frame["ID"]
    if "url" in dedupe:
        keys["url"] = frame["url"].where(frame["url"] != "")  # NaN never matches
    if "sha1" in dedupe and hashes is not None:
        # Green and blue: a blank green channel alone could match between different images.
        green = hashes.of([f["green"] for f in frame["files"]], progress)
        blue = hashes.of([f["blue"] for f in frame["files"]], progress)
        keys["sha1"] = pd.Series(
            [g + b for g, b in zip(green, blue, strict=True)], index=frame.index
        )
    if "phash" in dedupe and phashes is not None:
        green = phashes.of([f["green"] for f in frame["files"]], progress)
        blue = phashes.of([f["blue"] for f in frame["files"]], progress)
        codes = [g + b if g and b else "" for g, b in zip(green, blue, strict=True)]
        roots = near_duplicate_roots(codes, phash_distance)
        keys["phash"] = pd.Series([str(r) for r in roots], index=frame.index)
    keep = pd.Series(True, index=frame.index)
    first_label: dict[tuple[str, str], str] = {}
    for i in frame.index:
        for kind, values in keys.items():
            value = values[i]
            if isinstance(value, float):  # missing URL
                continue
            if (kind, value) in first_label:
                keep[i] = False
                report.duplicates[f"{frame.at[i, 'source']}: same {kind}"] += 1
                report.label_conflicts += first_label[(kind, value)] != frame.at[i, "Label"]
                break
        if keep[i]:
            for kind, values in keys.items():
                if not isinstance(values[i], float):
                    first_label[(kind, values[i])] = frame.at[i, "Label"]
    return frame[keep]


def place(src: Path, dest: Path, link: str) -> None:
    """Put `src` at `dest` as a link (or copy), atomically; a hard link falls back to a symlink."""
    if dest.exists() and (link == "copy" or os.path.samefile(src, dest)):
        return
    for ext in EXTENSIONS:  # a stale twin with another extension would shadow the new file
        twin = dest.with_suffix(ext)
        if twin != dest:
            twin.unlink(missing_ok=True)
    with atomic_path(dest) as tmp:
        if link == "copy":
            shutil.copyfile(src, tmp)
        elif link == "hardlink":
            try:
                os.link(src, tmp)
            except OSError:  # another file system, or links not allowed there
                os.symlink(src.resolve(), tmp)
        else:
            os.symlink(src.resolve(), tmp)


def merge_sources(
    sources: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    link: str,
    dedupe: Sequence[str],
    train_csv: str = "train.csv",
    image_dir: str = "train",
    progress: bool = True,
    phash_distance: int = PHASH_DISTANCE,
) -> MergeReport:
    """Build `out/train.csv` (ID,Label,group,source,url) and `out/image_dir/` of links."""
    if link not in LINKS:
        raise InputError(f"merge.link={link!r}: use one of {', '.join(LINKS)}")
    unknown = sorted(set(dedupe) - set(DEDUPE))
    if unknown:
        raise InputError(f"merge.dedupe has {unknown}; choose among {', '.join(DEDUPE)}")
    if not 0 <= int(phash_distance) < 64:
        raise InputError(f"merge.phash_distance={phash_distance}: use 0..63 bits (default 12)")
    checked = check_sources(sources)
    out = Path(out)
    check_target(out, checked, train_csv)
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    report = MergeReport()
    frame = pd.concat([gather(s, report) for s in checked], ignore_index=True)
    hashes = Hashes(out / HASH_CACHE) if "sha1" in dedupe else None
    phashes = PerceptualHashes(out / PHASH_CACHE) if "phash" in dedupe else None
    try:
        frame = deduplicate(frame, dedupe, hashes, report, progress, phashes, int(phash_distance))
    finally:  # hashes computed so far survive an interrupted merge
        for cache in (hashes, phashes):
            if cache is not None:
                cache.save()
    if frame.empty:
        raise InputError(
            f"merging {[s['name'] for s in checked]} left no sample with all four images"
        )
    for files, sid in tqdm(
        zip(frame["files"], frame["ID"], strict=True),
        total=len(frame),
        desc="merge: linking",
        disable=not progress,
    ):
        for channel, src in files.items():
            place(src, out / image_dir / f"{sid}_{channel}{src.suffix}", link)
    report.pruned = prune(out / image_dir, set(frame["ID"]))
    report.kept.update(frame["source"].tolist())
    table = frame.drop(columns="files").to_csv(index=False).encode()
    write_bytes(out / train_csv, table)
    return report


def ensure_merged(
    root: str | Path,
    sources: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    *,
    train_csv: str = "train.csv",
    image_dir: str = "train",
    progress: bool = True,
) -> MergeReport | None:
    """Merge into `root` unless it already holds this exact merge; None when reused."""
    root = Path(root)
    checked = check_sources(sources)
    wanted = fingerprint(checked, {**options, "train_csv": train_csv, "image_dir": image_dir})
    manifest = root / MANIFEST
    if (
        (root / train_csv).exists()
        and manifest.exists()
        and json.loads(manifest.read_text()) == wanted
    ):
        log.info("merged data: reusing %s", root)
        return None
    log.info("merged data: building %s from %s", root, ", ".join(s["name"] for s in checked))
    report = merge_sources(
        checked, root, train_csv=train_csv, image_dir=image_dir, progress=progress, **options
    )
    write_bytes(manifest, json.dumps(wanted, indent=1).encode())
    return report
