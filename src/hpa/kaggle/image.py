"""What Kaggle's image preinstalls (kaggle_image.txt) and the platform its notebooks run on."""

from __future__ import annotations

from importlib import resources

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

IMAGE_FILE = "kaggle_image.txt"
PYTHON = (3, 12)
PYTHON_FULL = "3.12.13"  # issue 10 (Colab runtime 2026-05-14); the next image moves to 3.13
# Kaggle's image is Ubuntu 22.04 (glibc 2.35); manylinux wheels up to that glibc run there.
GLIBC_MINOR = 35
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)] + [
    "manylinux2014_x86_64"
]
# Environment markers (PEP 508) as they evaluate inside a Kaggle notebook.
MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": PYTHON_FULL,
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": PYTHON_FULL,
    "python_version": f"{PYTHON[0]}.{PYTHON[1]}",
    "sys_platform": "linux",
}


def image_text() -> str:
    return resources.files("hpa.kaggle").joinpath(IMAGE_FILE).read_text()


def parse_image(text: str) -> dict[NormalizedName, Version]:
    """`name==version` lines (comments allowed) -> {canonical name: version}."""
    packages = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(pins) != 1:
            raise ValueError(f"{IMAGE_FILE}: {line!r} must pin one version (name==X.Y.Z)")
        packages[canonicalize_name(req.name)] = Version(pins[0].version)
    return packages


def kaggle_image() -> dict[NormalizedName, Version]:
    """The packages (and versions) every Kaggle notebook starts with."""
    return parse_image(image_text())


def target_tags() -> set[Tag]:
    """Wheel tags that install on Kaggle: cp312 manylinux x86_64 builds and pure-Python wheels."""
    return set(cpython_tags(PYTHON, abis=[f"cp{PYTHON[0]}{PYTHON[1]}"], platforms=PLATFORMS)) | set(
        compatible_tags(PYTHON, f"cp{PYTHON[0]}{PYTHON[1]}", PLATFORMS)
    )
