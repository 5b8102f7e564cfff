"""Shared plumbing of the `python -m hpa.X key=value ...` entry points (the only Hydra users)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from omegaconf import DictConfig

from hpa.errors import InputError

CONFIG_MODULE = "hpa.configs"


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose `hpa/configs/<config_name>.yaml` with overrides; bad overrides become InputError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(
            f"argument {bad[0]!r} is not an override; write key=value, e.g. `python -m hpa.{config_name} seed=1`"
        )
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"config {config_name}: {err}".strip()) from None


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
