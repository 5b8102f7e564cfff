"""Per-model ensemble weights and the ensemble file `python -m hpa.ensemble` writes.

The file is YAML holding a subset of predict's keys (models, model_weights, combine.*,
downweight.area.*) plus information (scores, what it was searched on) that predict ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hpa.errors import InputError

# The keys an ensemble file may set in predict's config, dotted.
SETTINGS = (
    "models",
    "model_weights",
    "combine.method",
    "combine.cell_weight",
    "downweight.area.border",
    "downweight.area.interior",
    "downweight.area.reference_size",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted != "model_weights":
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def read_ensemble_file(path: str | Path) -> dict[str, Any]:
    """The predict settings in an ensemble file, dotted (`combine.method`); model folders given
    relative to the file are made absolute."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ensemble={path}: no such file; write one with python -m hpa.ensemble")
    try:
        tree = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"ensemble={path} is not valid YAML ({err}); write it again") from None
    if not isinstance(tree, Mapping):
        raise InputError(f"ensemble={path}: expected a mapping of predict settings (models: ...)")
    settings = {k: v for k, v in flatten(tree).items() if k in SETTINGS}
    if not settings:
        raise InputError(f"ensemble={path} sets none of {', '.join(SETTINGS)}")
    models = settings.get("models")
    if models is not None:
        if isinstance(models, str):
            models = [models]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise InputError(f"ensemble={path}: models must be a list of model folders")
        settings["models"] = [
            str((path.parent / m) if not Path(m).is_absolute() else m) for m in models
        ]
    return settings


def model_names(model_dir: str | Path) -> set[str]:
    """What a mapping in model_weights may call a model: its path, its folder's name and, for a
    run's `model/` folder, the run folder's name."""
    path = Path(model_dir)
    names = {str(model_dir), path.name}
    if path.name == "model":
        names.add(path.parent.name)
    return names


def resolve_model_weights(
    weights: Sequence[float] | Mapping[str, float] | None, model_dirs: Sequence[str]
) -> list[float]:
    """One weight >= 0 per model: equal (None), a list in models' order, or {name: weight} (the
    models a mapping does not name keep 1.0)."""
    n = len(model_dirs)
    if weights is None:
        return [1.0] * n
    if isinstance(weights, Mapping):
        out = [1.0] * n
        for key, value in weights.items():
            hits = [i for i, d in enumerate(model_dirs) if str(key) in model_names(d)]
            if not hits:
                raise InputError(
                    f"model_weights names {key!r}, which is none of the models {list(model_dirs)}; "
                    "use a model folder, its name or its run's name"
                )
            for i in hits:
                out[i] = value
    else:
        out = list(weights)
        if len(out) != n:
            raise InputError(
                f"model_weights has {len(out)} values for {n} models; give one per model, in "
                "the order of models (or a mapping {name: weight})"
            )
    bad = [w for w in out if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0]
    if bad:
        raise InputError(f"model_weights: {bad[0]!r} is not a number >= 0")
    if not any(out):
        raise InputError("model_weights are all 0; give at least one model a weight > 0")
    return [float(w) for w in out]
