"""The entry points' composition of the pieces: data, merged sources and segmenter from config.

The packages below stay independent of each other (`data` knows neither `external` nor
`segment`): what needs both is put together here, by the commands, before the data module exists.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hpa.data.datamodule import HPADataModule


def segmenter_factory(segmenter_cfg: Mapping[str, Any] | None):
    """(picklable callable that builds the configured segmenter, key naming its settings)."""
    from hpa.segment.factory import segmenter_from_config, segmenter_label

    if not segmenter_cfg:
        return None, ""
    options = {k: v for k, v in segmenter_cfg.items() if k != "_target_"}
    digest = hashlib.blake2b(
        json.dumps(options, sort_keys=True, default=str).encode(), digest_size=4
    ).hexdigest()
    label = segmenter_label(segmenter_cfg)
    return functools.partial(segmenter_from_config, dict(segmenter_cfg)), f"{label}-{digest}"


def build_datamodule(
    data_cfg: Mapping[str, Any], segmenter_cfg: Mapping[str, Any] | None = None
) -> HPADataModule:
    """The data module of a `data` config: sources merged first (data=merged), cell masks from
    the configured segmenter (data=cells without masks). `synthetic` is the caller's business."""
    options = {k: v for k, v in data_cfg.items() if k != "synthetic"}
    sources, merge = options.pop("sources", None), options.pop("merge", None)
    if sources:
        from hpa.external.merge import ensure_merged

        ensure_merged(
            options["root"],
            sources,
            merge or {},
            train_csv=options.get("train_csv", "train.csv"),
            image_dir=options.get("image_dir", "train"),
        )
    segmenter, key = segmenter_factory(segmenter_cfg)
    return HPADataModule(**options, segmenter=segmenter, segmenter_key=key)
