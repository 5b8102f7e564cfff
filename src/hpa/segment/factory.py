"""One entry point for segmenters: `build_segmenter("watershed")`, `build_segmenter("hpacellseg", ...)`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from hpa.errors import InputError
from hpa.segment.base import Segmenter


def _watershed() -> type:
    from hpa.segment.watershed import WatershedSegmenter

    return WatershedSegmenter


def _hpacellseg() -> type:
    from hpa.segment.hpacellseg import HPACellSegmenter

    return HPACellSegmenter


def _truth() -> type:
    from hpa.segment.truth import TruthSegmenter

    return TruthSegmenter


# Lazy: naming a segmenter imports only its own module (hpacellseg pulls in torch).
SEGMENTERS: dict[str, Callable[[], type]] = {
    "watershed": _watershed,
    "hpacellseg": _hpacellseg,
    "truth": _truth,
}


def build_segmenter(name: str, **options: Any) -> Segmenter:
    """The segmenter called `name`, configured by `options` (its dataclass fields)."""
    if name not in SEGMENTERS:
        raise InputError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
    cls = SEGMENTERS[name]()
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(
            f"segmenter {name} has no option {unknown[0]!r}; its options are {', '.join(valid)}"
        )
    missing = [k for k in valid if k in options and options[k] is None and _required(cls, k)]
    if missing:
        raise InputError(
            f"segmenter {name} needs {missing[0]}=...; set it (e.g. segmenter.{missing[0]}=PATH)"
        )
    return cls(**options)


def segmenter_from_config(config: Mapping[str, Any]) -> Segmenter:
    """`{"name": "watershed", **options}` (a `configs/segmenter/*.yaml` group) -> segmenter."""
    options = dict(config)
    if "name" not in options:
        raise InputError(f"segmenter config has no 'name'; choose one of {', '.join(SEGMENTERS)}")
    return build_segmenter(options.pop("name"), **options)


def _required(cls: type, name: str) -> bool:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
