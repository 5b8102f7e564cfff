"""The embedded demo data: generated once into data.root, reused afterwards."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpa.synthetic.generator import SyntheticConfig, generate_atomically

log = logging.getLogger(__name__)


def ensure_synthetic_data(
    root: str | Path, train_csv: str, synthetic: Mapping[str, Any] | None
) -> None:
    """If `synthetic` is set and `root` holds no data yet, generate it there (atomically)."""
    root = Path(root)
    if synthetic is None or (root / train_csv).exists():
        if synthetic is not None:
            log.info("demo data: reusing %s", root)
        return
    options = dict(synthetic)
    log.info(
        "demo data: first use, generating %d synthetic samples into %s (reused next time)",
        options.get("n_images", 0),
        root,
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    generate_atomically(SyntheticConfig(**options), root)
