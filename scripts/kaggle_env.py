"""Build (once, then reuse) a Python 3.12 venv shaped like Kaggle's image; make throwaway copies.

    python scripts/kaggle_env.py base             # prints the cached base env's python
    python scripts/kaggle_env.py overlay DEST     # prints DEST's python: a fresh env on top of it

The base env holds exactly src/hpa/kaggle/kaggle_image.txt (torch 2.10 with its CUDA wheels:
about 3 GB, several minutes on first build). It is cached under
`${HPA_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/hpa}/kaggle-env-<hash of that list>` and never
modified after it is built, so every test run starts from the same "fresh Kaggle notebook".
An overlay is a small venv that sees the base's packages through a .pth file and takes new
installs (the bundle) itself: the Kaggle image stays pristine and the overlay is thrown away.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_LIST = ROOT / "src" / "hpa" / "kaggle" / "kaggle_image.txt"
PYTHON_VERSION = "3.12"
STAMP = ".hpa-kaggle-env-complete"


def cache_root() -> Path:
    if os.environ.get("HPA_CACHE_DIR"):
        return Path(os.environ["HPA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hpa"


def find_python() -> str:
    """Kaggle's interpreter version: $KAGGLE_PYTHON, else pyenv's newest 3.12, else python3.12."""
    if os.environ.get("KAGGLE_PYTHON"):
        return os.environ["KAGGLE_PYTHON"]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    with contextlib.suppress(OSError):  # no pyenv on PATH
        pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots.insert(0, pyenv.stdout.strip())
    for root in filter(None, roots):
        found = glob.glob(f"{root}/versions/{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}")
        if found:
            return max(found, key=lambda p: [int(x) for x in Path(p).parts[-3].split(".")])
    exe = shutil.which(f"python{PYTHON_VERSION}")
    if exe:
        return exe
    sys.exit(
        f"error: no Python {PYTHON_VERSION} found; install one (`pyenv install {PYTHON_VERSION}`) "
        "or point KAGGLE_PYTHON at it"
    )


def env_key(python: str) -> str:
    """Changes whenever the package list or the interpreter does, so a stale env is never reused."""
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return hashlib.sha256(IMAGE_LIST.read_bytes() + version.encode()).hexdigest()[:12]


def base_env() -> Path:
    """The cached Kaggle-shaped venv, built on first use (under a lock, so parallel runs wait)."""
    python = find_python()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"kaggle-env-{env_key(python)}"
    with open(root / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / STAMP).exists():
            print(f"kaggle env: reusing {env}", file=sys.stderr)
            return env
        shutil.rmtree(env, ignore_errors=True)  # a build that died half way
        start = time.monotonic()
        print(
            f"kaggle env: building {env} from {IMAGE_LIST.name} (first time only)", file=sys.stderr
        )
        # pip's chatter goes to stderr: stdout carries only the python path this script prints.
        subprocess.run([python, "-m", "venv", str(env)], check=True, stdout=sys.stderr)
        pip = [str(env / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, stdout=sys.stderr)
        subprocess.run([*pip, "install", "-r", str(IMAGE_LIST)], check=True, stdout=sys.stderr)
        (env / STAMP).write_text(f"built in {time.monotonic() - start:.0f} s\n")
        print(f"kaggle env: built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    prune_others(root, keep=env)
    return env


def prune_others(root: Path, keep: Path) -> None:
    """Old envs (an earlier package list) are several GB each and never used again."""
    for old in root.glob("kaggle-env-*"):
        if old.is_dir() and old != keep:
            shutil.rmtree(old, ignore_errors=True)
            (root / f"{old.name}.lock").unlink(missing_ok=True)


def site_packages(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def overlay(dest: Path) -> Path:
    """A fresh venv at `dest` that imports the base env's packages and installs into itself."""
    base = base_env()
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(
        [str(base / "bin" / "python"), "-m", "venv", "--without-pip", str(dest)], check=True
    )
    python = dest / "bin" / "python"
    # addsitedir (not a bare path) so the base's own .pth files are processed too.
    base_site = site_packages(base / "bin" / "python")
    pth = Path(site_packages(python)) / "_kaggle_image.pth"
    pth.write_text(f"import site; site.addsitedir({base_site!r})\n")
    return python


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base", help="build or reuse the cached Kaggle-shaped env; print its python")
    over = sub.add_parser(
        "overlay", help="make a throwaway env on top of the base; print its python"
    )
    over.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.command == "base":
        print(base_env() / "bin" / "python")
    else:
        print(overlay(args.dest.resolve()))


if __name__ == "__main__":
    main()
