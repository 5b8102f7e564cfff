"""One factory over timm for every backbone: 4 input channels, multilabel head."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch.nn as nn

from hpa.errors import InputError


def _check_backbone(name: str) -> None:
    if timm.is_model(name):
        return
    known = timm.list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else "; see timm.list_models() for valid names"
    )
    raise InputError(f"unknown backbone model.backbone={name!r}{hint}")


def create_backbone(
    backbone: str,
    num_classes: int,
    in_chans: int = 4,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
    global_pool: str | None = None,
) -> nn.Module:
    """A timm model with `in_chans` inputs and a `num_classes` head.

    Pretrained weights come from timm's hub when `pretrained` (needs a network), or from a local
    file (`pretrained_path`, .safetensors/.pth/.bin) with no network; either way timm adapts the
    first convolution from RGB to `in_chans` channels and drops the ImageNet classifier.
    """
    _check_backbone(backbone)
    kwargs: dict = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": drop_rate}
    if global_pool:  # e.g. max or avgmax: small sparse patterns (a few dots in one cell) survive
        kwargs["global_pool"] = global_pool
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise InputError(
                f"model.pretrained_path={path} does not exist; give a local weights file"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    try:
        return timm.create_model(backbone, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError, ValueError) as err:
        if pretrained_path:
            raise InputError(
                f"cannot load model.pretrained_path={pretrained_path} into {backbone}: {err}"
            ) from None
        raise
