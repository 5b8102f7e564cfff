"""Write the folders to upload: the offline bundle, one folder per kernel, a model dataset."""

from __future__ import annotations

import ast
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from hpa import doctor_standalone
from hpa.errors import InputError
from hpa.fsio import checksum_path, write_json, write_text
from hpa.kaggle.image import kaggle_image
from hpa.kaggle.metadata import (
    DEFAULT_ACCELERATOR,
    DEFAULT_PINNING,
    KERNELS,
    check_dataset,
    dataset_metadata,
    kernel_metadata,
    kernel_slug,
)
from hpa.kaggle.wheels import (
    NO_DEPS_LIST,
    Fetcher,
    PipFetcher,
    build_hpa_wheel,
    check_no_deps_wheel,
    missing_wheels,
    project_root,
    wheel_requirements,
)
from hpa.outputs import replace_folder

DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
# What a folder this module wrote may hold; anything else means --out points at the user's files.
STANDALONE_DOCTOR = "hpa_doctor.py"  # hpa.doctor_standalone, for the notebooks' install cell
NO_DEPS_OPTIONS = "--with-hpacellseg/--with-wheel"
# The data set --segmenter-weights names holds these (found by the notebook's NUCLEI_MODEL/CELL_MODEL
# = "auto", hpa.kaggle.inputs.find_hpacellseg_weight).
HPACELLSEG_WEIGHTS = ("dpn_unet_nuclei_v1.pth", "dpn_unet_cell_3ch_v1.pth")
PARAMETERS_TAG = "parameters"  # the notebook cell papermill (and set_parameters) sets
# What the inference notebook passes to hpa.predict before PREDICT_OPTIONS (its step 4, with
# placeholder paths), by SEGMENTER: check_predict_options composes the same command line.
NOTEBOOK_PREDICT_ARGS = (
    "models=['model']",
    "input_dir='test'",
    "sample_submission='sample_submission.csv'",
    "submission='submission.csv'",
)
NOTEBOOK_SEGMENTATION = {
    "watershed": ("segmenter=watershed",),
    "hpacellseg": (
        "segmenter=hpacellseg",
        "segmenter.nuclei_model='nuclei.pth'",
        "segmenter.cell_model='cell.pth'",
        "segmenter.allow_pickle=true",
        "segmenter.device=auto",
    ),
}


def check_out(out: Path) -> Path:
    """`out` resolved, if it can be a folder this module writes; else InputError naming it."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; pass a new or empty --out folder")
    existing = out if out.exists() else out.parent
    while not existing.exists():
        existing = existing.parent
    if existing.is_file():
        raise InputError(f"--out {out}: {existing} is a file, not a folder; pass another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {existing} is not writable; pass a writable --out folder")
    return out


@contextmanager
def replacing(out: Path, command: str, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temp folder that replaces `out` whole on success, so no stale wheel survives.

    hpa.outputs decides what may be replaced: `out` absent, empty, or holding only what
    `command` wrote there (its manifest); never the user's files, never one of `inputs`.
    """
    out = check_out(out)
    with replace_folder(out, "--out", command, inputs=inputs) as tmp:
        yield tmp


def check_no_deps(wheels: Sequence[Path]) -> list[Path]:
    """The --with-hpacellseg/--with-wheel wheels, each one that installs on Kaggle, given once."""
    extra = [check_no_deps_wheel(Path(w), NO_DEPS_OPTIONS) for w in wheels]
    names = [w.name for w in extra]
    if len(set(names)) < len(names):
        raise InputError(f"the same wheel is given twice ({', '.join(names)}); give each once")
    return extra


