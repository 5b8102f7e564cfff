"""Build (once, then reuse) venvs shaped like Kaggle's image; make throwaway copies of them.

    python scripts/kaggle_env.py base [--image next]          # prints the cached base env's python
    python scripts/kaggle_env.py overlay DEST [--image next]  # DEST's python: a fresh env on top
    python scripts/kaggle_env.py requirements [--image next]  # the pinned list an image installs
    python scripts/kaggle_env.py python [--image next]        # the image's interpreter
    python scripts/kaggle_env.py workstation [--image next]   # what `make install KAGGLE=1` installs

Two images:
- `current` (default): Python 3.12 and exactly src/hpa/kaggle/kaggle_image.txt, today's image.
- `next`: Python 3.13 and that list with NEXT_PINS in place of its lines: the image announced
  next (torch 2.11, timm 1.0.27, OpenCV 5), so a range that would refuse it shows up now.

Each base env (torch with its CUDA wheels: about 3 GB, several minutes on first build) is
installed from wheels only (a package with no wheel for that Python fails the build by name) and
cached under `${HPA_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/hpa}/kaggle-env-<image>-<hash of its
list and interpreter>`; it is never modified after it is built, so every test run starts from the
same "fresh Kaggle notebook". An overlay is a small venv that sees the base's packages through a
.pth file and takes new installs (the bundle) itself: the base stays pristine, the overlay is
thrown away.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_LIST = ROOT / "src" / "hpa" / "kaggle" / "kaggle_image.txt"
STAMP = ".hpa-kaggle-env-complete"
REQUIREMENTS = "kaggle-image.txt"  # the list a base env was built from, kept inside it
# Published as source only (antlr4 4.9.3, what hydra-core 1.3 pins): built into a pure wheel.
SOURCE_ONLY = ("antlr4-python3-runtime",)

# The next image (issue 10): Python 3.13, torch 2.11, timm 1.0.27, opencv 5.0.0.93. The rest
# are not announced; these are the smallest moves that install on 3.13 from wheels: numpy 2.0.2
# and pandas 2.2.2 have no cp313 wheels (numpy 2.4 is also what Kaggle's own layer has at times
# pulled). OpenCV as the Colab freeze of 2026-08-19 ships it (issue 25): opencv-python and
# -headless 5.0.0.93 beside opencv-contrib-python 4.14.0.94, all writing one cv2/; the doctor
# judges that mix by what hpa does with cv2 (a WARN while every call gives its reference result).
NEXT_PINS = {
    "torch": "2.11.0",
    "torchvision": "0.26.0",  # the torchvision release paired with torch 2.11
    "timm": "1.0.27",
    "opencv-python": "5.0.0.93",
    "opencv-python-headless": "5.0.0.93",
    "opencv-contrib-python": "4.14.0.94",
    "numpy": "2.4.6",
    "pandas": "2.2.3",
}


@dataclass(frozen=True)
class Image:
    name: str
    python: str  # major.minor
    python_var: str  # environment variable that may name the interpreter
    pins: dict[str, str] = field(default_factory=dict)  # replaces kaggle_image.txt's lines

    def requirements(self) -> str:
        """kaggle_image.txt with this image's pins in place of its lines (comments kept)."""
        lines, seen = [], set()
        for line in IMAGE_LIST.read_text().splitlines():
            name = line.split("#", 1)[0].split("==", 1)[0].strip().lower()
            if name in self.pins:
                seen.add(name)
                line = f"{name}=={self.pins[name]}  # next image (scripts/kaggle_env.py)"
            lines.append(line)
        lines += [f"{n}=={v}  # next image" for n, v in self.pins.items() if n not in seen]
        return "\n".join(lines) + "\n"


IMAGES = {
    "current": Image("current", "3.12", "KAGGLE_PYTHON"),
    "next": Image("next", "3.13", "KAGGLE_NEXT_PYTHON", NEXT_PINS),
}


