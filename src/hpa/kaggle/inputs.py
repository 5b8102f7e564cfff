"""`auto` inputs: find the attached data sets and the competition data under /kaggle/input.

Kaggle mounts every input of a notebook read-only under the input root, in one of these layouts:

    /kaggle/input/competitions/<slug>/        competition data (2026 layout)
    /kaggle/input/datasets/<owner>/<slug>/    a data set (2026 layout)
    /kaggle/input/notebooks/<owner>/<slug>/   another notebook's output (2026 layout)
    /kaggle/input/<slug>/                     any of them (the older layout)

Each of those folders is a *mount*. What `auto` looks for, in every mount:
- the bundle: a mount holding hpa-*.whl (`python -m hpa.kaggle bundle`);
- models: the mount, or a folder directly in it, holding config.json + model.safetensors
  (`hpa.models.export`; the train notebook's `hpa-model/` output); every distinct one is used;
- the sample submission: `sample_submission.csv` in a mount; the test images: the `test/`
  folder beside it; the training data: a mount with `train.csv` and `train/`;
- hpacellseg's weights (segmenter=hpacellseg): the files named as HPACELLSEG_WEIGHTS lists, in
  a mount or a few folders below it (`segmenter.nuclei_model=auto`, NUCLEI_MODEL in a notebook).
Nothing found, or two candidates where one is needed, stops with one line (InputError) listing
what was found and the parameter to set. The root is `$HPA_KAGGLE_INPUT` when set (tests, or a
copy of Kaggle's inputs on a workstation), else /kaggle/input.

No heavy imports: the notebooks call this right after installing hpa. Before that, when hpa is not
importable yet, their install cell repeats `find_bundle`'s search in a few lines over MOUNTS
(tests/test_kaggle_inputs.py checks that both agree).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hpa.errors import InputError

AUTO = "auto"
ROOT_ENV = "HPA_KAGGLE_INPUT"
DEFAULT_ROOT = "/kaggle/input"
# Glob patterns of the mounts below the root, one per layout (see the module docstring).
MOUNTS = ("*", "competitions/*", "datasets/*/*", "notebooks/*/*")
CONTAINERS = {"competitions", "datasets", "notebooks"}  # hold mounts, are none themselves
MODEL_FILES = ("config.json", "model.safetensors")  # hpa.models.export's CONFIG and WEIGHTS
SAMPLE = "sample_submission.csv"
# HPA-Cell-Segmentation's weight files (segmenter=hpacellseg), first the names Zenodo publishes
# them under (record 4665863), then those hpacellseg's README and defaults use.
HPACELLSEG_WEIGHTS = {
    "nuclei_model": ("dpn_unet_nuclei_v1.pth", "nuclei_model.pth", "nuclei-model.pth"),
    "cell_model": (
        "dpn_unet_cell_3ch_v1.pth",
        "cell_model.pth",
        "cell-model.pth",
        "cell_3ch_model.pth",
    ),
}
WEIGHT_DEPTH = 4  # folders below a mount searched for them (a Kaggle model: framework/var/version)


def is_auto(value: object) -> bool:
    """`auto`, or a list holding only `auto` (MODEL_DIRS=["auto"], models=[auto])."""
    if isinstance(value, str):
        return value == AUTO
    return isinstance(value, Sequence) and len(value) == 1 and value[0] == AUTO


def input_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def mounts(root: Path) -> list[Path]:
    """Every attached input's folder under `root`, in any layout, sorted."""
    found = set()
    for pattern in MOUNTS:
        for path in root.glob(pattern):
            top = path.relative_to(root).parts[0]
            if path.is_dir() and not (pattern == "*" and top in CONTAINERS):
                found.add(path)
    return sorted(found)


def _listing(root: Path) -> str:
    names = [str(m.relative_to(root)) for m in mounts(root)]
    return f"inputs there: {', '.join(names)}" if names else "no inputs attached"


def _search(
    root: Path, param: str, what: str, hint: str, match: Callable[[Path], list[Path]]
) -> list[Path]:
    if not root.is_dir():
        raise InputError(
            f"{param}={AUTO}: {root} does not exist (not on Kaggle?); set {param}, or "
            f"{ROOT_ENV} to a folder laid out like {DEFAULT_ROOT}"
        )
    found = [path for mount in mounts(root) for path in match(mount)]
    if not found:
        raise InputError(
            f"{param}={AUTO} found no {what} under {root} ({_listing(root)}); "
            f"attach {hint} or set {param}"
        )
    return found