def make_bundle(
    out: Path,
    user: str,
    slug: str,
    title: str,
    fetch: Fetcher | None = None,
    log: Callable[[str], None] = print,
    no_deps: Sequence[Path] = (),
) -> list[Path]:
    """hpa's wheel + the wheels Kaggle lacks, flat in `out` (Kaggle skips subfolders) + metadata.

    `no_deps`: more wheels (hpacellseg's, say) copied as they are and listed in NO_DEPS_LIST,
    which the inference notebook installs with `pip install --no-deps`; their dependencies are
    not fetched.
    """
    metadata = dataset_metadata(user, slug, title)
    root = project_root()
    extra = check_no_deps(no_deps)
    names = [w.name for w in extra]
    with replacing(out, "hpa.kaggle bundle", inputs=[root, *extra]) as tmp:
        log(f"building hpa's wheel from {root}")
        hpa_wheel = build_hpa_wheel(root, tmp)
        log(f"  {hpa_wheel.name}")
        log(
            "fetching what Kaggle's image lacks (it has what src/hpa/kaggle/kaggle_image.txt lists)"
        )
        requirements = wheel_requirements(hpa_wheel)
        missing_wheels(requirements, kaggle_image(), fetch or PipFetcher(), tmp, log)
        # Runs where pip failed and hpa is not installed: it names what does not fit the image.
        shutil.copyfile(doctor_standalone.__file__, tmp / STANDALONE_DOCTOR)
        for wheel in extra:
            if (tmp / wheel.name).exists():
                raise InputError(f"{wheel.name} is in the bundle already; do not add it again")
            shutil.copy2(wheel, tmp / wheel.name)
            log(f"  {wheel.name}  (installed with --no-deps, listed in {NO_DEPS_LIST})")
        if extra:
            write_text(tmp / NO_DEPS_LIST, "".join(f"{name}\n" for name in names))
        write_json(tmp / DATASET_METADATA, metadata)
    return sorted(out.resolve().glob("*.whl"))


def check_predict_options(options: Sequence[str], segmenter: str = "watershed") -> list[str]:
    """`options` if hpa.predict takes each after what the inference notebook passes it (with
    SEGMENTER = `segmenter`): composed here, so a bad key fails in a second, not on Kaggle."""
    from hpa.cli import compose

    base = [*NOTEBOOK_PREDICT_ARGS, *NOTEBOOK_SEGMENTATION[segmenter]]
    for option in options:
        key, sep, _ = option.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"--predict-option {option!r}: write KEY=VALUE, an hpa.predict option "
                "(configs/predict.yaml), e.g. tta=d4"
            )
    for i, option in enumerate(options):  # each alone first: the message names the bad one
        try:
            compose("predict", [*base, *options[: i + 1]])
        except InputError as err:
            problem = str(err).removeprefix("config predict: ")
            raise InputError(f"--predict-option {option}: {problem}") from None
    return list(options)


def inference_parameters(
    segmenter_weights: str | None = None, predict_options: Sequence[str] = ()
) -> dict[str, object]:
    """The inference notebook's parameters for --segmenter-weights OWNER/SLUG (SEGMENTER =
    "hpacellseg") and --predict-option KEY=VALUE (PREDICT_OPTIONS), each checked."""
    parameters: dict[str, object] = {}
    segmenter = "watershed"
    if segmenter_weights is not None:
        check_dataset(segmenter_weights, "--segmenter-weights")
        parameters["SEGMENTER"] = segmenter = "hpacellseg"
    if predict_options:
        parameters["PREDICT_OPTIONS"] = check_predict_options(predict_options, segmenter)
    return parameters


