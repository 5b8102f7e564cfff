"""Wheels for Kaggle: hpa's own, and every dependency Kaggle's image lacks, for its platform."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from hpa.errors import InputError
from hpa.kaggle.image import MARKERS, PLATFORMS, PYTHON, target_tags

# Built into hpa's wheel from src/hpa/configs; without it no entry point composes a config.
CONFIG_IN_WHEEL = "hpa/configs/train.yaml"


class BundleError(RuntimeError):
    """The bundle cannot be made as asked (a dependency has no wheel for Kaggle, a conflict)."""


def project_root() -> Path:
    """The source tree hpa was imported from (bundle builds the wheel from source, not a copy)."""
    import hpa

    root = Path(hpa.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "hpa").is_dir():
        raise InputError(
            f"hpa was imported from {Path(hpa.__file__).parent}, not from a clone of the repository; "
            "run `python -m hpa.kaggle bundle` from the project's .venv (make install)"
        )
    return root


def _pythons_with_poetry_core(root: Path) -> Iterable[str]:
    """This interpreter, then the Makefile's Poetry tool env (.tools/), which always has it."""
    yield sys.executable
    tools = root / ".tools" / "bin" / "python"
    if tools.exists():
        yield str(tools)


def build_hpa_wheel(root: Path, dest: Path) -> Path:
    """Build hpa's wheel with poetry-core (no network when it is at hand) and check its configs."""
    dest.mkdir(parents=True, exist_ok=True)
    snippet = (
        "import os, sys; os.chdir(sys.argv[1]); "
        "from poetry.core.masonry.api import build_wheel; print(build_wheel(sys.argv[2]))"
    )
    for python in _pythons_with_poetry_core(root):
        done = subprocess.run(
            [python, "-c", snippet, str(root), str(dest)], capture_output=True, text=True
        )
        if done.returncode == 0:
            wheel = dest / done.stdout.strip().splitlines()[-1]
            break
        if "No module named 'poetry'" not in done.stderr:
            raise BundleError(f"building hpa's wheel failed:\n{done.stderr.strip()}")
    else:  # isolated build: pip fetches poetry-core from the index
        run_pip(["wheel", "--no-deps", "-w", str(dest), str(root)])
        wheel = next(dest.glob("hpa-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        if CONFIG_IN_WHEEL not in zf.namelist():
            raise BundleError(
                f"{wheel.name} lacks {CONFIG_IN_WHEEL}: the packaged configs are missing"
            )
    return wheel


def run_pip(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BundleError(f"pip {' '.join(args)} failed:\n{done.stderr.strip()[-2000:]}")
    return done


def wheel_requirements(wheel: Path, extras: Iterable[str] = ()) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on Kaggle (markers evaluated for cp312 Linux)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    wanted = [""] + sorted(extras)
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return [
        r
        for r in reqs
        if r.marker is None or any(r.marker.evaluate({**MARKERS, "extra": e}) for e in wanted)
    ]


def fits_kaggle(wheel: Path) -> bool:
    _, _, _, tags = parse_wheel_filename(wheel.name)
    return bool(tags & target_tags())


@dataclass
class PipFetcher:
    """Downloads one requirement's wheel for Kaggle's platform with pip (no dependencies).

    `index_args` go to every pip call (tests point them at a local folder with --no-index);
    `build_args` to `pip wheel`, used for a dependency published only as source.
    """

    index_args: list[str] = field(default_factory=list)
    build_args: list[str] = field(default_factory=list)

    def __call__(self, req: Requirement, dest: Path) -> Path:
        spec = f"{req.name}{req.specifier}"
        major, minor = PYTHON
        target = [
            f"--python-version={major}.{minor}",
            "--implementation=cp",
            f"--abi=cp{major}{minor}",
        ]
        target += [f"--platform={p}" for p in PLATFORMS]
        with tempfile.TemporaryDirectory() as tmp:
            download = ["download", "--no-deps", "--only-binary=:all:", *target, "-d", tmp]
            try:
                run_pip([*download, *self.index_args, spec])
            except BundleError:
                # No binary for Kaggle (antlr4 4.9.3 is source only): build one here; only a
                # pure-Python result is usable there.
                run_pip(["wheel", "--no-deps", "-w", tmp, *self.index_args, *self.build_args, spec])
            wheel = next(Path(tmp).glob("*.whl"))
            if not fits_kaggle(wheel):
                raise BundleError(
                    f"{spec}: no wheel for Kaggle's platform (cp{major}{minor} manylinux x86_64), and "
                    f"its source builds {wheel.name}, which only runs here"
                )
            dest.mkdir(parents=True, exist_ok=True)
            return Path(shutil.copy2(wheel, dest / wheel.name))


Fetcher = Callable[[Requirement, Path], Path]

# Wheels a bundle carries to be installed with `pip install --no-deps` (hpacellseg: its metadata
# names opencv-python, which would sit beside opencv-python-headless, and pytorch_zoo by a URL).
# Listed one per line in this file of the bundle; the inference notebook installs them.
NO_DEPS_LIST = "no-deps.txt"
HPACELLSEG_WHEELS = "hpacellseg-*.whl"
HPACELLSEG_SOURCE = (
    "pip wheel --no-deps -w DIR https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/"
    "7b6dbc635253f08d392c96269e03149e2fb785c2.zip (release 0.1.8)"
)


def default_hpacellseg_wheel(root: Path | None = None) -> Path:
    """The hpacellseg wheel in ../shared/wheels beside the checkout, or InputError saying how to
    make one."""
    folder = (root or project_root()).parent / "shared" / "wheels"
    found = sorted(folder.glob(HPACELLSEG_WHEELS))
    if not found:
        raise InputError(
            f"--with-hpacellseg: no {HPACELLSEG_WHEELS} in {folder}; give the wheel's path "
            f"(--with-hpacellseg FILE), e.g. one built with `{HPACELLSEG_SOURCE}`"
        )
    return found[-1]


def check_no_deps_wheel(path: Path, option: str) -> Path:
    """`path` if it is a wheel that installs on Kaggle, else InputError naming it."""
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file; give the path of a .whl file")
    try:
        name, _, _, _ = parse_wheel_filename(path.name)
    except ValueError:
        raise InputError(
            f"{option} {path}: not a wheel file name (NAME-VERSION-TAGS.whl)"
        ) from None
    if not zipfile.is_zipfile(path):
        raise InputError(f"{option} {path}: not a readable wheel (zip); build or download it again")
    if not fits_kaggle(path):
        raise InputError(
            f"{option} {path.name}: not for Kaggle's platform (CPython {PYTHON[0]}.{PYTHON[1]}, "
            f"manylinux x86_64); give a pure-Python (py3-none-any) wheel of {name}"
        )
    return path


def missing_wheels(
    requirements: Iterable[Requirement],
    image: dict[NormalizedName, Version],
    fetch: Fetcher,
    dest: Path,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Fetch the wheels that `requirements` need on top of Kaggle's `image`, dependencies included.

    `requirements` apply on Kaggle already (see `wheel_requirements`).
    A requirement that Kaggle's version does not meet is an error, not a wheel to bundle:
    installing it would replace a library the notebook has already imported.
    """
    queue = [(req, "hpa") for req in requirements]
    fetched: dict[NormalizedName, tuple[Path, Version]] = {}
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        have = image.get(name) or (fetched[name][1] if name in fetched else None)
        if have is not None:
            if not req.specifier.contains(have, prereleases=True):
                where = "Kaggle's image has" if name in image else "the bundle already holds"
                raise BundleError(
                    f"{parent} needs {req}, but {where} {name} {have}; widen the range in "
                    "pyproject.toml or update src/hpa/kaggle/kaggle_image.txt to the current image"
                )
            continue
        wheel = fetch(req, dest)
        fetched[name] = (wheel, parse_wheel_filename(wheel.name)[1])
        log(f"  {wheel.name}  (for {parent}: {req})")
        queue.extend((dep, name) for dep in wheel_requirements(wheel, req.extras))
    return [wheel for wheel, _ in fetched.values()]
