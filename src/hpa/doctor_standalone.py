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


# --- OpenCV: judged by what hpa does with it, not by which wheels wrote cv2/ --------------------

# Every cv2 call hpa makes (src/hpa: images, transforms, dataset, synthetic, segment), each against
# a result known without OpenCV (numpy), in a child Python so that a cv2 that kills the process
# is named, not fatal. One JSON line per step: {"start": name}, then {"ok": name} or {"bad": ...}.
OPENCV_PROBE = r"""
import json, os, sys, tempfile
import numpy as np

def say(**event):
    print(json.dumps(event), flush=True)

say(start="import cv2")
import cv2
say(ok="import cv2", version=cv2.__version__)
rng = np.random.default_rng(0)

def png(depth):
    a = rng.integers(0, 256 if depth == 8 else 65536, (37, 41)).astype(f"uint{depth}")
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    b = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if not ok or b is None or b.dtype != a.dtype or not np.array_equal(a, b):
        return f"a {depth}-bit PNG does not come back as it was written"

def files():
    a = rng.integers(0, 65536, (16, 24)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x_red.png")
        if not cv2.imwrite(path, a):
            return "cv2.imwrite wrote nothing"
        b = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if b is None or not np.array_equal(a, b):
        return "cv2.imread does not read back what cv2.imwrite wrote"

def jpeg():
    a = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])
    b = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if not ok or b is None or b.shape != a.shape or np.abs(b.astype(int) - a).mean() > 3:
        return "a JPEG at quality 95 does not decode close to its source"

def resize():
    a = (rng.integers(0, 64, (32, 48, 4)) * 4).astype(np.uint8)  # 2x2 block sums divide by 4
    block = a.reshape(16, 2, 24, 2, 4).astype(int).sum(axis=(1, 3)) // 4
    if not np.array_equal(cv2.resize(a, (24, 16), interpolation=cv2.INTER_AREA), block):
        return "INTER_AREA by 2 is not the mean of each 2x2 block"
    up = cv2.resize(a, (96, 64), interpolation=cv2.INTER_NEAREST)
    if not np.array_equal(up, a.repeat(2, axis=0).repeat(2, axis=1)):
        return "INTER_NEAREST by 2 does not repeat each pixel"
    flat = np.full((20, 30, 4), 77, np.uint8)
    for how in (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA):
        if not (cv2.resize(flat, (45, 33), interpolation=how) == 77).all():
            return f"interpolation {how} changes a flat image"

def rotate():
    a = rng.integers(0, 256, (5, 7, 4)).astype(np.uint8)
    want = {cv2.ROTATE_90_COUNTERCLOCKWISE: 1, cv2.ROTATE_180: 2, cv2.ROTATE_90_CLOCKWISE: 3}
    for code, k in want.items():
        if not np.array_equal(cv2.rotate(a, code), np.rot90(a, k)):
            return f"cv2.rotate code {code} is not np.rot90 by {k}"

def lut():
    a = rng.integers(0, 256, (9, 11, 4)).astype(np.uint8)
    table = rng.integers(0, 256, (256, 4)).astype(np.uint8)
    if not np.array_equal(cv2.LUT(a[..., 0], table[:, 0]), table[a[..., 0], 0]):
        return "cv2.LUT of one plane is not a table look-up"
    got = cv2.LUT(a, np.ascontiguousarray(table.reshape(1, 256, 4))).reshape(a.shape)
    if not np.array_equal(got, np.stack([table[a[..., c], c] for c in range(4)], axis=-1)):
        return "cv2.LUT with one table per channel is not a look-up per channel"

def split():
    a = rng.integers(0, 256, (6, 8, 4)).astype(np.uint8)
    out = np.empty((4, 6, 8), np.uint8)
    cv2.split(a, list(out))
    if not np.array_equal(out, a.transpose(2, 0, 1)):
        return "cv2.split into given planes is not channels-first"

def blur():
    flat = np.full((40, 40), 0.5, np.float32)
    if np.abs(cv2.GaussianBlur(flat, (0, 0), 1.5) - 0.5).max() > 1e-5:
        return "GaussianBlur changes a flat image"
    dot = np.zeros((41, 41), np.float32)
    dot[20, 20] = 1
    b = cv2.GaussianBlur(dot, (0, 0), 2.0)
    if abs(b.sum() - 1) > 1e-3 or not np.allclose(b, b.T, atol=1e-6) or b.argmax() != 20 * 41 + 20:
        return "GaussianBlur of a dot is not a centred, symmetric kernel of sum 1"

def distance():
    mask = np.pad(np.ones((9, 9), np.uint8), 1)
    d = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    if d[0, 0] != 0 or abs(d[1, 5] - 0.955) > 1e-3 or abs(d[5, 5] - 5 * 0.955) > 1e-2:
        return "distanceTransform (L2, 3x3) is not 0.955 per step"

def draw():
    a = np.zeros((41, 41), np.uint8)
    cv2.circle(a, (20, 20), 10, 255, -1)
    if abs((a > 0).sum() / (np.pi * 100) - 1) > 0.1 or not np.array_equal(a, a.T):
        return "a filled circle is not round"
    b = np.zeros((41, 41), np.uint8)
    cv2.ellipse(b, (20, 20), (12, 6), 0, 0, 360, 255, -1)
    if abs((b > 0).sum() / (np.pi * 72) - 1) > 0.2 or b[20, 31] == 0 or b[27, 20] != 0:
        return "a filled ellipse does not have its axes"
    c = np.zeros((20, 20), np.uint8)
    cv2.line(c, (2, 5), (15, 5), 255, 1)
    if not (c[5, 2:16] == 255).all() or c.sum() != 14 * 255:
        return "a horizontal line is not the pixels between its ends"
    d = np.zeros((20, 20), np.uint8)
    square = np.array([[3, 3], [12, 3], [12, 12], [3, 12]], np.int32)
    cv2.polylines(d, [square], True, 255, 1)
    if (d > 0).sum() != 36 or d[3, 3] == 0 or d[7, 7] != 0:
        return "a closed polyline is not the square's outline"
    e = np.zeros((41, 41), np.uint8)
    cv2.circle(e, (20, 20), 8, 255, 1, cv2.LINE_AA)
    if e[20, 28] == 0 or e[20, 20] != 0:
        return "an anti-aliased circle is not on its radius"

def threads():
    cv2.setNumThreads(1)

for name, fn in [
    ("setNumThreads", threads), ("PNG 8-bit", lambda: png(8)), ("PNG 16-bit", lambda: png(16)),
    ("imwrite/imread", files), ("JPEG", jpeg), ("resize", resize), ("rotate", rotate),
    ("LUT", lut), ("split", split), ("GaussianBlur", blur), ("distanceTransform", distance),
    ("drawing", draw),
]:
    say(start=name)
    try:
        why = fn()
    except Exception as err:
        why = f"{type(err).__name__}: {err}"
    say(**({"bad": name, "why": why} if why else {"ok": name}))
"""
OPENCV_DISTS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)
OPENCV_WHEEL = "opencv-python-headless"  # what hpa requires; the bundle can carry its wheel


