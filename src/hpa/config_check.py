"""Types and ranges of config values, checked once on the composed config of every command.

Hydra composes `data.image_size=abc` without complaint (it is a string then), so a wrong type
would otherwise surface deep inside a run as a traceback. `check_config(cfg, command)` looks at
the keys the command's rules name and raises InputError for the first bad one, naming the key,
the value and what is expected. `hpa.cli.compose` calls it for every command it composes; the
train entry point calls `check_config(cfg, "train")` itself. Keys a config does not have are
skipped (a rule may cover an optional key, e.g. data.cells_per_image of data=cells); so are
required values still unset (`???`: the command says which it needs) and interpolations that
cannot be resolved here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpa.errors import InputError
from hpa.tta_names import ALIASES, TRANSFORMS, transform_names


@dataclass(frozen=True)
class Rule:
    """What a value must be: `accepts(value)` and the words for it (`expected`)."""

    expected: str
    accepts: Callable[[Any], bool]
    nullable: bool = False

    def ok(self, value: Any) -> bool:
        return (value is None and self.nullable) or (value is not None and self.accepts(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _or_null(text: str, nullable: bool) -> str:
    return f"{text} or null" if nullable else text


def integer(
    min: int | None = None, max: int | None = None, also: tuple[int, ...] = (), nullable=False
) -> Rule:
    """A whole number in [min, max] (either end open when None), or one of `also`."""
    if min is not None and max is not None:
        words = f"an integer from {min} to {max}"
    elif min is not None:
        words = f"an integer >= {min}"
    elif max is not None:
        words = f"an integer <= {max}"
    else:
        words = "an integer"
    if also:
        words += f" (or {', '.join(map(str, also))})"

    def accepts(v: Any) -> bool:
        if not _is_int(v):
            return False
        in_range = (min is None or v >= min) and (max is None or v <= max)
        return in_range or v in also

    return Rule(_or_null(words, nullable), accepts, nullable)


def number(
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    nullable: bool = False,
) -> Rule:
    """A finite number (an integer will do) above `gt`/from `ge`, below `lt`/up to `le`."""
    low = (gt, "(", ">") if gt is not None else (ge, "[", ">=") if ge is not None else None
    high = (lt, ")", "<") if lt is not None else (le, "]", "<=") if le is not None else None
    if low and high:
        words = f"a number in {low[1]}{low[0]}, {high[0]}{high[1]}"
    elif low:
        words = f"a number {low[2]} {low[0]}"
    elif high:
        words = f"a number {high[2]} {high[0]}"
    else:
        words = "a number"

    def accepts(v: Any) -> bool:
        return (
            _is_number(v)
            and (gt is None or v > gt)
            and (ge is None or v >= ge)
            and (lt is None or v < lt)
            and (le is None or v <= le)
        )

    return Rule(_or_null(words, nullable), accepts, nullable)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def choice(*options: Any, nullable: bool = False) -> Rule:
    words = "one of " + ", ".join(map(str, options))
    return Rule(_or_null(words, nullable), lambda v: v in options and type(v) is not bool, nullable)


def text(nullable: bool = False) -> Rule:
    return Rule(
        _or_null("a non-empty text", nullable), lambda v: isinstance(v, str) and bool(v), nullable
    )


def int_list(min: int | None = None, length: int | None = None) -> Rule:
    """A list of integers (each >= min), of exactly `length` items when given."""
    item = integer(min)
    words = f"a list of {length or ''} integers".replace("  ", " ")
    if min is not None:
        words += f" >= {min}"

    def accepts(v: Any) -> bool:
        if not isinstance(v, (list, tuple, ListConfig)):
            return False
        return (length is None or len(v) == length) and all(item.ok(x) for x in v)

    return Rule(words, accepts)


def number_list(ge: float, le: float) -> Rule:
    """A non-empty list of numbers in [ge, le]."""
    item = number(ge=ge, le=le)

    def accepts(v: Any) -> bool:
        return isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(map(item.ok, v))

    return Rule(f"a non-empty list of numbers in [{ge}, {le}]", accepts)


# The data keys training reads; prepare and bench read the image ones only.
_TRAIN: dict[str, Rule] = {
    "seed": integer(),
    "threads": integer(min=1, nullable=True),
    "data.image_size": integer(min=32),
    "data.batch_size": integer(min=1),
    "data.num_workers": integer(min=0),
    "data.fold": integer(min=0),
    "data.n_folds": integer(min=2),
    "data.fold_seed": integer(),
    "data.pin_memory": boolean(),
    "data.persistent_workers": boolean(),
    "data.cell_margin": number(ge=0),
    "data.cells_per_image": integer(min=1, nullable=True),
    "data.cell_masks": choice("auto", "masks", "segmenter"),
    "data.sampler": choice("balanced", nullable=True),
    "data.sampler_cap": number(ge=1, nullable=True),
    "data.negative_aug.p": number(ge=0, le=1),
    "data.negative_aug.scale": number(ge=0, le=1),
    "data.cell_targets": text(nullable=True),
    "model.backbone": text(),
    "model.pretrained": boolean(),
    "model.drop_rate": number(ge=0, lt=1),
    "model.in_chans": integer(min=1),
    "model.channels_last": boolean(),
    "model.compile": boolean(),
    "model.cam.puzzle_weight": number(ge=0),
    "model.cam.tiles": integer(min=2),
    "model.mil.pool": choice("attention", "lse", "max", "mean"),
    "model.mil.attention_dim": integer(min=1),
    "model.mil.lse_r": number(gt=0),
    "trainer.max_epochs": integer(min=1, also=(-1,)),
    "trainer.num_nodes": integer(min=1),
    "trainer.accumulate_grad_batches": integer(min=1),
    "trainer.log_every_n_steps": integer(min=1),
    "trainer.num_sanity_val_steps": integer(min=-1),
    "trainer.gradient_clip_val": number(ge=0, nullable=True),
    "optimizer.lr": number(gt=0),
    "optimizer.weight_decay": number(ge=0),
    "scheduler.warmup_epochs": number(ge=0),
    "scheduler.min_lr_ratio": number(ge=0, le=1),
    "mix.mixup_alpha": number(ge=0),
    "mix.cutmix_alpha": number(ge=0),
    "mix.prob": number(ge=0, le=1),
    "loss.pos_weight": Rule(
        "null, auto or a list of 19 positive numbers",
        lambda v: (
            v == "auto"
            or (
                isinstance(v, (list, tuple, ListConfig))
                and len(v) == 19
                and all(_is_number(x) and x > 0 for x in v)
            )
        ),
        nullable=True,
    ),
    "loss.pos_weight_max": number(ge=1),
    "loss.label_smoothing": number(ge=0, lt=1),
    "model.global_pool": choice("avg", "max", "avgmax", "catavgmax", "gem", nullable=True),
    "tune": boolean(),
    "export": boolean(),
    "report": boolean(),
}


def _tta_ok(value: Any) -> bool:
    try:  # transform_names takes a ListConfig as it takes a list
        transform_names(value)
    except InputError:
        return False
    return True


RULES: dict[str, dict[str, Rule]] = {
    "train": _TRAIN,
    "prepare": {
        "data.image_size": integer(min=8),
        "prepare.workers": integer(min=1, nullable=True),
    },
    "bench": {
        "data.image_size": integer(min=8),
        "data.batch_size": integer(min=1),
        "bench.workers": int_list(min=0),
        "bench.batch_size": integer(min=1, nullable=True),
        "bench.raw_batches": integer(min=1),
        "bench.cache_batches": integer(min=1),
        "bench.max_samples": integer(min=1),
        "bench.single_reps": integer(min=1),
        "bench.prepare": boolean(),
    },
    "predict": {
        "batch_size": integer(min=1),
        "threads": integer(min=1, nullable=True),
        "image_model_on_cells": boolean(),
        "image_model_crop": choice("native", "fill"),
        "image_model_cells": choice("crops", "cam"),
        "cell_margin": number(ge=0),
        "combine.method": choice("power", "product", "mean"),
        "combine.cell_weight": number(ge=0, le=1),
        "downweight.border": number(ge=0),
        "downweight.small": number(ge=0),
        "downweight.small_fraction": number(ge=0),
        "downweight.area.border": number(ge=0, nullable=True),
        "downweight.area.interior": number(ge=0, nullable=True),
        "downweight.area.reference_size": number(gt=0),
        "tta": Rule(
            f"d4, a count 1-{len(TRANSFORMS)} or a list of {', '.join([*TRANSFORMS, *ALIASES])}",
            _tta_ok,
        ),
        "tta_scales": number_list(ge=0.25, le=4),
        "min_confidence": number(ge=0, le=1),
        "ensemble": text(nullable=True),
        "resume": boolean(),
        "progress": boolean(),
    },
    "ensemble": {
        "mode": choice("weights", "area"),
        "step": number(gt=0, le=0.5),
        "passes": integer(min=1),
        "min_gain": number(ge=0),
        "cell_weights": number_list(ge=0, le=1),
        "iou_threshold": number(gt=0.5, le=1),
        "area.reference_size": number(gt=0),
        "progress": boolean(),
    },
    "evaluate": {
        "iou_threshold": number(gt=0.5, le=1),
        "progress": boolean(),
    },
    "show": {
        "size": integer(min=64),
        "top": integer(min=1),
        "iou_threshold": number(gt=0.5, le=1),
        "progress": boolean(),
    },
    "synthetic": {
        "n_images": integer(min=1),
        "seed": integer(),
        "image_size": integer(min=64),
        "bit_depth": choice(8, 16),
        "cells_per_image": int_list(min=1, length=2),
        "skew": number(ge=0),
        "noise": number(ge=0),
        "blur": number(ge=0),
        "split": text(),
        "workers": integer(min=1, nullable=True),
        "non_expressing": number(ge=0, le=1),
        "negative_cells": number(ge=0, le=1),
        "border_truth": boolean(),
    },
    "benchmark": {
        "markdown": boolean(),
        "progress": boolean(),
        "rare_classes": int_list(min=0),
        "timeout_s": number(gt=0),
        "seeds": int_list(min=0),
    },
    "external": {
        "size": integer(min=16, nullable=True),
        "format": choice("png", "jpg"),
        "png_compression": integer(min=0, max=9),
        "jpg_quality": integer(min=0, max=100),
        "progress": boolean(),
        "download.workers": integer(min=1),
        "download.retries": integer(min=0),
        "download.timeout_s": number(gt=0),
        "download.deadline_s": number(gt=0),
        "download.backoff_s": number(ge=0),
        "download.max_backoff_s": number(ge=0),
        "download.limit": integer(min=1, nullable=True),
        "convert2018.workers": integer(min=1),
    },
    "pseudo": {
        "alpha": number(ge=0, le=1),
        "floor": number(ge=0, le=1),
        "oof": text(nullable=True),
        "out": text(nullable=True),
        "truth": text(nullable=True),
    },
    "segment_check": {
        "limit": integer(min=1, nullable=True),
        "iou_threshold": number(gt=0, le=1),
    },
}

_ABSENT = object()


def _lookup(cfg: DictConfig, key: str) -> Any:
    """The resolved value at dotted `key`; _ABSENT when there is none to check."""
    node: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return _ABSENT
        try:
            node = node[part]
        except OmegaConfBaseException:
            return _ABSENT
    last = parts[-1]
    if not isinstance(node, DictConfig) or last not in node or OmegaConf.is_missing(node, last):
        return _ABSENT
    try:
        value = node[last]
    except OmegaConfBaseException:  # an interpolation only the running app resolves
        return _ABSENT
    return value


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value, resolve=False))
    return repr(value) if isinstance(value, str) else str(value)


def problems(cfg: DictConfig, rules: Mapping[str, Rule]) -> list[str]:
    """One message per key whose value breaks its rule, in the rules' order."""
    found = []
    for key, rule in rules.items():
        value = _lookup(cfg, key)
        if value is not _ABSENT and not rule.ok(value):
            found.append(f"{key}={_show(value)} is not valid: use {rule.expected}")
    return found


def check_config(cfg: DictConfig, command: str) -> None:
    """InputError naming the first key of `cfg` whose value has the wrong type or range.

    `command` is the config name (train, prepare, bench, predict, evaluate, synthetic,
    external, segment_check); one without rules passes.
    """
    found = problems(cfg, RULES.get(command, {}))
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise InputError(f"{found[0]}{more}; fix the override or the config that sets it")


__all__ = ["RULES", "Rule", "check_config", "problems"]
