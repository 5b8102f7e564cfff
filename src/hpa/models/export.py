"""The exported inference package `model/`: safetensors weights + JSON; loading unpickles nothing."""

from __future__ import annotations

import contextlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hpa.errors import InputError
from hpa.fsio import atomic_dir, write_json
from hpa.models.factory import create_backbone
from hpa.models.net import HPANet

FORMAT = "hpa-model/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
RECORDED_PACKAGES = ("hpa", "torch", "timm", "pytorch-lightning", "albumentations", "numpy")


def runtime_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def export_model(net: HPANet, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write `out_dir/model.safetensors` and `out_dir/config.json`, replacing any old export whole.

    `meta` must hold backbone, num_classes, in_chans, class_names, image_size; mean/std come
    from the net. Written to a temp folder first and renamed, so a crash never leaves half a model.
    """
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    config = {
        "format": FORMAT,
        **meta,
        "mean": (net.mean.flatten() / 255.0).tolist(),
        "std": (net.std.flatten() / 255.0).tolist(),
        "versions": runtime_versions(),
    }
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        write_json(tmp / CONFIG, config)
    return out_dir


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file() or not (model_dir / WEIGHTS).is_file():
        raise InputError(
            f"{model_dir} is not an exported hpa model (needs {CONFIG} and {WEIGHTS}); "
            "use the model/ folder that `python -m hpa.train` writes"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err}); re-export the model") from None
    if config.get("format") != FORMAT:
        raise InputError(
            f"{path}: format {config.get('format')!r} is not {FORMAT!r}; re-export the model"
        )
    return config


def load_exported(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[HPANet, dict[str, Any]]:
    """Rebuild the network from `model/` (no pickle, no network) in eval mode."""
    config = read_model_config(model_dir)
    backbone = create_backbone(
        config["backbone"],
        num_classes=config["num_classes"],
        in_chans=config["in_chans"],
        global_pool=config.get("global_pool"),
    )
    net = HPANet(backbone, mean=config["mean"], std=config["std"])
    try:
        state = load_file(str(Path(model_dir) / WEIGHTS), device="cpu")
        net.load_state_dict(state)
    except Exception as err:  # safetensors raises its own error types
        raise InputError(
            f"cannot load weights from {model_dir}/{WEIGHTS}: {err}; re-export the model"
        ) from None
    return net.to(device).eval(), config
