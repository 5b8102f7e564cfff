"""The doctor for when hpa is not installed: why `pip install hpa` fails here, package by package.

    python hpa_doctor.py [--bundle DIR] [--json]      # DIR: the bundle folder (default: this file's)
    python -m hpa.doctor_standalone --bundle DIR      # the same, where hpa is importable

Uses only the standard library and `packaging` (or the copy vendored inside pip), never hpa
itself, so the bundle can ship this file beside its wheels (as `hpa_doctor.py`) and a notebook
can run it when the offline install failed. It reads hpa's wheel in DIR (Requires-Dist,
Requires-Python and the packaged hpa/kaggle/kaggle_image.txt) and prints one line per check,
like `python -m hpa.doctor`:

- Python against hpa's Requires-Python;
- every requirement, followed through the bundle's own wheels: the version installed here, the
  range needed, and whether a wheel in DIR fits this interpreter and that range (FAIL when
  neither the installed version nor a bundled wheel does: that is what stops pip);
- the running image's build, where the image records it (Kaggle's docker-python writes
  /etc/build_date and /etc/git_commit and sets BUILD_DATE, GIT_COMMIT; Colab's base sets
  COLAB_RELEASE_TAG), and every installed version that differs from kaggle_image.txt (INFO, or
  WARN on a Kaggle image: never a FAIL by itself).

Exit status 1 when something above FAILs, 2 when DIR holds no hpa wheel, else 0.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import platform
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare interpreter: pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import InvalidVersion, Version

IMAGE_IN_WHEEL = "hpa/kaggle/kaggle_image.txt"
# Where Kaggle's docker-python records its build (Dockerfile.tmpl: ENV and files under /etc, from
# `./build --build-arg BUILD_DATE=$(date +%Y%m%d-%H%M%S) --build-arg GIT_COMMIT=...`), and the
# tag of the Colab runtime it is built on. HPA_IMAGE_ROOT moves /etc (tests use a fake one).
BUILD_FILES = {"build_date": "etc/build_date", "git_commit": "etc/git_commit"}
BUILD_VARS = {"build_date": "BUILD_DATE", "git_commit": "GIT_COMMIT", "colab": "COLAB_RELEASE_TAG"}
ROOT_VAR = "HPA_IMAGE_ROOT"
REBUILD = (
    "update src/hpa/kaggle/kaggle_image.txt to this image, widen pyproject.toml's range if hpa "
    "works with it, rebuild and re-upload the bundle (docs/kaggle.md: When Kaggle's image changes)"
)

VersionOf = Callable[[str], "str | None"]


@dataclass
class Check:
    status: str  # OK | INFO | WARN | FAIL
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.message}"
        return f"{text}: {self.fix}" if self.fix else text


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def spec_text(specifier: SpecifierSet) -> str:
    """`>=2.0,<3` (lower bound first, as people write it) rather than packaging's sorted order."""
    return ",".join(sorted((str(s) for s in specifier), key=lambda s: (not s.startswith(">"), s)))


# --- the image: its build and how far what is installed drifted from kaggle_image.txt -------


def image_build(
    environ: Mapping[str, str] | None = None, root: str | Path | None = None
) -> dict[str, str]:
    """What the running image says about its build: {build_date, git_commit, colab, source}.

    Files under `root` (default $HPA_IMAGE_ROOT or /) first, then environment variables; the
    Dockerfile's default value `unknown` counts as not recorded. Empty dict: nothing recorded.
    """
    environ = os.environ if environ is None else environ
    root = Path(root if root is not None else environ.get(ROOT_VAR) or "/")
    found, sources = {}, []
    for key, rel in BUILD_FILES.items():
        try:
            value = (root / rel).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value and value != "unknown":
            found[key] = value
            sources.append(str(root / rel))
    for key, var in BUILD_VARS.items():
        value = environ.get(var, "").strip()
        if key not in found and value and value != "unknown":
            found[key] = value
            sources.append(f"${var}")
    if found:
        found["source"] = ", ".join(sources)
    return found


def on_kaggle(environ: Mapping[str, str] | None = None, root: str | Path = "/") -> bool:
    """A Kaggle notebook: the image's /etc build files, Kaggle's kernel variable or /kaggle/input.
    (BUILD_DATE or GIT_COMMIT alone prove nothing: CI systems set them too.)"""
    environ = os.environ if environ is None else environ
    files = any(Path(root, rel).is_file() for rel in BUILD_FILES.values())
    return files or "KAGGLE_KERNEL_RUN_TYPE" in environ or Path(root, "kaggle/input").is_dir()