def _one(found: list[Path], root: Path, param: str, what: str) -> Path:
    """The only one found; `what` in the plural names them when there are more."""
    if len(found) > 1:
        raise InputError(
            f"{param}={AUTO} found {len(found)} {what} under {root}: "
            f"{', '.join(str(p) for p in found)}; set {param} to the one to use"
        )
    return found[0]


def find_bundle(root: str | Path | None = None, param: str = "BUNDLE_DIR") -> Path:
    """The one attached folder holding hpa's wheel."""
    root = input_root(root)

    def match(mount: Path) -> list[Path]:
        return [mount] if any(mount.glob("hpa-*.whl")) else []

    hint = "the bundle data set (python -m hpa.kaggle bundle)"
    found = _search(root, param, "folder with hpa-*.whl", hint, match)
    return _one(found, root, param, "folders with hpa-*.whl")


def _is_model(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MODEL_FILES)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _distinct(models: list[Path]) -> list[Path]:
    """Drop a model whose weights equal an earlier one's (one export attached twice)."""
    kept: list[Path] = []
    digests: dict[Path, str] = {}
    for model in models:
        weights = model / MODEL_FILES[1]
        size = weights.stat().st_size
        twins = [k for k in kept if (k / MODEL_FILES[1]).stat().st_size == size]
        if twins:
            digest = digests.setdefault(model, _digest(weights))
            if any(digests.setdefault(k, _digest(k / MODEL_FILES[1])) == digest for k in twins):
                continue
        kept.append(model)
    return kept


def find_models(root: str | Path | None = None, param: str = "MODEL_DIRS") -> list[Path]:
    """Every distinct exported model attached: the ensemble `auto` predicts with."""
    root = input_root(root)

    def match(mount: Path) -> list[Path]:
        inside = sorted(p for p in mount.iterdir() if p.is_dir())
        return [folder for folder in [mount, *inside] if _is_model(folder)]

    hint = "a model data set (python -m hpa.kaggle model, or the train notebook's output)"
    found = _search(root, param, "exported model (config.json + model.safetensors)", hint, match)
    return _distinct(found)


def find_sample_submission(
    root: str | Path | None = None, param: str = "SAMPLE_SUBMISSION"
) -> Path:
    root = input_root(root)

    def match(mount: Path) -> list[Path]:
        return [mount / SAMPLE] if (mount / SAMPLE).is_file() else []

    found = _search(root, param, SAMPLE, "the competition data", match)
    return _one(found, root, param, f"{SAMPLE} files")


def find_test_dir(
    root: str | Path | None = None, sample: str | Path | None = None, param: str = "INPUT_DIR"
) -> Path:
    """The test/ folder beside the sample submission (a given one's, else the one found)."""
    if sample is not None and (Path(sample).parent / "test").is_dir():
        return Path(sample).parent / "test"
    root = input_root(root)

    def match(mount: Path) -> list[Path]:
        ok = (mount / SAMPLE).is_file() and (mount / "test").is_dir()
        return [mount / "test"] if ok else []

    found = _search(root, param, f"test/ folder beside a {SAMPLE}", "the competition data", match)
    return _one(found, root, param, f"test/ folders beside a {SAMPLE}")


def find_train_data(root: str | Path | None = None, param: str = "DATA_DIR") -> Path:
    """The one attached folder with train.csv and train/ (the competition's layout)."""
    root = input_root(root)

    def match(mount: Path) -> list[Path]:
        return [mount] if (mount / "train.csv").is_file() and (mount / "train").is_dir() else []

    found = _search(root, param, "folder with train.csv and train/", "the competition data", match)
    return _one(found, root, param, "folders with train.csv and train/")


def _files_named(mount: Path, names: set[str], depth: int) -> list[Path]:
    """Files called one of `names` in `mount` or up to `depth` folders below it; each folder is
    listed once (a competition mount's train/ holds tens of thousands of files)."""
    found = []
    for folder, subfolders, files in os.walk(mount):
        if len(Path(folder).relative_to(mount).parts) >= depth:
            subfolders.clear()
        found.extend(Path(folder) / name for name in files if name in names)
    return sorted(found)