def cache_root() -> Path:
    if os.environ.get("HPA_CACHE_DIR"):
        return Path(os.environ["HPA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hpa"


def find_python(version: str = "3.12", variable: str = "KAGGLE_PYTHON") -> str:
    """The image's interpreter: $variable, else pyenv's newest `version`, else python`version`."""
    if os.environ.get(variable):
        return os.environ[variable]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    with contextlib.suppress(OSError):  # no pyenv on PATH
        pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots.insert(0, pyenv.stdout.strip())
    for root in filter(None, roots):
        found = glob.glob(f"{root}/versions/{version}.*/bin/python{version}")
        if found:
            return max(found, key=lambda p: [int(x) for x in Path(p).parts[-3].split(".")])
    exe = shutil.which(f"python{version}")
    if exe:
        return exe
    sys.exit(
        f"error: no Python {version} found; install one (`pyenv install {version}`) "
        f"or point {variable} at it"
    )


def env_key(python: str, requirements: str) -> str:
    """Changes whenever the package list or the interpreter does, so a stale env is never reused."""
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return hashlib.sha256(requirements.encode() + version.encode()).hexdigest()[:12]


def base_env(image: Image = IMAGES["current"]) -> Path:
    """The cached Kaggle-shaped venv, built on first use (under a lock, so parallel runs wait)."""
    python = find_python(image.python, image.python_var)
    requirements = image.requirements()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"kaggle-env-{image.name}-{env_key(python, requirements)}"
    with open(root / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / STAMP).exists():
            print(f"kaggle env: reusing {env}", file=sys.stderr)
            return env
        shutil.rmtree(env, ignore_errors=True)  # a build that died half way
        start = time.monotonic()
        print(
            f"kaggle env: building {env} ({image.name} image, Python {image.python}; "
            "first time only)",
            file=sys.stderr,
        )
        # pip's chatter goes to stderr: stdout carries only the python path this script prints.
        subprocess.run([python, "-m", "venv", str(env)], check=True, stdout=sys.stderr)
        listed = env / REQUIREMENTS
        listed.write_text(requirements)
        pip = [str(env / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, stdout=sys.stderr)
        # Wheels only: a package with no wheel for this Python is named by pip, not compiled.
        wheels_only = ["--only-binary=:all:", *(f"--no-binary={n}" for n in SOURCE_ONLY)]
        install = [*pip, "install", *wheels_only, "-r", str(listed)]
        if subprocess.run(install, stdout=sys.stderr).returncode != 0:
            sys.exit(
                f"error: the {image.name} image's list does not install on Python "
                f"{image.python} (pip's reason above); see scripts/kaggle_env.py"
            )
        (env / STAMP).write_text(f"built in {time.monotonic() - start:.0f} s\n")
        print(f"kaggle env: built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    prune_others(root, keep=env, image=image)
    return env


def prune_others(root: Path, keep: Path, image: Image) -> None:
    """Old envs of this image (an earlier package list) are several GB each and never used again;
    so are those of the one-image layout before (kaggle-env-<hash>)."""
    stale = [*root.glob(f"kaggle-env-{image.name}-*"), *root.glob("kaggle-env-" + "[0-9a-f]" * 12)]
    for old in stale:
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


def overlay(dest: Path, image: Image = IMAGES["current"]) -> Path:
    """A fresh venv at `dest` that imports the base env's packages and installs into itself."""
    base = base_env(image)
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


def listed_names(requirements: str) -> set[str]:
    return {
        line.split("#", 1)[0].split("==", 1)[0].strip().lower()
        for line in requirements.splitlines()
        if line.split("#", 1)[0].strip()
    }


def locked_dev_tools() -> list[str]:
    """The dev group of pyproject.toml at the versions poetry.lock holds (pytest, ruff, mkdocs,
    papermill, ...): the tools `make test` runs, the same in both workstation envs. The nvidia-*
    lines are lock hygiene for the lock's torch build (pyproject says why), not tools: torch's own
    requirements bring the CUDA libraries its pinned version needs."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "poetry.lock").read_text())
    versions = {p["name"].lower(): p["version"] for p in lock["package"]}
    dev = project["tool"]["poetry"]["group"]["dev"]["dependencies"]
    names = [n.lower() for n in dev if not n.lower().startswith("nvidia-")]
    missing = [n for n in names if n not in versions]
    if missing:
        sys.exit(f"error: poetry.lock lacks {', '.join(missing)}; run `make lock`")
    return [f"{n}=={versions[n]}  # poetry.lock (dev)" for n in names]


def workstation(image: Image) -> str:
    """The list `make install KAGGLE=1` installs: the image's pins, then the dev tools at their
    locked versions (a tool the image has keeps the image's version). hpa itself is installed on top with -e, so its other dependencies (hydra-core,
    pycocotools, ...) are resolved by pip under these pins."""
    pins = image.requirements()
    listed = listed_names(pins)  # the image's own papermill and ipykernel win over the lock's
    tools = [t for t in locked_dev_tools() if t.split("==", 1)[0] not in listed]
    return pins + "\n".join(tools) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser(
        "base", help="build or reuse the cached Kaggle-shaped env; print its python"
    )
    over = sub.add_parser(
        "overlay", help="make a throwaway env on top of the base; print its python"
    )
    over.add_argument("dest", type=Path)
    reqs = sub.add_parser("requirements", help="print the pinned list the image installs")
    interpreter = sub.add_parser("python", help="print the image's Python interpreter")
    desk = sub.add_parser(
        "workstation", help="print what `make install KAGGLE=1` installs (pins + dev tools)"
    )
    for command in (base, over, reqs, interpreter, desk):
        command.add_argument("--image", choices=sorted(IMAGES), default="current")
    args = parser.parse_args()
    image = IMAGES[args.image]
    if args.command == "base":
        print(base_env(image) / "bin" / "python")
    elif args.command == "overlay":
        print(overlay(args.dest.resolve(), image))
    elif args.command == "python":
        print(find_python(image.python, image.python_var))
    elif args.command == "workstation":
        print(workstation(image), end="")
    else:
        print(image.requirements(), end="")


if __name__ == "__main__":
    main()
