"""The exported inference package `model/`: safetensors weights + JSON; loading unpickles nothing."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hpa.errors import InputError
from hpa.fsio import atomic_dir, verify_checksum, write_checksum, write_json
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
        os.chmod(tmp / WEIGHTS, _FILE_MODE)  # safetensors writes 0600; every other file is 0644
        write_checksum(tmp / WEIGHTS)  # checked at every load (load_exported)
        write_json(tmp / CONFIG, config)
    return out_dir


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


def model_checksums(model_dir: str | Path) -> dict[str, str]:
    """sha256 of the files that make the model: what a resumed prediction must still be using."""
    from hpa.fsio import file_checksum

    model_dir = Path(model_dir)
    return {name: file_checksum(model_dir / name) for name in (CONFIG, WEIGHTS)}


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
    weights = Path(model_dir) / WEIGHTS
    verify_checksum(weights, "model")  # damaged since export: one line, not garbage outputs
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as err:  # safetensors raises its own error types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"cannot load weights from {weights}: {first}; re-export the model"
        ) from None
    problem = state_mismatch(net.state_dict(), state)
    if problem:
        raise InputError(
            f"{model_dir}: {CONFIG} and {WEIGHTS} disagree ({problem}; {CONFIG} says backbone "
            f"{config['backbone']!r}, {config['num_classes']} classes); re-export the model"
        )
    net.load_state_dict(state)
    return net.to(device).eval(), config


def state_mismatch(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str | None:
    """The first difference between the weights a config builds and the weights on disk, named
    by its key; None when they fit."""
    missing = [k for k in ours if k not in theirs]
    if missing:
        return f"weight {missing[0]} is missing" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        )
    extra = [k for k in theirs if k not in ours]
    if extra:
        return f"weight {extra[0]} is not in the model" + (
            f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        )
    for key, value in ours.items():
        if tuple(value.shape) != tuple(theirs[key].shape):
            return (
                f"weight {key} is {tuple(theirs[key].shape)} on disk, the model needs "
                f"{tuple(value.shape)}"
            )
    return None
