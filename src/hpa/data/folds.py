"""Multilabel-stratified K folds (iterative stratification, as every top team used)."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa.errors import InputError


def stratified_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) per row, balancing every class across folds."""
    if n_folds < 2:
        raise InputError(f"data.n_folds={n_folds}: need at least 2 folds")
    if len(targets) < n_folds:
        raise InputError(f"{len(targets)} samples cannot be split into data.n_folds={n_folds} folds")
    folds = np.zeros(len(targets), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        folds[val_idx] = k
    return folds
