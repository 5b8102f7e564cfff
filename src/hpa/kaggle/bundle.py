"""Write the folders to upload: the offline bundle, one folder per kernel, a model dataset."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hpa import doctor_standalone
from hpa.errors import InputError
from hpa.fsio import atomic_dir, write_json, write_text
from hpa.kaggle.image import kaggle_image
from hpa.kaggle.metadata import (
    DEFAULT_ACCELERATOR,
    DEFAULT_PINNING,
    KERNELS,
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

DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
# What a folder this module wrote may hold; anything else means --out points at the user's files.
STANDALONE_DOCTOR = "hpa_doctor.py"  # hpa.doctor_standalone, for the notebooks' install cell
OURS = ("*.whl", "*.ipynb", "*.json", "*.safetensors", STANDALONE_DOCTOR, NO_DEPS_LIST)


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
def replacing(out: Path) -> Iterator[Path]:
    """Yield a temp folder that replaces `out` whole on success, so no stale wheel survives."""
    out = check_out(out)
    if out.exists():
        theirs = [p.name for p in out.iterdir() if not any(p.match(g) for g in OURS) or p.is_dir()]
        if theirs:
            raise InputError(
                f"{out} holds files this command did not write ({', '.join(sorted(theirs)[:3])}); "
                "pass a new or empty --out folder"
            )
    with atomic_dir(out) as tmp:
        yield tmp


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
    extra = [check_no_deps_wheel(Path(w), "--with-hpacellseg/--with-wheel") for w in no_deps]
    names = [w.name for w in extra]
    if len(set(names)) < len(names):
        raise InputError(f"the same wheel is given twice ({', '.join(names)}); give each once")
    with replacing(out) as tmp:
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


def make_kernels(
    out: Path,
    user: str,
    bundle_slug: str,
    model_slugs: list[str],
    accelerator: str = DEFAULT_ACCELERATOR,
    pinning: str = DEFAULT_PINNING,
) -> list[Path]:
    """`out/<kernel>/` with the notebook and its kernel-metadata.json, for `kaggle kernels push -p`."""
    notebooks = project_root() / "notebooks"
    bundle = f"{user}/{bundle_slug}"
    models = [f"{user}/{s}" if "/" not in s else s for s in model_slugs]
    metadata = {  # checked before any folder is replaced
        k: kernel_metadata(
            k, user, [bundle, *models] if k.needs_models else [bundle], accelerator, pinning
        )
        for k in KERNELS
    }
    written = []
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    for kernel in KERNELS:
        with replacing(out / kernel_slug(kernel)) as tmp:
            shutil.copy2(notebooks / kernel.notebook, tmp / kernel.notebook)
            write_json(tmp / KERNEL_METADATA, metadata[kernel])
        written.append(out / kernel_slug(kernel))
    return written


def make_model_dataset(model_dir: Path, out: Path, user: str, slug: str, title: str) -> Path:
    """Copy an exported model/ (config.json + safetensors) flat into `out` with its metadata."""
    from hpa.models.export import CONFIG, WEIGHTS, read_model_config

    metadata = dataset_metadata(user, slug, title)
    read_model_config(model_dir)  # InputError unless it is an exported hpa model
    with replacing(out) as tmp:
        for name in (CONFIG, WEIGHTS):
            shutil.copy2(model_dir / name, tmp / name)
        write_json(tmp / DATASET_METADATA, metadata)
    return out
