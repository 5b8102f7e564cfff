"""The TTA choices by name, without torch: what `tta=` accepts (hpa.inference.tta applies them).

Kept apart so that checking a config (hpa.config_check, `hpa.kaggle push --predict-option`) does
not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpa.errors import InputError

# The dihedral group D4. The first four are the old flip TTA, in its order, so `tta: 4` still
# means none, hflip, vflip, hvflip.
TRANSFORMS = ("none", "hflip", "vflip", "hvflip", "rot90", "rot270", "transpose", "transverse")
ALIASES = {
    "d4": list(TRANSFORMS),
    "flips": ["none", "hflip", "vflip", "hvflip"],
    "rot180": ["hvflip"],
}


def transform_names(tta: str | int | Sequence[str]) -> list[str]:
    """`d4`, a count 1-8 (in TRANSFORMS' order) or a list of names/aliases -> transform names."""
    if isinstance(tta, bool):
        tta = [str(tta)]
    if isinstance(tta, int):
        names = list(TRANSFORMS)[:tta] if 1 <= tta <= len(TRANSFORMS) else []
    else:
        items = [tta] if isinstance(tta, str) else list(tta)
        names = [n for item in items for n in ALIASES.get(str(item), [str(item)])]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        raise InputError(
            f"tta={tta!r}: use d4, a count 1-{len(TRANSFORMS)} or a list of "
            f"{', '.join([*TRANSFORMS, *ALIASES])}"
        )
    return list(dict.fromkeys(names))  # a name twice would only weigh it double
