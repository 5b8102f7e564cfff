"""One factory over timm for every backbone: 4 input channels, multilabel head."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
import torch.nn as nn

from hpa.errors import InputError


def check_backbone(name: str) -> None:
    """InputError naming the closest timm names unless `name` is a timm model."""
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
    check_backbone(backbone)
    kwargs: dict = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": drop_rate}
    if global_pool:  # e.g. max or avgmax: small sparse patterns (a few dots in one cell) survive
        # gem: timm (1.0) has no GeM pooling; its avg pooling layer is swapped below.
        kwargs["global_pool"] = "avg" if global_pool == "gem" else global_pool
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise InputError(
                f"model.pretrained_path={path} does not exist; give a local weights file"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    try:
        model = timm.create_model(backbone, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError, ValueError) as err:
        if pretrained_path:
            raise InputError(
                f"cannot load model.pretrained_path={pretrained_path} into {backbone}: {err}"
            ) from None
        raise
    return use_gem_pooling(model, backbone) if global_pool == "gem" else model


class GeM(nn.Module):
    """Generalized-mean pooling, (mean x^p)^(1/p) over H x W with a learnable p (p=1: average,
    p -> inf: max); N x C x H x W -> N x C x 1 x 1. `p` is a weight: it trains and is exported."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p)


def use_gem_pooling(model: nn.Module, backbone: str) -> nn.Module:
    """Swap the pooling of every timm SelectAdaptivePool2d (the head's global pool) for GeM."""
    from timm.layers import SelectAdaptivePool2d

    pools = [m for m in model.modules() if isinstance(m, SelectAdaptivePool2d)]
    if not pools or any(getattr(m.pool, "dim", (2, 3)) != (2, 3) for m in pools):
        raise InputError(
            f"model.global_pool=gem: {backbone} has no channels-first timm pooling layer to "
            "replace; use model.global_pool=null (or avg/max) with this backbone"
        )
    for sap in pools:
        flat = isinstance(sap.flatten, nn.Flatten) or bool(getattr(sap.pool, "flatten", False))
        sap.pool = GeM()
        sap.flatten = nn.Flatten(1) if flat else nn.Identity()
        sap.pool_type = "gem"
    return model
