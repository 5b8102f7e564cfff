"""Check every sample's four files before training: a bad file stops the run in seconds, not at
minute 50 inside a DataLoader worker.

Per file, without decoding the pixels: it exists, its header parses (Pillow reads only the
header), it is not cut short (PNG ends with its IEND chunk, JPEG with its end marker), and the
four channels of a sample have one size. Results are kept per sample with the signature of its
files (name, size, mtime), so a second run checks only what changed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpa.data.cache import cache_dir, scan_sources
from hpa.data.images import CHANNELS, channel_path
from hpa.errors import InputError
from hpa.fsio import write_json

log = logging.getLogger(__name__)

_TRAILERS = {".png": b"IEND\xaeB`\x82", ".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9"}


def file_problem(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height), or None and why the file is unusable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return None, f"not a readable image ({type(err).__name__})"
    trailer = _TRAILERS.get(path.suffix.lower())
    if trailer:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - 64))
            tail = f.read()
        if trailer not in tail:  # JPEGs may carry a few bytes of padding after the marker
            return None, "the file is cut short (truncated download or copy)"
    return size, None


def sample_problem(image_dir: Path, sample_id: str) -> str | None:
    """Why one sample cannot be read, or None."""
    sizes = {}
    for channel in CHANNELS:
        try:
            path = channel_path(image_dir, sample_id, channel)
        except InputError as err:
            return str(err)
        size, problem = file_problem(path)
        if problem:
            return f"{path}: {problem}; re-download or remove sample {sample_id}"
        sizes[path.name] = size
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name}: {w}x{h}" for name, (w, h) in sizes.items())
        return f"channel sizes disagree for sample {sample_id} ({detail}); re-export the sample"
    return None


def check_images(
    root: str | Path,
    image_dir: str,
    ids: list[str],
    workers: int = 4,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> None:
    """Raise InputError naming the first bad file (and how many are bad) among `ids`."""
    from tqdm import tqdm

    root = Path(root)
    folder = root / image_dir
    signatures = scan_sources(folder) if folder.is_dir() else {}
    record = cache_dir(root, image_dir, 0, kind="checked", cache_root=cache_root)
    record = record.with_name(record.name + ".json")
    try:
        known = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        known = {}
    todo = [i for i in ids if i not in signatures or known.get(i) != signatures[i]]
    if not todo:
        return
    bad: list[str] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda i: (i, sample_problem(folder, i)), todo)
        bar = tqdm(results, total=len(todo), desc="check images", unit="img", disable=not progress)
        for sample_id, problem in bar:
            if problem:
                bad.append(problem)
            elif sample_id in signatures:
                known[sample_id] = signatures[sample_id]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, known, indent=None)
    except OSError as err:  # a read-only root: the check simply runs again next time
        log.info("data: could not record checked images in %s (%s)", record, err)
    if bad:
        more = f" ({len(bad)} of {len(ids)} samples are bad)" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}{more}. data.check_images=false skips this check")
