"""The public HPA list (kaggle_2021.tsv and alike): one row per image, URL stem and labels."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from hpa.errors import InputError
from hpa.external.labels import LabelMapper, translate_names
from hpa.inputs import id_problem

# Column names tried, in order, when the config leaves a column at null (case-insensitive).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "image": ("Image", "url", "image_url", "stem"),
    "label": ("Label", "Labels", "Target", "locations"),
    "group": ("Antibody", "antibody_id", "ensembl_ids", "Gene", "gene_name"),
    "cellline": ("Cellline", "cell_line", "Cell line"),
}
# Older lists name one channel file (or the RGB composite) instead of the stem.
_CHANNEL_SUFFIX = re.compile(
    r"_(red|green|blue|yellow|blue_red_green)\.(jpe?g|png|tiff?)(\.gz)?$", re.IGNORECASE
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Listing:
    """Samples to fetch (`ID, url, Label, group, Cellline`) and why the other rows were left out."""

    samples: pd.DataFrame
    rows: int
    n_dropped: int = 0
    # reason -> rows; a sample with two unmapped labels counts under both.
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_labels: Counter[str] = field(default_factory=Counter)  # label removed from a sample


def url_stem(text: str) -> str:
    """The URL to which `_{channel}.jpg` is appended; a channel file's URL is cut back to it."""
    return _CHANNEL_SUFFIX.sub("", str(text).strip())


def sample_id(stem: str) -> str | None:
    """Stable ID from the URL path: `https://images.proteinatlas.org/10005/1054_E4_1` -> `10005_1054_E4_1`."""
    parsed = urlparse(stem)
    if parsed.scheme not in ("http", "https", "file") or not parsed.path.strip("/"):
        return None
    return _UNSAFE.sub("-", parsed.path.strip("/").replace("/", "_"))


def find_column(frame: pd.DataFrame, role: str, name: str | None, path: Path) -> str | None:
    """The configured column (must exist) or the first candidate present."""
    if name is not None:
        if name not in frame.columns:
            raise InputError(
                f"{path} has no column {name!r} (has {list(frame.columns)}); fix columns.{role}"
            )
        return name
    lower = {c.lower(): c for c in frame.columns}
    return next((lower[c.lower()] for c in CANDIDATES[role] if c.lower() in lower), None)


def read_table(path: Path) -> pd.DataFrame:
    """TSV or CSV, told apart by the first line; every cell read as text."""
    if not path.is_file():
        raise InputError(f"missing list {path}; pass list=FILE (a TSV/CSV of public HPA images)")
    try:
        with path.open(encoding="utf-8") as f:
            sep = "\t" if "\t" in f.readline() else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a readable TSV/CSV ({err})") from None


def read_listing(
    path: str | Path,
    *,
    columns: dict[str, str | None],
    unmapped_labels: str,
    skip_in_trainset: bool,
    cell_lines: list[str] | None = None,
    limit: int | None = None,
) -> Listing:
    """Read the list, map labels to the 19 classes and keep one row per sample ID."""
    path = Path(path)
    frame = read_table(path)
    cols = {role: find_column(frame, role, columns.get(role), path) for role in CANDIDATES}
    for role in ("image", "label"):
        if cols[role] is None:
            raise InputError(
                f"{path}: no {role} column among {list(frame.columns)}; "
                f"tried {', '.join(CANDIDATES[role])} (set columns.{role}=NAME)"
            )
    mapper = LabelMapper(translate_names, unmapped_labels)
    dropped: Counter[str] = Counter()
    rows, seen = [], set()
    wanted = {c.casefold() for c in cell_lines} if cell_lines else None
    for row in frame.to_dict("records"):
        stem = url_stem(row[cols["image"]])
        sid = sample_id(stem)
        cellline = row[cols["cellline"]] if cols["cellline"] else ""
        if sid is None:
            dropped["not an http(s) URL"] += 1
        elif id_problem(sid):  # an ID becomes a file name: never a path
            dropped["ID is not a plain file name"] += 1
        elif sid in seen:
            dropped["duplicate row"] += 1
        elif skip_in_trainset and str(row.get("in_trainset", "")).strip().lower() == "true":
            dropped["already in the competition train set (in_trainset)"] += 1
        elif wanted is not None and cellline.casefold() not in wanted:
            dropped["cell line not in cell_lines"] += 1
        else:
            label = mapper(row[cols["label"]])
            if label is None:
                continue
            seen.add(sid)
            # HPA stores images by antibody (the URL's first folder): the fallback fold group.
            group = row[cols["group"]] if cols["group"] else ""
            group = group or urlparse(stem).path.strip("/").split("/")[0]
            rows.append((sid, stem, label, group, cellline))
            if limit is not None and len(rows) >= limit:
                break
    n_dropped = sum(dropped.values()) + mapper.n_dropped
    dropped.update(mapper.dropped_samples)
    samples = pd.DataFrame(rows, columns=["ID", "url", "Label", "group", "Cellline"])
    return Listing(samples, len(frame), n_dropped, dropped, mapper.dropped_labels)