def _distinct_files(paths: list[Path]) -> list[Path]:
    """Drop a file whose bytes equal an earlier one's (one data set attached twice)."""
    kept: list[Path] = []
    digests: dict[Path, str] = {}
    for path in paths:
        twins = [k for k in kept if k.stat().st_size == path.stat().st_size]
        digest = digests.setdefault(path, _digest(path)) if twins else ""
        if not any(digests.setdefault(k, _digest(k)) == digest for k in twins):
            kept.append(path)
    return kept


def find_hpacellseg_weight(
    name: str, root: str | Path | None = None, param: str | None = None
) -> Path:
    """The attached HPA-Cell-Segmentation weight file `name` (nuclei_model or cell_model).

    Looked for by its file names (HPACELLSEG_WEIGHTS) in every mount and up to WEIGHT_DEPTH
    folders below it, as a data set or a Kaggle model holds it.
    """
    if name not in HPACELLSEG_WEIGHTS:
        raise ValueError(f"{name!r} is none of {', '.join(HPACELLSEG_WEIGHTS)}")
    root = input_root(root)
    param = param or f"segmenter.{name}"
    names = HPACELLSEG_WEIGHTS[name]

    def match(mount: Path) -> list[Path]:
        return _files_named(mount, set(names), WEIGHT_DEPTH)

    what = f"hpacellseg {name} ({' or '.join(names)})"
    hint = (
        f"a data set with HPA-Cell-Segmentation's {names[0]} (Zenodo record 4665863; "
        "docs/segmentation.md: hpacellseg on Kaggle)"
    )
    found = _distinct_files(_search(root, param, what, hint, match))
    return _one(found, root, param, f"different {names[0]} files")


def resolve(values: dict[str, object], root: str | Path | None = None) -> dict[str, object]:
    """The notebooks' parameters with every `auto` replaced by what was found (paths as str).

    Knows BUNDLE_DIR, MODEL_DIRS, INPUT_DIR, SAMPLE_SUBMISSION, DATA_DIR, NUCLEI_MODEL and
    CELL_MODEL (hpacellseg's weights); INPUT_DIR=auto takes the test/ folder beside
    SAMPLE_SUBMISSION when that one holds it.
    """
    out = dict(values)
    if isinstance(out.get("MODEL_DIRS"), str) and not is_auto(out["MODEL_DIRS"]):
        out["MODEL_DIRS"] = [out["MODEL_DIRS"]]  # papermill -p MODEL_DIRS /one/model
    if is_auto(out.get("BUNDLE_DIR")):
        out["BUNDLE_DIR"] = str(find_bundle(root))
    if is_auto(out.get("MODEL_DIRS")):
        out["MODEL_DIRS"] = [str(p) for p in find_models(root)]
    if is_auto(out.get("SAMPLE_SUBMISSION")):
        out["SAMPLE_SUBMISSION"] = str(find_sample_submission(root))
    if is_auto(out.get("INPUT_DIR")):
        out["INPUT_DIR"] = str(find_test_dir(root, out.get("SAMPLE_SUBMISSION")))
    if is_auto(out.get("DATA_DIR")):
        out["DATA_DIR"] = str(find_train_data(root))
    for param, name in (("NUCLEI_MODEL", "nuclei_model"), ("CELL_MODEL", "cell_model")):
        if is_auto(out.get(param)):
            out[param] = str(find_hpacellseg_weight(name, root, param))
    return out


def notebook_inputs(**values: object) -> dict[str, object]:
    """`resolve` for a notebook cell: prints one line per parameter, and a problem stops the cell
    with its one line (SystemExit shows no traceback) instead of a stack of frames."""
    try:
        resolved = resolve(values)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    for name, value in resolved.items():
        how = "  (auto)" if is_auto(values[name]) else ""
        print(f"{name} = {value!r}{how}")
    return resolved


__all__ = [
    "AUTO",
    "DEFAULT_ROOT",
    "MOUNTS",
    "ROOT_ENV",
    "find_bundle",
    "find_hpacellseg_weight",
    "find_models",
    "find_sample_submission",
    "find_test_dir",
    "find_train_data",
    "input_root",
    "is_auto",
    "mounts",
    "notebook_inputs",
    "resolve",
]