def opencv_problem(env: Mapping[str, str] | None = None, timeout: float = 300) -> str | None:
    """What breaks when hpa uses cv2 here, in one phrase; None when every call gives the
    reference result. Runs OPENCV_PROBE in a child Python (`env`: its environment)."""
    import signal
    import subprocess

    try:
        proc = subprocess.run(
            [sys.executable, "-c", OPENCV_PROBE],
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"the cv2 checks took over {timeout:.0f} s"
    started, bad = None, []
    for line in proc.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "start" in event:
            started = event["start"]
        elif "ok" in event:
            started = None
        elif "bad" in event:
            started = None
            bad.append(f"cv2 {event['bad']}: {event['why']}")
    last = proc.stderr.strip().splitlines()
    if proc.returncode > 0 and started == "import cv2":  # an exception: its last line says why
        bad.append(f"import cv2 fails ({last[-1] if last else proc.returncode})")
    elif proc.returncode != 0 and started is not None:
        how = f"exit status {proc.returncode}"
        if proc.returncode < 0:
            how = f"signal {signal.Signals(-proc.returncode).name}"
        bad.append(f"{started} kills Python ({how})")
    elif proc.returncode != 0 and not bad:
        bad.append(last[-1] if last else f"the cv2 checks ended with exit status {proc.returncode}")
    return "; ".join(bad) or None


def opencv_fix(bundle: str | Path | None = None) -> str:
    """A fix that works with Internet off: reinstall hpa's OpenCV build from the bundle's wheel."""
    wheels = bundle_wheels(Path(bundle)).get(OPENCV_WHEEL, []) if bundle else []
    if wheels:
        where = str(next((w for w in wheels if w.fits), wheels[0]).path)
        how = ""
    else:
        where = f"/kaggle/input/<bundle>/{OPENCV_WHEEL.replace('-', '_')}-*.whl"
        how = (
            f" (the bundle carries it when built with --with-wheel {OPENCV_WHEEL.replace('-', '_')}"
            f"-VERSION-*.whl, from pip download --no-deps {OPENCV_WHEEL})"
        )
    return f"offline: pip install --no-index --no-deps --force-reinstall {where}{how}"


def check_opencv(
    bundle: str | Path | None = None, problem: Callable[[], str | None] = opencv_problem
) -> Check:
    """cv2 as hpa uses it: FAIL only when a call hpa makes breaks, with an offline fix."""
    why = problem()
    if why is None:
        text = "cv2 imports and every cv2 call hpa makes gives the reference result"
        return Check("OK", "opencv", text)
    return Check("FAIL", "opencv", f"cv2 is broken for hpa: {why}", opencv_fix(bundle))


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
    if version_of(OPENCV_WHEEL) or any(version_of(d) for d in OPENCV_DISTS):
        checks.append(check_opencv(bundle))  # the judgement hpa.doctor makes, the same way
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