def parse_pins(text: str) -> dict[str, str]:
    """`name==version` lines of kaggle_image.txt -> {name as written: version}; others skipped."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except ValueError:
            continue
        versions = [s.version for s in req.specifier if s.operator == "=="]
        if len(versions) == 1:
            pins[req.name] = versions[0]
    return pins


def image_drift(pins: Mapping[str, str], version_of: VersionOf) -> list[dict[str, str | None]]:
    """Each listed package whose installed version differs: {package, expected, found}."""
    drift = []
    for name, expected in pins.items():
        found = version_of(name)
        try:
            same = found is not None and Version(found) == Version(expected)
        except InvalidVersion:
            same = found == expected
        if not same:
            drift.append({"package": name, "expected": expected, "found": found})
    return drift


def image_checks(
    image_text: str | None,
    version_of: VersionOf = installed_version,
    environ: Mapping[str, str] | None = None,
    root: str | Path | None = None,
) -> tuple[list[Check], dict]:
    """The build line and the drift lines, and the same as data for --json.

    On a Kaggle image each differing package is its own WARN line (the image changed under the
    bundle); elsewhere (a workstation has other versions by design) one INFO line lists them.
    Never a FAIL: whether a difference matters is what the requirement checks decide.
    """
    environ = os.environ if environ is None else environ
    root = Path(root if root is not None else environ.get(ROOT_VAR) or "/")
    build = image_build(environ, root)
    kaggle = on_kaggle(environ, root)
    if build:
        parts = [f"build {build['build_date']}" if "build_date" in build else ""]
        parts.append(f"docker-python commit {build['git_commit']}" if "git_commit" in build else "")
        parts.append(f"Colab base {build['colab']}" if "colab" in build else "")
        text = f"image: {', '.join(p for p in parts if p)} (from {build['source']})"
    else:
        text = "image: no build recorded (not a Kaggle image, or one that does not record it)"
    checks = [Check("INFO", "image", text)]
    info: dict = {"build": build, "kaggle": kaggle, "drift": []}
    if image_text is None:
        return checks, info
    pins = parse_pins(image_text)
    drift = info["drift"] = image_drift(pins, version_of)
    if not drift:
        checks.append(
            Check("OK", "image:drift", f"all {len(pins)} packages match kaggle_image.txt")
        )
    elif kaggle:
        for d in drift:
            found = d["found"] or "not installed"
            text = f"{d['package']} {found} here, kaggle_image.txt has {d['expected']}"
            checks.append(
                Check("WARN", f"image:{d['package']}", text, f"if a FAIL follows, {REBUILD}")
            )
    else:
        listed = ", ".join(f"{d['package']} {d['expected']}->{d['found'] or 'none'}" for d in drift)
        text = f"{len(drift)} of {len(pins)} packages differ from kaggle_image.txt (expected->found): {listed}"
        checks.append(Check("INFO", "image:drift", text))
    return checks, info


# --- the bundle: would `pip install --no-index --find-links DIR hpa` work here? --------------


@dataclass
class Wheel:
    path: Path
    name: str  # canonical
    version: Version
    fits: bool  # installable on this interpreter and platform

    def requirements(self) -> list[str]:
        return read_wheel(self.path)[0]


def read_wheel(path: Path) -> tuple[list[str], str | None, str | None]:
    """(Requires-Dist, Requires-Python, packaged kaggle_image.txt or None) of a wheel file."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
            if meta_name is None:
                raise ValueError(f"{path} has no .dist-info/METADATA: not a wheel; rebuild it")
            meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
            image = zf.read(IMAGE_IN_WHEEL).decode() if IMAGE_IN_WHEEL in names else None
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a readable wheel (zip); copy the bundle again") from None
    return meta.get_all("Requires-Dist") or [], meta.get("Requires-Python"), image


def bundle_wheels(bundle: Path) -> dict[str, list[Wheel]]:
    """The folder's wheels by canonical name, newest first, each marked whether it fits here."""
    here = set(sys_tags())
    wheels: dict[str, list[Wheel]] = {}
    for path in sorted(bundle.glob("*.whl")):
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except ValueError:
            continue
        wheels.setdefault(name, []).append(Wheel(path, name, version, bool(tags & here)))
    for found in wheels.values():
        found.sort(key=lambda w: w.version, reverse=True)
    return wheels


def applies(req: Requirement, extras: Iterable[str] = ()) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ["", *extras])


