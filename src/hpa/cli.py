"""Shared plumbing of the `python -m hpa.X key=value ...` entry points (the only Hydra users)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from hpa.build import CONFIG_MODULE
from hpa.errors import InputError

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def override_problem(arg: str) -> str | None:
    """What is wrong with one `key=value` override and how to fix it; None if Hydra parses it.

    Hydra's own message quotes a fragment at a caret; this names the whole override and, when
    quoting the value would make it parse (a path with non-ASCII letters like /tmp/données,
    brackets, commas), shows the quoted form to paste into a shell.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()

    def parses(text: str) -> bool:
        try:
            parser.parse_override(text)
        except HydraException:
            return False
        return True

    if parses(arg):
        return None
    problem = f"cannot parse the override `{arg}`"
    key, sep, value = arg.partition("=")
    if sep:
        quote = "'" if '"' in value and "'" not in value else '"'
        quoted = f"{key}={quote}{value}{quote}"
        if parses(quoted):
            shell = quoted.replace("'", "'\\''")
            why = "non-ASCII characters" if not value.isascii() else "special characters"
            return f"{problem}: a value with {why} must be quoted, e.g. '{shell}'"
    return f"{problem}; Hydra's syntax is key=value ({GRAMMAR})"


def override_key(override: str) -> str:
    """`data.root=X` -> `data.root`; `+a=1`, `++a=1`, `~a` -> `a` (the key a later override replaces)."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The last value `overrides` give `key` (`key=v`, `+key=v` or `++key=v`); None if none."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) == key]
    return values[-1] if values else None


HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def print_help(config_name: str, usage: str | None = None) -> None:
    """Usage, then the command's config file itself: its comments say what every key does."""
    from importlib import resources

    text = resources.files(CONFIG_MODULE).joinpath(f"{config_name}.yaml").read_text()
    print(usage or f"usage: python -m hpa.{config_name} [key=value ...]")
    print(f"\nEvery key below can be set as key=value (hpa/configs/{config_name}.yaml):\n")
    print(text.rstrip())


def compose(
    config_name: str, overrides: Sequence[str], command: str | None = None, check: bool = True
) -> DictConfig:
    """Compose `hpa/configs/<config_name>.yaml` with overrides, then (`check`) check its values'
    types and ranges (hpa.config_check); a bad override or value becomes a one-line InputError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hpa.config_check import check_config

    if wants_help(overrides):
        print_help(config_name, f"usage: python -m hpa.{command or config_name} [key=value ...]")
        raise SystemExit(0)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(
            f"argument {bad[0]!r} is not an override; write key=value, e.g. `python -m hpa.{config_name} seed=1`"
        )
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        problem = next(filter(None, map(override_problem, overrides)), None)
        if problem is None:  # parsed, but rejected: an unknown key or option; keep it one line
            problem = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise InputError(f"config {config_name}: {problem}") from None
    try:
        if check:
            check_config(cfg, config_name)
    except InputError as err:
        raise InputError(f"config {config_name}: {err}") from None
    return cfg


def check_writable(path: str | Path, option: str) -> None:
    """InputError unless `path` (a file or folder to write, existing or not) can be written.

    Checked before the work starts, so a read-only output folder costs no time. `option` is how
    the user set `path` (e.g. `submission`, `--out`).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise InputError(f"{option}={path}: {existing} is a file, not a folder; pass another path")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(folder) else "no write permission"
        raise InputError(
            f"{option}={path}: cannot write in {folder} ({why}); pass a writable location"
        )


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
