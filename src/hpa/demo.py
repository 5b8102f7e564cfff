"""The embedded demo data: generated once into its own folder, reused afterwards."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpa.errors import InputError
from hpa.outputs import foreign
from hpa.synthetic.generator import COMMAND, SyntheticConfig, generate_atomically

log = logging.getLogger(__name__)


def check_data_root(root: str | Path, train_csv: str, synthetic: Mapping[str, Any] | None) -> bool:
    """InputError unless `root/train_csv` exists or the demo may generate it there (what
    ensure_synthetic_data would refuse, found without generating anything); True when the demo
    set is to be generated."""
    root = Path(root)
    table = root / train_csv
    if table.exists():
        return False
    home = (synthetic or {}).get("root")
    if synthetic is None or home is None or Path(home).resolve() != root.resolve():
        what = "does not exist" if not root.exists() else f"has no {train_csv}"
        raise InputError(
            f"data.root={root} {what}: missing {table}. Point data.root at a folder with "
            f"{train_csv} and {Path(train_csv).stem}/ images (file names are case-sensitive), "
            "or leave data.root unset for the demo data"
        )
    if foreign(root, COMMAND):  # what generate_atomically would refuse, with the demo's advice
        raise InputError(
            f"{root} is not empty and has no {train_csv}; the demo will not write into a folder "
            "it did not make. Move it away, or set paths.data_dir to another folder"
        )
    return True


def ensure_synthetic_data(
    root: str | Path, train_csv: str, synthetic: Mapping[str, Any] | None
) -> None:
    """Make sure `root/train_csv` exists, generating the demo set when `root` is the demo's folder.

    The generator writes only where `synthetic.root` (the demo's own folder, default
    `${paths.data_dir}/demo`) is `root` and that folder is absent, empty or an earlier synthetic set.
    A `data.root` the user chose that lacks its table is an error naming the file, whatever the
    data group: nothing is generated there, nothing is deleted.
    """
    root = Path(root)
    if not check_data_root(root, train_csv, synthetic):
        if synthetic is not None:
            log.info("demo data: reusing %s", root)
        return
    options = dict(synthetic or {})
    options.pop("root", None)
    log.info(
        "demo data: first use, generating %d synthetic samples into %s (reused next time)",
        options.get("n_images", 0),
        root,
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    generate_atomically(SyntheticConfig(**options), root)
