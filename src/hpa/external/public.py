"""`download`: public HPA list -> OUT/train/{ID}_{channel}.png + OUT/train.csv (ID,Label,group,...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hpa.data.images import CHANNELS
from hpa.errors import InputError
from hpa.external.download import FetchOptions, FileJob, RunReport, download_files
from hpa.external.listing import Listing, read_listing
from hpa.external.store import StoreOptions, is_stale_temp
from hpa.fsio import write_bytes

MANIFEST = "external.json"


@dataclass
class DownloadResult:
    listing: Listing
    run: RunReport
    complete: int  # samples with all four channels, written to train.csv
    incomplete: list[str]  # sample IDs missing a channel after this run


def check_manifest(out: Path, store: StoreOptions) -> None:
    """A folder keeps one size and format: mixing them would silently mix resolutions."""
    path = out / MANIFEST
    wanted = {"size": store.size, "format": store.format}
    if path.exists():
        held = json.loads(path.read_text())
        if {k: held.get(k) for k in wanted} != wanted:
            raise InputError(
                f"{out} holds images stored with {held}, not {wanted}; "
                "rerun with those settings or choose a new out=DIR"
            )
    else:
        write_bytes(path, json.dumps(wanted).encode())


def remove_stale_parts(image_dir: Path) -> None:
    """Leftovers of a killed run: never under a final name, safe to delete."""
    for part in image_dir.iterdir():
        if is_stale_temp(part.name) and not part.is_dir():
            part.unlink(missing_ok=True)


def plan_jobs(
    samples: pd.DataFrame, image_dir: Path, url_template: str, suffix: str
) -> list[FileJob]:
    return [
        FileJob(
            sid, ch, url_template.format(stem=stem, channel=ch), image_dir / f"{sid}_{ch}{suffix}"
        )
        for sid, stem in zip(samples["ID"], samples["url"], strict=True)
        for ch in CHANNELS
    ]


def write_tables(
    out: Path, samples: pd.DataFrame, run: RunReport, image_dir: Path, suffix: str
) -> list[str]:
    """train.csv of complete samples (listing order) and failures.csv; returns incomplete IDs."""
    complete = [
        all((image_dir / f"{sid}_{ch}{suffix}").exists() for ch in CHANNELS)
        for sid in samples["ID"]
    ]
    _write_csv(
        samples.loc[complete, ["ID", "Label", "group", "Cellline", "url"]], out / "train.csv"
    )
    failures = pd.DataFrame(
        [(o.job.sample_id, o.job.channel, o.job.url, o.reason) for o in run.failed],
        columns=["ID", "channel", "url", "reason"],
    )
    if failures.empty:
        (out / "failures.csv").unlink(missing_ok=True)
    else:
        _write_csv(failures, out / "failures.csv")
    return samples["ID"][[not c for c in complete]].tolist()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_bytes(path, frame.to_csv(index=False).encode())


def download_public(
    list_path: str | Path,
    out: str | Path,
    *,
    store: StoreOptions,
    fetch: FetchOptions,
    listing_options: dict,
    url_template: str,
    progress: bool = True,
) -> DownloadResult:
    """The whole `download` command; rerunning it fetches only what is still missing."""
    out = Path(out)
    listing = read_listing(list_path, **listing_options)
    if listing.samples.empty:
        raise InputError(
            f"{list_path}: no usable samples ({listing.n_dropped} rows dropped: {dict(listing.dropped)})"
        )
    image_dir = out / "train"
    image_dir.mkdir(parents=True, exist_ok=True)
    check_manifest(out, store)
    remove_stale_parts(image_dir)
    jobs = plan_jobs(listing.samples, image_dir, url_template, store.suffix)
    run = download_files(jobs, fetch, store, progress=progress)
    incomplete = write_tables(out, listing.samples, run, image_dir, store.suffix)
    return DownloadResult(listing, run, len(listing.samples) - len(incomplete), incomplete)