def check_python_for(requires_python: str | None, wheel: str, version: str | None = None) -> Check:
    version = version or platform.python_version()
    needs = requires_python or "any Python"
    text = f"Python {version} ({sys.executable}), {wheel} needs {needs}"
    if requires_python and Version(version) not in SpecifierSet(requires_python):
        return Check("FAIL", "python", text, f"no hpa in this bundle installs on it; {REBUILD}")
    return Check("OK", "python", text)


def check_bundle_install(
    requires: Iterable[str],
    wheels: Mapping[str, list[Wheel]],
    version_of: VersionOf = installed_version,
) -> list[Check]:
    """Each requirement (and those of the bundled wheels it pulls in): installed, bundled, or
    missing. One line per package; FAIL names the version found, the range needed and why no
    bundled wheel helps."""
    queue = [(Requirement(text), "hpa", ()) for text in requires]
    checks: dict[str, Check] = {}
    expanded: set[Path] = set()  # bundled wheels whose requirements are queued (cycles end)
    interpreter = (
        f"{platform.python_implementation()} {platform.python_version()} {platform.machine()}"
    )
    while queue:
        req, parent, extras = queue.pop(0)
        if not applies(req, extras):
            continue
        name = canonicalize_name(req.name)
        needs = spec_text(req.specifier) or "any version"
        have = version_of(req.name)
        found = "is not installed" if have is None else f"{have} installed"
        head = f"{req.name} {found}, {parent} needs {needs}"
        if have is not None and req.specifier.contains(have, prereleases=True):
            if name not in checks:
                checks[name] = Check("OK", req.name, f"{req.name} {have} ({parent} needs {needs})")
            continue
        candidates = wheels.get(name, [])
        in_range = [w for w in candidates if req.specifier.contains(w.version, prereleases=True)]
        usable = [w for w in in_range if w.fits]
        if usable:
            wheel = usable[0]
            if have is None:
                text = f"{req.name} from the bundle: {wheel.path.name} ({parent} needs {needs})"
                check = Check("OK", req.name, text)
            else:
                text = f"{head}: pip replaces it with the bundle's {wheel.path.name}"
                check = Check("WARN", req.name, text, "restart the kernel after the install")
            if name not in checks or (checks[name].status, check.status) == ("OK", "WARN"):
                checks[name] = check
            if wheel.path not in expanded:
                expanded.add(wheel.path)
                requirements = wheel.requirements()
                queue.extend((Requirement(r), req.name, tuple(req.extras)) for r in requirements)
            continue
        if in_range:
            why = f"the bundle's {in_range[0].path.name} is not for {interpreter}"
        elif candidates:
            held = ", ".join(str(w.version) for w in candidates)
            why = f"the bundle holds {req.name} {held} only"
        else:
            why = f"the bundle has no {req.name} wheel"
        checks[name] = Check("FAIL", req.name, f"{head}; {why}", REBUILD)
    return list(checks.values())


def find_hpa_wheel(bundle: Path) -> Path:
    found = bundle_wheels(bundle).get("hpa", [])
    if not found:
        raise FileNotFoundError(f"no hpa-*.whl in {bundle}: pass --bundle with the bundle folder")
    return found[0].path


def run_checks(
    bundle: Path,
    version_of: VersionOf = installed_version,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[Check], dict]:
    wheel = find_hpa_wheel(bundle)
    requires, requires_python, image_text = read_wheel(wheel)
    checks = [check_python_for(requires_python, wheel.name)]
    checks += check_bundle_install(requires, bundle_wheels(bundle), version_of)
    image, info = image_checks(image_text, version_of, environ)
    return checks + image, {"wheel": wheel.name, "image": info}


def main(argv: list[str] | None = None, version_of: VersionOf = installed_version) -> int:
    parser = argparse.ArgumentParser(prog="hpa_doctor.py", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    here = Path(__file__).resolve().parent
    parser.add_argument("--bundle", type=Path, default=here, help="folder with hpa's wheel")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        checks, info = run_checks(args.bundle.resolve(), version_of)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [c for c in checks if c.status == "FAIL"]
    if args.json:
        report = {"ok": not failed, "python": sys.executable, "bundle": str(args.bundle), **info}
        print(json.dumps({**report, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            print(check.line())
        verdict = (
            f"{len(failed)} problem(s): fix the FAIL lines above" if failed else "hpa installs here"
        )
        print(f"hpa_doctor: {verdict} ({info['wheel']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
