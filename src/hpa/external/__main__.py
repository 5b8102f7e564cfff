"""python -m hpa.external download|convert2018|merge key=value ...  (see configs/external.yaml)"""

from __future__ import annotations

import sys
from collections import Counter

from omegaconf import DictConfig, OmegaConf

from hpa.cli import compose, print_help, setup_logging, wants_help
from hpa.errors import InputError, exit_on_input_error
from hpa.external.download import FetchOptions
from hpa.external.hpa2018 import convert_2018
from hpa.external.merge import ensure_merged
from hpa.external.public import download_public
from hpa.external.store import StoreOptions

USAGE = (
    "usage: python -m hpa.external download list=FILE out=DIR [size=512 format=png ...]\n"
    "       python -m hpa.external convert2018 csv=FILE images=DIR out=DIR [size=512]\n"
    "       python -m hpa.external merge [data=merged data.root=DIR]"
)


def required(cfg: DictConfig, *keys: str) -> None:
    missing = [k for k in keys if cfg.get(k) in (None, "")]
    if missing:
        raise InputError(f"missing {', '.join(f'{k}=...' for k in missing)}\n{USAGE}")


def store_options(cfg: DictConfig) -> StoreOptions:
    return StoreOptions(cfg.size, cfg.format, cfg.png_compression, cfg.jpg_quality)


def top(counter: Counter[str], n: int = 8) -> str:
    return "; ".join(f"{reason}: {count}" for reason, count in counter.most_common(n)) or "none"


def download(cfg: DictConfig) -> None:
    required(cfg, "list", "out")
    d = cfg.download
    fetch = FetchOptions(
        d.workers, d.retries, d.timeout_s, d.deadline_s, d.backoff_s, d.max_backoff_s
    )
    listing_options = {
        "columns": OmegaConf.to_container(d.columns),
        "unmapped_labels": d.unmapped_labels,
        "skip_in_trainset": d.skip_in_trainset,
        "cell_lines": list(d.cell_lines) if d.cell_lines else None,
        "limit": d.limit,
    }
    result = download_public(
        cfg.list,
        cfg.out,
        store=store_options(cfg),
        fetch=fetch,
        listing_options=listing_options,
        url_template=d.url_template,
        progress=cfg.progress,
    )
    lst, run = result.listing, result.run
    print(
        f"list: {lst.rows} rows, {len(lst.samples)} samples kept, {lst.n_dropped} dropped ({top(lst.dropped)})"
    )
    if lst.dropped_labels:
        print(f"labels removed from kept samples: {top(lst.dropped_labels)}")
    mb = run.nbytes / 1e6
    print(
        f"files: {run.present} already present, {len(run.outcomes) - len(run.failed)} downloaded "
        f"({mb:.1f} MB in {run.seconds:.0f} s, {mb / max(run.seconds, 1e-6):.1f} MB/s), {len(run.failed)} failed"
    )
    if run.failed:
        print(f"failures by reason: {top(run.reasons())}; list in {cfg.out}/failures.csv")
    print(f"wrote {cfg.out}/train.csv: {result.complete} complete samples", end="")
    print(
        f", {len(result.incomplete)} incomplete (rerun to retry them)" if result.incomplete else ""
    )


def convert2018(cfg: DictConfig) -> None:
    required(cfg, "csv", "images", "out")
    report = convert_2018(
        cfg.csv,
        cfg.images,
        cfg.out,
        store=store_options(cfg),
        unmapped_labels=cfg.convert2018.unmapped_labels,
        workers=cfg.convert2018.workers,
        progress=cfg.progress,
    )
    print(f"2018: {report.rows} rows, {report.kept} samples written to {cfg.out}/train.csv")
    print(f"dropped samples: {top(report.dropped)}; labels removed: {top(report.dropped_labels)}")
    print(f"channel files: {report.linked} linked as they were, {report.converted} converted")
    if report.failed:
        first = next(iter(report.failed.items()))
        print(
            f"{len(report.failed)} samples with unusable images left out, e.g. {first[0]}: {first[1]}"
        )


def merge(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if not data.get("sources"):
        raise InputError("the data config has no sources; use data=merged or list data.sources")
    report = ensure_merged(
        data["root"],
        data["sources"],
        data["merge"],
        train_csv=data["train_csv"],
        image_dir=data["image_dir"],
        progress=cfg.progress,
    )
    if report is None:
        print(f"{data['root']} is up to date with its sources")
        return
    print(
        f"merged into {data['root']}/{data['train_csv']}: {sum(report.kept.values())} samples ({top(report.kept)})"
    )
    print(
        f"duplicates removed: {top(report.duplicates)}; with differing labels: {report.label_conflicts}"
    )
    if sum(report.missing.values()):
        print(f"left out for missing images: {top(report.missing)}")


COMMANDS = {"download": download, "convert2018": convert2018, "merge": merge}


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv[:1]):
        print_help("external", USAGE)
        return
    if not argv or argv[0] not in COMMANDS:
        raise InputError(f"first argument must be one of {', '.join(COMMANDS)}\n{USAGE}")
    setup_logging()
    cfg = compose("external", argv[1:])
    try:
        COMMANDS[argv[0]](cfg)
    except KeyboardInterrupt:
        print(
            "interrupted: finished files are kept; run the same command to go on", file=sys.stderr
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
