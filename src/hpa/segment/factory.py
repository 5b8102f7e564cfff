"""Segmenters from config: a `segmenter` node (`_target_` + options) through `hpa.build`.

hpa's own are the `configs/segmenter/*.yaml` group (watershed, hpacellseg, truth); a user's own is
a YAML with its `_target_` in a folder of `hydra.searchpath` (docs/extending.md). Anything with a
`segment(image) -> Segmentation` method will do (hpa.segment.base.Segmenter).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpa.build import build, build_option, option, option_names, with_target
from hpa.segment.base import Segmenter

GROUP = "segmenter"


def segmenter_names() -> list[str]:
    """hpa's own segmenters, by their `segmenter=NAME`."""
    return option_names(GROUP)


def build_segmenter(name: str, **options: Any) -> Segmenter:
    """hpa's segmenter `name` (configs/segmenter/NAME.yaml) with `options` over its defaults."""
    return build_option(GROUP, name, **options)


def segmenter_from_config(config: Mapping[str, Any]) -> Segmenter:
    """A `segmenter` config node -> the segmenter (an older `{name: ..., ...}` node too)."""
    return build(with_target(config, GROUP), GROUP)


def segmenter_label(config: Mapping[str, Any]) -> str:
    """A short name for logs and cache keys: hpa's option name (`watershed`, as cell caches made
    before the `_target_` nodes are keyed), else the target's class name."""
    target = str(with_target(config, GROUP)["_target_"])
    for name in segmenter_names():
        if option(GROUP, name)["_target_"] == target:
            return name
    return target.rsplit(".", 1)[-1]
