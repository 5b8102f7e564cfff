"""The 19 HPA classes and the `1|3|5` label strings of train.csv."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from hpa.errors import InputError

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE = 18
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}


def parse_labels(text: str | int | float, *, where: str = "label") -> list[int]:
    """`"8|5|0"` -> `[0, 5, 8]`: sorted, duplicates dropped (the real train.csv has `17|17`)."""
    is_float_id = isinstance(text, float) and not np.isnan(text) and float(text).is_integer()
    if isinstance(text, (int, np.integer)) or is_float_id:
        parts = [str(int(text))]
    elif isinstance(text, str) and text.strip():
        parts = text.strip().split("|")
    else:
        raise InputError(
            f"{where}: empty label {text!r}; expected class ids joined by '|', e.g. 0|5"
        )
    ids = set()
    for part in parts:
        part = part.strip()
        if not part.isdigit():
            raise InputError(
                f"{where}: label {part!r} in {text!r} is not a class id; use integers 0-{NUM_CLASSES - 1} joined by '|'"
            )
        ids.add(int(part))
    validate_labels(ids, where=where)
    return sorted(ids)


def validate_labels(ids: Iterable[int], *, where: str = "label") -> None:
    ids = list(ids)
    unknown = [i for i in ids if not 0 <= i < NUM_CLASSES]
    if unknown:
        raise InputError(
            f"{where}: unknown class id {unknown[0]}; valid ids are 0-{NUM_CLASSES - 1} (18 = Negative)"
        )
    if not ids:
        raise InputError(f"{where}: no labels; a sample needs at least one class id")
    if NEGATIVE in ids and len(set(ids)) > 1:
        raise InputError(
            f"{where}: Negative (18) combined with {sorted(set(ids) - {NEGATIVE})}; Negative must stand alone"
        )


def format_labels(ids: Iterable[int]) -> str:
    """`[0, 5, 8]` -> `"0|5|8"`."""
    ids = sorted(set(int(i) for i in ids))
    validate_labels(ids)
    return "|".join(str(i) for i in ids)


def to_multi_hot(ids: Sequence[int]) -> np.ndarray:
    target = np.zeros(NUM_CLASSES, dtype=np.float32)
    target[list(ids)] = 1.0
    return target
