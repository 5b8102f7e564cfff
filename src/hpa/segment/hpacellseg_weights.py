"""hpacellseg's weight files: whole pickled models, read only from local files the user names.

Unpickling runs code named in the file, so `load_model` is only called after the user opted in
(`allow_pickle=true`). Before that, `pickled_globals` reads which classes a file refers to
without running anything, so a missing `pytorch_zoo` is named up front, by the doctor as well.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import pickletools
import sys
import zipfile
from pathlib import Path
from typing import Any

from hpa.errors import InputError

log = logging.getLogger("hpa.segment")

WEIGHT_FILES = "dpn_unet_nuclei_v1.pth and dpn_unet_cell_3ch_v1.pth"
ZOO_SOURCE = (
    "its model classes come from pytorch_zoo on GitHub (haoxusci/pytorch_zoo: pip install "
    "--no-deps https://github.com/haoxusci/pytorch_zoo/archive/master.zip), not from the "
    "unrelated 'pytorch-zoo' on PyPI"
)
# Modules whose classes any torch.save'd model refers to.
_STANDARD = ("torch", "collections", "builtins", "__builtin__", "copyreg", "_codecs", "numpy")
_LEGACY_PICKLES = 4  # torch's pre-1.6 format: magic number, protocol, sys info, then the object


def local_file(name: str, value: Any) -> Path:
    """The weight file `value` as a local path, or InputError: hpa never downloads weights."""
    text = str(value)
    if "://" in text:
        raise InputError(
            f"hpacellseg {name}={text} is a URL; hpa never downloads weights: download "
            f"{WEIGHT_FILES} yourself and give their local paths"
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(
            f"hpacellseg {name} {path} does not exist; download {WEIGHT_FILES} yourself "
            "(Zenodo record 4665863, or a Kaggle data set) and point nuclei_model / cell_model "
            "at them"
        )
    return path


def pickled_globals(path: Path) -> set[tuple[str, str]]:
    """(module, name) of every class or function the pickle in a torch file refers to.

    Read with pickletools, which parses opcodes and executes nothing. Raises ValueError for a
    file that is neither torch's zip format nor its older plain-pickle format.
    """
    found: set[tuple[str, str]] = set()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not members:
                raise ValueError("a zip file without data.pkl")
            for member in members:
                _scan(io.BytesIO(archive.read(member)), found)
        return found
    with open(path, "rb") as stream:
        for _ in range(_LEGACY_PICKLES):
            _scan(stream, found)
    return found


def _scan(stream: io.IOBase, found: set[tuple[str, str]]) -> None:
    strings: list[Any] = []  # recent pushes, for STACK_GLOBAL (protocol 4+)
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST"):
                module, name = arg.split(" ", 1)
                found.add((module, name))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add((str(strings[-2]), str(strings[-1])))
            elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif opcode.name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            else:
                strings.append(arg if isinstance(arg, str) else None)
            del strings[:-2]
    except Exception as err:  # pickletools raises ValueError, struct.error, EOFError, ...
        raise ValueError(f"not a pickle ({type(err).__name__}: {err})") from None


def missing_classes(path: Path) -> list[str]:
    """One line per module or class the file needs that cannot be imported here ([] if none).

    Imports the installed modules a file names (never the file's own code) to find its classes.
    """
    try:
        names = pickled_globals(path)
    except (OSError, ValueError) as err:
        return [f"{path} is not a torch model file ({err}); re-download the hpacellseg weights"]
    problems = []
    for module, name in sorted(names):
        if module.split(".")[0] in _STANDARD:
            continue
        problem = _import_problem(module, name)
        if problem:
            problems.append(f"{path} needs {problem}{_zoo_hint(module)}")
    return problems


def _import_problem(module: str, name: str) -> str | None:
    """Why `module.name` cannot be imported here, or None when it can."""
    package = module.split(".")[0]
    if not _findable(module):
        if package != module and _findable(package):
            return (
                f"the module {module!r} (for {name}), which the installed {package} lacks "
                "(a different package of the same name?)"
            )
        return f"the module {module!r} (for {name}), which is not installed"
    try:
        target: Any = importlib.import_module(module)
    except Exception as err:
        return (
            f"the module {module!r} (for {name}), whose import fails ({type(err).__name__}: {err})"
        )
    for part in name.split("."):
        if not hasattr(target, part):
            return f"{module}.{name}, which the installed {module} lacks"
        target = getattr(target, part)
    return None


def _findable(module: str) -> bool:
    if module in sys.modules:  # imported already: also __main__, which has no spec
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or not a package
        return False


def _zoo_hint(module: str) -> str:
    return f"; {ZOO_SOURCE}" if module.split(".")[0] == "pytorch_zoo" else ""


def load_model(name: str, path: Path, device: str) -> Any:
    """Unpickle a whole torch model (the caller checked the user opted in), mapped to `device`."""
    import torch

    problems = missing_classes(path)
    if problems:
        raise InputError(f"cannot load hpacellseg {name}: {problems[0]}")
    try:
        model = torch.load(path, map_location=torch.device(device), weights_only=False)
    except ModuleNotFoundError as err:  # imported by a module the file names
        module = err.name or str(err)
        raise InputError(
            f"cannot unpickle {path}: it needs the module {module!r}{_zoo_hint(module)}"
        ) from None
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise InputError(
            f"cannot load {path} as a pickled torch model ({type(err).__name__}: {err}); "
            "re-download the hpacellseg weights"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"{path} holds a {type(model).__name__}, not a whole torch model; hpacellseg needs "
            f"the pickled models {WEIGHT_FILES} as published"
        )
    return model


def resolve_device(device: str) -> str:
    """'auto' -> cuda when there is a GPU; cuda without one -> cpu, with a warning."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("segmenter hpacellseg: device=%s but no GPU is available; using cpu", device)
        return "cpu"
    return device
