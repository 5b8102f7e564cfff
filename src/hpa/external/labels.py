"""Labels of external data -> the 19 competition classes (HPA location names, ids, 2018 classes)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from hpa.errors import InputError
from hpa.labels import CLASS_NAMES, NEGATIVE, NUM_CLASSES

# HPA's subcellular-location vocabulary -> competition class, as the competition merged them (the
# HPA team's own download notebook uses the same table). Keys are matched case-insensitively.
# Deliberately left out, because no class holds them cleanly: Microtubule ends, Cytokinetic
# bridge, Midbody, Midbody ring, Mitotic chromosome, Kinetochore, Cleavage furrow, Nucleoli rim,
# Rods & rings, Primary cilium, Basal body, ... A sample with such a label follows the
# `unmapped_labels` policy (drop the sample, or drop just that label).
ALIASES: dict[str, int] = {
    "Focal adhesion sites": 9,  # drawn along actin stress fibres; the competition folded them in
    "Centriolar satellite": 12,
    "Microtubule organizing center": 12,  # a 2018 class; HPA later merged it into Centrosome
    "Cell junctions": 13,
    "Vesicles": 17,
    "Peroxisomes": 17,
    "Endosomes": 17,
    "Lysosomes": 17,
    "Lipid droplets": 17,
    "Cytoplasmic bodies": 17,
    "No staining": 18,
}

# The 2018 competition (Human Protein Atlas Image Classification): `Id,Target`, ids 0-27.
CLASSES_2018: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)

POLICIES = ("drop_sample", "drop_label")
_SEPARATORS = re.compile(r"[,|;]")


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


NAME_TO_CLASS: dict[str, int] = {_key(n): i for i, n in enumerate(CLASS_NAMES)} | {
    _key(n): i for n, i in ALIASES.items()
}
# 2018 id -> 2021 class (None: no clean mapping; 15 Microtubule ends, 16 Cytokinetic bridge,
# 27 Rods & rings). It follows the name table, so both sources agree on every class.
MAP_2018: dict[int, int | None] = {
    i: NAME_TO_CLASS.get(_key(name)) for i, name in enumerate(CLASSES_2018)
}


def translate_names(text: str) -> tuple[list[int], list[str]]:
    """`"Nucleoplasm,Vesicles"` or `"0|17"` -> (class ids, tokens that map to no class)."""
    ids, unmapped = set(), []
    for token in _SEPARATORS.split(str(text)):
        token = token.strip()
        if not token:
            continue
        if token.isdigit():
            cls = int(token) if int(token) < NUM_CLASSES else None
        else:
            cls = NAME_TO_CLASS.get(_key(token))
        if cls is None:
            unmapped.append(token)
        else:
            ids.add(cls)
    return sorted(ids), unmapped


def translate_2018(text: str) -> tuple[list[int], list[str]]:
    """`"16 0 27"` (2018 ids) -> (class ids, names of the 2018 classes that have no mapping)."""
    ids, unmapped = set(), []
    for token in str(text).split():
        if not token.isdigit() or int(token) >= len(CLASSES_2018):
            raise InputError(
                f"2018 label {token!r} in {text!r} is not a class id; expected ids 0-27 "
                "separated by spaces (column Target of the 2018 train.csv)"
            )
        cls = MAP_2018[int(token)]
        if cls is None:
            unmapped.append(CLASSES_2018[int(token)])
        else:
            ids.add(cls)
    return sorted(ids), unmapped


class LabelMapper:
    """Turns label text into a `0|16` string, or None for a dropped sample, counting every drop."""

    def __init__(self, translate: Callable[[str], tuple[list[int], list[str]]], unmapped: str):
        if unmapped not in POLICIES:
            raise InputError(f"unmapped_labels={unmapped!r}: use one of {', '.join(POLICIES)}")
        self.translate = translate
        self.policy = unmapped
        self.dropped_samples: Counter[str] = Counter()  # reason -> samples dropped
        self.dropped_labels: Counter[str] = Counter()  # label -> samples that lost it
        self.n_dropped = 0

    def __call__(self, text: str) -> str | None:
        ids, unmapped = self.translate(text)
        reasons = []
        if unmapped and self.policy == "drop_sample":
            reasons = [f"unmapped label {name!r}" for name in sorted(set(unmapped))]
        else:
            self.dropped_labels.update(sorted(set(unmapped)))
            if not ids:
                reasons = ["no label left" if unmapped else "no label"]
            elif NEGATIVE in ids and len(ids) > 1:
                # "No staining" beside a location contradicts itself; the competition never has it.
                reasons = ["Negative combined with other labels"]
        if reasons:
            self.dropped_samples.update(reasons)
            self.n_dropped += 1
            return None
        return "|".join(map(str, ids))