def _notebook_json(notebook: dict) -> str:
    """As nbformat (and jupytext) write an .ipynb."""
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def set_parameters(text: str, values: Mapping[str, object], name: str = "notebook") -> str:
    """The .ipynb `text` with each `NAME = ...` assignment of `values` in its cell tagged
    "parameters" replaced by `NAME = repr(value)`; every other byte is left as it was.

    Like `papermill -p NAME VALUE`, but in place: the cell keeps its comments and the other
    parameters. InputError when the notebook has no such cell or assignment.
    """
    notebook = json.loads(text)
    if _notebook_json(notebook) != text:  # else rewriting it would change more than the cell
        raise InputError(f"{name} is not laid out as nbformat writes it; run jupytext --sync")
    cells = [
        cell
        for cell in notebook.get("cells", [])
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise InputError(f"{name} has {len(cells)} cells tagged {PARAMETERS_TAG!r}, not one")
    (cell,) = cells
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    spans = {
        node.targets[0].id: (node.lineno, node.end_lineno or node.lineno)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
    }
    missing = [key for key in values if key not in spans]
    if missing:
        raise InputError(f"{name}'s parameters cell assigns no {', '.join(missing)}")
    lines = source.splitlines(keepends=True)
    for key in sorted(values, key=lambda k: spans[k][0], reverse=True):
        literal = repr(values[key])
        if ast.literal_eval(literal) != values[key]:
            raise ValueError(f"{key}: {values[key]!r} is not a Python literal")
        start, end = spans[key]
        newline = "\n" if lines[end - 1].endswith("\n") else ""
        lines[start - 1 : end] = [f"{key} = {literal}{newline}"]
    cell["source"] = lines if isinstance(cell["source"], list) else "".join(lines)
    return _notebook_json(notebook)


def make_kernels(
    out: Path,
    user: str,
    bundle_slug: str,
    model_slugs: list[str],
    accelerator: str = DEFAULT_ACCELERATOR,
    pinning: str = DEFAULT_PINNING,
    datasets: Sequence[str] = (),
    parameters: Mapping[str, object] | None = None,
) -> list[Path]:
    """`out/<kernel>/` with the notebook and its kernel-metadata.json, for `kaggle kernels push -p`.

    The inference notebook also gets `datasets` (OWNER/SLUG, e.g. hpacellseg's weights) attached
    and `parameters` set in its parameters cell (set_parameters; inference_parameters makes them).
    The notebooks under notebooks/ are only read.
    """
    notebooks = project_root() / "notebooks"
    bundle = f"{user}/{bundle_slug}"
    models = [f"{user}/{s}" if "/" not in s else s for s in model_slugs]
    extra = [check_dataset(d, "data set") for d in datasets]
    metadata = {  # checked before any folder is replaced
        k: kernel_metadata(
            k, user, [bundle, *models, *extra] if k.needs_models else [bundle], accelerator, pinning
        )
        for k in KERNELS
    }
    edited = {
        k: set_parameters(
            (notebooks / k.notebook).read_text(encoding="utf-8"), parameters, k.notebook
        )
        for k in KERNELS
        if k.needs_models and parameters
    }
    written = []
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    for kernel in KERNELS:
        with replacing(out / kernel_slug(kernel), "hpa.kaggle kernels") as tmp:
            if kernel in edited:
                write_text(tmp / kernel.notebook, edited[kernel])
            else:
                shutil.copy2(notebooks / kernel.notebook, tmp / kernel.notebook)
            write_json(tmp / KERNEL_METADATA, metadata[kernel])
        written.append(out / kernel_slug(kernel))
    return written


def make_model_dataset(model_dir: Path, out: Path, user: str, slug: str, title: str) -> Path:
    """Copy an exported model/ (config.json + safetensors) flat into `out` with its metadata."""
    from hpa.models.export import CONFIG, WEIGHTS, read_model_config

    metadata = dataset_metadata(user, slug, title)
    read_model_config(model_dir)  # InputError unless it is an exported hpa model
    with replacing(out, "hpa.kaggle model", inputs=[model_dir]) as tmp:
        for name in (CONFIG, WEIGHTS):
            shutil.copy2(model_dir / name, tmp / name)
        if checksum_path(model_dir / WEIGHTS).is_file():  # so Kaggle checks the upload too
            shutil.copy2(checksum_path(model_dir / WEIGHTS), checksum_path(tmp / WEIGHTS))
        write_json(tmp / DATASET_METADATA, metadata)
    return out
