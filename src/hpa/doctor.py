"""python -m hpa.doctor [--json] [--model DIR]... [--output DIR]... [--bundle DIR]

Checks the running environment against what hpa needs, one line per check:
`OK`, `INFO`, `WARN` or `FAIL`, what was found, and after a colon the fix. Exit status 1 on any
FAIL. Requirements come from the installed hpa's own metadata (pyproject's dependencies), so this
never drifts from what the wheel declares. Also reported, never failing by themselves: the
running image's build (where Kaggle's image records it) and every installed version that differs
from src/hpa/kaggle/kaggle_image.txt.

When hpa is not installed at all (pip failed), hpa/doctor_standalone.py (shipped in the bundle
as hpa_doctor.py) says why, package by package, without importing hpa.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from hpa.doctor_standalone import (
    OPENCV_DISTS,
    Check,
    check_opencv,
    image_checks,
    installed_version,
    opencv_fix,
    opencv_problem,
    spec_text,
)
from hpa.errors import InputError, exit_on_input_error
from hpa.kaggle.image import image_text

# Native-heavy modules whose import is tried in a child process first: a broken install of one
# (a half-overwritten shared library, a wheel built for another CPU) kills Python outright, and
# the doctor must live to say which one did it.
IMPORT_PROBES = (
    "numpy",
    "cv2",
    "torch",
    "torchvision",
    "timm",
    "pytorch_lightning",
    "albumentations",
)

# Versions that decide whether an exported model's weights load and mean the same thing.
WEIGHT_PACKAGES = ("torch", "timm")

# A GPU whose compute capability this torch has no kernels for (Kaggle's P100, sm_60, under a
# cu128 torch) fails at the first CUDA op; on Kaggle the cure is another accelerator. Pushed
# with the CLI, `enable_gpu: true` alone gets a P100; `machine_shape: "NvidiaTeslaT4"` in
# kernel-metadata.json (or `kaggle kernels push --accelerator NvidiaTeslaT4`) gets T4s.
GPU_ARCH_FIX = (
    "on Kaggle pick GPU T4 x2 or L4 in the notebook's Settings > Accelerator (pushed with the "
    'CLI: "machine_shape": "NvidiaTeslaT4" in kernel-metadata.json)'
)

VersionOf = Callable[[str], "str | None"]


def hpa_requirements() -> tuple[list[str], str | None]:
    """(Requires-Dist, Requires-Python) of the installed hpa; InputError-free: None if absent."""
    try:
        return metadata.requires("hpa") or [], metadata.metadata("hpa")["Requires-Python"]
    except metadata.PackageNotFoundError:
        return [], None


def install_fix(spec: str, bundle: str | None) -> str:
    if bundle:
        return f'pip install --no-index --find-links {bundle} "{spec}"'
    return f'pip install "{spec}"'


def check_python(requires_python: str | None, version: str | None = None) -> Check:
    version = version or platform.python_version()
    where = f"Python {version} ({sys.executable})"
    if requires_python is None:
        fix = "pip install hpa (offline: the bundle)"
        return Check("FAIL", "hpa", f"hpa is not installed in {where}", fix)
    text = f"{where}, hpa needs {requires_python}"
    if Version(version) not in SpecifierSet(requires_python):
        return Check("FAIL", "python", text, "use a matching Python")
    return Check("OK", "python", text)


def check_system() -> Check:
    return Check("OK", "os", f"{platform.system()} {platform.release()} {platform.machine()}")


def check_requirements(
    requirements: Iterable[str], version_of: VersionOf, bundle: str | None = None
) -> list[Check]:
    """Each declared requirement against what is installed (extras' requirements skipped)."""
    checks = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        spec = spec_text(req.specifier)
        needs = spec or "any version"
        have = version_of(req.name)
        if have is not None and req.specifier.contains(have, prereleases=True):
            checks.append(Check("OK", req.name, f"{req.name} {have} (hpa needs {needs})"))
            continue
        found = "is not installed" if have is None else f"{have} installed"
        fix = install_fix(f"{req.name}{spec}", bundle)
        checks.append(Check("FAIL", req.name, f"{req.name} {found}, hpa needs {needs}", fix))
    return checks


def dependency_closure(root: str = "hpa") -> set[str] | None:
    """Canonical names of `root` and everything it needs as installed here (None: not installed)."""
    if installed_version(root) is None:
        return None
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            wanted = extras | {""}
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return seen


def _installed(paths: list[str] | None) -> Iterable[tuple[str, str, str, metadata.Distribution]]:
    """(canonical name, version, resolved site folder, distribution) of each installed package."""
    for dist in metadata.distributions(path=sys.path if paths is None else paths):
        name = dist.metadata["Name"]
        if name:
            folder = str(Path(str(dist.locate_file(""))).resolve())
            yield canonicalize_name(name), dist.version, folder, dist


def check_duplicates(paths: list[str] | None = None, needed: set[str] | None = None) -> list[Check]:
    """Packages installed more than once on the import path.

    Two versions in one folder share file paths: whichever was installed last owns the shared
    files, so the package is a mix of both (a native library from one and Python code from the
    other: "X not found", or a crash on import). Poetry did exactly this with two locked
    nvidia-cublas versions. In different folders the first on sys.path is the one imported and
    the other only shadows it, which breaks code that expected the hidden version's API.
    Clashes FAIL for packages in `needed` (hpa's dependency closure; every package when None)
    and WARN for the rest, so a broken bystander in a big image (Kaggle's) does not stop a run.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for name, version, folder, _ in _installed(paths):
        found.setdefault(name, []).append((version, folder))
    checks = []
    for name, copies in sorted(found.items()):
        copies = list(dict.fromkeys(copies))  # one folder twice on sys.path is not a duplicate
        if len(copies) < 2:
            continue
        folders = [folder for _, folder in copies]
        clash = sorted({f for f in folders if folders.count(f) > 1})
        if clash:
            versions = " and ".join(v for v, f in copies if f == clash[0])
            text = f"{name} is installed twice in {clash[0]} ({versions}); their files overlap"
            fix = (
                f"pip uninstall -y {name} until none is left, then reinstall the version you "
                "need (in a checkout of hpa: rm -rf .venv && make install)"
            )
            status = "FAIL" if needed is None or name in needed else "WARN"
            checks.append(Check(status, f"duplicate:{name}", text, fix))
            continue
        (used, where), *hidden = copies
        shadowed = ", ".join(f"{v} in {f}" for v, f in hidden)
        if all(v == used for v, _ in hidden):
            continue
        text = f"{name} {used} in {where} shadows {shadowed}"
        fix = f"code that needs the hidden {name} breaks; pip uninstall the copy you do not use"
        checks.append(Check("WARN", f"shadowed:{name}", text, fix))
    return checks


def check_overlaps(
    paths: list[str] | None = None,
    needed: set[str] | None = None,
    bundle: str | None = None,
    opencv: Callable[[], str | None] = opencv_problem,
) -> list[Check]:
    """Two different packages that install the same module file.

    opencv-python beside opencv-python-headless both write cv2/: the one installed last
    overwrote part of the other. Of one version it is one build over another (WARN: Kaggle's
    image ships opencv-python, opencv-python-headless and opencv-contrib-python of one version
    side by side). Of two versions it is a mix: FAIL, except for OpenCV's builds, which are judged
    by what hpa needs (`opencv`: cv2 imports in a child process and every cv2 call hpa makes gives
    the reference result): WARN while that holds (Kaggle's next image mixes 5.0 and 4.14), FAIL
    with a fix that works offline (`bundle`'s wheel) when it breaks. Packages linked by shared
    files make one line (one group), reported when one of them is in `needed` (hpa's dependency
    closure; all when None). `__init__.py` files are skipped: namespace packages share them.
    """
    owners: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for name, version, folder, dist in _installed(paths):
        who = (name, version)
        for file in dist.files or []:
            text = str(file)
            if text.startswith("..") or ".dist-info" in text or file.name == "__init__.py":
                continue
            if text.endswith((".py", ".so", ".pyd")) or ".so." in text:
                owners.setdefault((folder, text), set()).add(who)
    groups: list[tuple[set[tuple[str, str]], list[str]]] = []  # (packages, shared files)
    for (folder, text), who in sorted(owners.items()):
        if len(who) < 2:
            continue
        joined = [g for g in groups if g[0] & who]
        members, files = set(who), [f"{folder}/{text}"]
        for group in joined:
            members |= group[0]
            files += group[1]
            groups.remove(group)
        groups.append((members, files))
    checks = []
    for members, files in sorted(groups, key=lambda g: sorted(g[0])):
        key = sorted(members)
        names = [n for n, _ in key]
        if needed is not None and not needed & set(names):
            continue
        listed = _and(f"{n} {v}" for n, v in key)
        text = f"{listed} install the same {len(files)} file(s) (e.g. {min(files)})"
        keep = next((n for n in names if needed and n in needed), names[0])
        tidy = f"pip uninstall -y {' '.join(names)}, then pip install {keep}"
        if len({v for _, v in key}) == 1:
            fix = f"one build over another of the same version: works as is (to tidy up: {tidy})"
            checks.append(Check("WARN", f"overlap:{'+'.join(names)}", text, fix))
        elif set(names) <= set(OPENCV_DISTS):
            why = opencv()
            if why is None:
                fix = (
                    "a mix of versions, yet cv2 imports in a child process and every cv2 call hpa "
                    f"makes gives the reference result: works as is (to tidy up: {tidy})"
                )
                checks.append(Check("WARN", f"overlap:{'+'.join(names)}", text, fix))
            else:
                fix = f"the mix breaks cv2 for hpa ({why}); {opencv_fix(bundle)}; online: {tidy}"
                checks.append(Check("FAIL", f"overlap:{'+'.join(names)}", text, fix))
        else:
            fix = f"one overwrote the other, a mix of versions: {tidy}"
            checks.append(Check("FAIL", f"overlap:{'+'.join(names)}", text, fix))
    return checks


def _and(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    print(json.dumps({"start": name}), flush=True)
    try:
        importlib.import_module(name)
        print(json.dumps({"ok": name}), flush=True)
    except Exception as err:
        print(json.dumps({"error": name, "why": f"{type(err).__name__}: {err}"}), flush=True)
"""


def check_imports(
    modules: Iterable[str] = IMPORT_PROBES, env: dict[str, str] | None = None, timeout: float = 300
) -> list[Check]:
    """Import each installed module in one child Python; a crash there names its module."""
    import importlib.util

    names = [m for m in modules if _findable(importlib.util, m, env)]
    if not names:
        return []
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, *names],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        text = f"importing {', '.join(names)} took over {timeout:.0f} s"
        return [Check("WARN", "imports", text, "a slow or network file system? retry")]
    checks, started = [], None
    for line in proc.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a module printed something of its own
        if "start" in event:
            started = event["start"]
        elif "ok" in event:
            started = None
        elif "error" in event:
            started = None
            text = f"import {event['error']} fails ({event['why']})"
            checks.append(
                Check("FAIL", f"import:{event['error']}", text, _reinstall(event["error"]))
            )
    if proc.returncode != 0 and started is not None:
        how = f"exit status {proc.returncode}"
        if proc.returncode < 0:
            how = f"signal {signal.Signals(-proc.returncode).name}"
        text = f"import {started} kills Python ({how}): a broken or mismatched native library"
        checks.append(Check("FAIL", f"import:{started}", text, _reinstall(started)))
    if not checks:
        checks.append(Check("OK", "imports", f"{', '.join(names)} import cleanly"))
    return checks


def _findable(util, module: str, env: dict[str, str] | None) -> bool:
    if env is not None and "PYTHONPATH" in env:
        return True  # the child sees another path; let it say what is missing
    try:
        return util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _reinstall(module: str) -> str:
    dist = {"cv2": "opencv-python-headless", "pytorch_lightning": "pytorch-lightning"}
    package = dist.get(module, module)
    return (
        f"see any duplicate lines above; pip install --force-reinstall --no-deps {package} "
        "(in a checkout of hpa: rm -rf .venv && make install)"
    )


def check_gpu() -> list[Check]:
    """CUDA, cuDNN, and per GPU: name, memory and bf16 (trainer=gpu trains in bf16-mixed)."""
    try:
        import torch
    except Exception as err:  # a broken torch install raises all sorts of errors on import
        fix = install_fix("torch", None)
        return [Check("FAIL", "torch", f"torch does not import ({err})", fix)]
    built = torch.version.cuda or "none (CPU-only build)"
    if not torch.cuda.is_available():
        text = f"no CUDA GPU visible (torch {torch.__version__}, CUDA build {built})"
        fix = (
            "on Kaggle, Settings > Accelerator > GPU T4 x2 or L4; without one everything runs on "
            "the CPU"
        )
        return [Check("WARN", "gpu", text, fix)]
    checks = [Check("OK", "cuda", f"CUDA {built}, cuDNN {torch.backends.cudnn.version()}")]
    checks += check_gpu_arch()
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        text = f"GPU {i}: {props.name}, {props.total_memory / 2**30:.1f} GiB"
        if (props.major, props.minor) >= (8, 0):
            checks.append(Check("OK", f"gpu{i}", f"{text}, bf16 supported"))
            continue
        text += f", no bf16 (compute capability {props.major}.{props.minor})"
        fix = "train with trainer.precision=16-mixed (trainer=gpu defaults to bf16-mixed)"
        checks.append(Check("WARN", f"gpu{i}", text, fix))
    return checks


def check_gpu_arch() -> list[Check]:
    """Every visible GPU's compute capability against torch.cuda.get_arch_list(), through
    hpa.gpu.cuda_arch_problem() (None: fine or no GPU; else one line naming the GPU, its
    capability and the fix). Skipped while hpa.gpu is not part of the installed hpa."""
    try:
        from hpa.gpu import cuda_arch_problem
    except ModuleNotFoundError as err:
        if err.name in ("hpa.gpu", "hpa"):
            return []
        return [Check("WARN", "gpu:arch", f"GPU kernel check unavailable ({err})")]
    except ImportError as err:
        return [Check("WARN", "gpu:arch", f"GPU kernel check unavailable ({err})")]
    try:
        problem = cuda_arch_problem()
    except Exception as err:  # a driver error must not end the doctor
        text = f"could not compare the GPUs with torch's kernels ({type(err).__name__}: {err})"
        return [Check("WARN", "gpu:arch", text)]
    if problem is None:
        return [Check("OK", "gpu:arch", "torch has kernels for every visible GPU")]
    named = any(gpu in problem for gpu in ("T4", "L4"))
    return [Check("FAIL", "gpu:arch", problem.strip(), "" if named else GPU_ARCH_FIX)]


def model_versions(model_dir: Path) -> dict[str, str]:
    """The `versions` an exported model/ recorded at training time (read without torch)."""
    path = model_dir / "config.json"
    try:
        return dict(json.loads(path.read_text())["versions"])
    except FileNotFoundError:
        hint = "--model takes the model/ folder that hpa.train exports"
        raise InputError(f"{path} not found: {hint}") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} has no readable `versions`; re-export the model") from None


def compare_version(package: str, then: str, now: str | None) -> tuple[str, str]:
    """(status, what differs): major changes FAIL for torch/timm, minor drift of them WARNs."""
    weights = package in WEIGHT_PACKAGES
    if now is None:
        return ("FAIL" if weights else "WARN"), "not installed now"
    try:
        a, b = Version(then), Version(now)
    except InvalidVersion:
        return ("OK" if then == now else "WARN"), "unparseable version"
    if a.major != b.major:
        return ("FAIL" if weights else "WARN"), "major version differs"
    if a.minor != b.minor:
        return ("WARN" if weights else "OK"), "minor version differs"
    return "OK", ""


def check_model(model_dir: Path, version_of: VersionOf) -> list[Check]:
    checks = []
    for package, then in sorted(model_versions(model_dir).items()):
        now = platform.python_version() if package == "python" else version_of(package)
        status, drift = compare_version(package, then, now)
        text = f"model {model_dir}: trained with {package} {then}, running {now or 'none'}"
        fix = ""
        if status == "FAIL":
            fix = f"install {package}=={then} (or retrain with {package} {now or 'installed'})"
        elif status == "WARN":
            fix = (
                "predictions may differ slightly; retrain or match versions if the score "
                "drops (a workstation with Kaggle's versions: make install KAGGLE=1)"
            )
        if drift:
            text += f" ({drift})"
        checks.append(Check(status, f"model:{package}", text, fix))
    return checks


def default_outputs() -> list[Path]:
    outputs = [Path.cwd()]
    if Path("/kaggle/working").is_dir():
        outputs.append(Path("/kaggle/working"))
    return outputs


def check_writable(folder: Path) -> Check:
    """Writable means a file can be created there (or in the nearest existing parent)."""
    target = folder
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        with tempfile.NamedTemporaryFile(dir=target):
            pass
    except OSError as err:
        text = f"{folder} is not writable ({err.strerror})"
        return Check("FAIL", "output", text, "pick another output folder")
    return Check("OK", "output", f"{folder} is writable")


def check_hpacellseg(nuclei_model: Path | None, cell_model: Path | None) -> list[Check]:
    """`--segmenter hpacellseg`: the package, pytorch_zoo's classes, the weight files; one line
    each. Reads which classes the pickles name without unpickling them."""
    from hpa.segment.hpacellseg import hpacellseg_problems

    problems = hpacellseg_problems(nuclei_model, cell_model)
    if not problems:
        return [Check("OK", "hpacellseg", "HPA-Cell-Segmentation, pytorch_zoo and weights found")]
    return [Check("FAIL", "hpacellseg", problem) for problem in problems]


def run_checks(
    models: Iterable[Path] = (),
    outputs: Iterable[Path] | None = None,
    bundle: str | None = None,
    version_of: VersionOf = installed_version,
    requirements: tuple[list[str], str | None] | None = None,
    report: dict | None = None,
    hpacellseg: tuple[Path | None, Path | None] | None = None,
) -> list[Check]:
    """Every check, in report order; `version_of` and `requirements` are injectable for tests.
    `report`, when given, receives the image's build and drift as data (for --json)."""
    requires, requires_python = requirements if requirements is not None else hpa_requirements()
    needed = dependency_closure()
    cv2_problem = functools.cache(opencv_problem)  # one child run for both OpenCV judgements
    image, image_info = image_checks(image_text(), version_of)
    if report is not None:
        report["image"] = image_info
    checks = [
        check_python(requires_python),
        check_system(),
        *image,
        *check_duplicates(needed=needed),
        *check_overlaps(needed=needed, bundle=bundle, opencv=cv2_problem),
    ]
    imports = check_imports()
    checks += imports
    if not any(c.name == "import:cv2" for c in imports):  # cv2 as hpa uses it, judged once
        checks.append(check_opencv(bundle, cv2_problem))
    crashed = any(c.name == "import:torch" for c in imports)
    checks += [] if crashed else check_gpu()  # importing torch here would kill the doctor too
    checks += check_requirements(requires, version_of, bundle)
    for model in models:
        checks += check_model(Path(model), version_of)
    if hpacellseg is not None:
        checks += check_hpacellseg(*hpacellseg)
    checks += [check_writable(Path(o)) for o in (default_outputs() if outputs is None else outputs)]
    return checks


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hpa.doctor", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    models = {"action": "append", "default": [], "help": "exported model/ to compare (repeatable)"}
    parser.add_argument("--model", type=Path, **models)
    parser.add_argument("--output", type=Path, action="append", help="folder that must be writable")
    parser.add_argument("--bundle", help="bundle folder, named in the fixes (offline installs)")
    parser.add_argument(
        "--segmenter",
        choices=["hpacellseg"],
        help="also check what this segmenter needs (the package, its classes, weight files)",
    )
    parser.add_argument("--nuclei-model", type=Path, help="hpacellseg nuclei weights (a file)")
    parser.add_argument("--cell-model", type=Path, help="hpacellseg cell weights (a file)")
    return parser.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None, version_of: VersionOf = installed_version) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    extra: dict = {}
    hpacellseg = (args.nuclei_model, args.cell_model) if args.segmenter == "hpacellseg" else None
    checks = run_checks(
        args.model, args.output, args.bundle, version_of, report=extra, hpacellseg=hpacellseg
    )
    failed = [c for c in checks if c.status == "FAIL"]
    if args.json:
        report = {
            "ok": not failed,
            "python": sys.executable,
            "platform": platform.platform(),
            **extra,
            "checks": [asdict(c) for c in checks],
        }
        print(json.dumps(report, indent=2))
    else:
        for check in checks:
            print(check.line())
        ok = "all requirements met"
        print(f"doctor: {f'{len(failed)} problem(s): fix the FAIL lines above' if failed else ok}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
