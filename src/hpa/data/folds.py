"""Multilabel-stratified K folds (iterative stratification, as every top team used)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa.errors import InputError


def stratified_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) per row, balancing every class across folds."""
    if n_folds < 2:
        raise InputError(f"data.n_folds={n_folds}: need at least 2 folds")
    if len(targets) < n_folds:
        raise InputError(
            f"{len(targets)} samples cannot be split into data.n_folds={n_folds} folds"
        )
    folds = np.zeros(len(targets), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        folds[val_idx] = k
    return folds


def grouped_stratified_folds(
    targets: np.ndarray, groups: Iterable[object], n_folds: int, seed: int
) -> np.ndarray:
    """Like `stratified_folds`, but every row of a group (e.g. one antibody) lands in one fold.

    iterative-stratification has no grouped variant, so whole groups are stratified by the union
    of their rows' labels and each row takes its group's fold. Rows with an empty group are groups
    of their own.
    """
    keys = [
        str(g) if str(g) not in ("", "nan", "None") else f"\0row{i}" for i, g in enumerate(groups)
    ]
    if len(keys) != len(targets):
        raise ValueError(f"{len(keys)} groups for {len(targets)} rows")
    unique, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    group_targets = np.zeros((len(unique), targets.shape[1]), dtype=targets.dtype)
    np.maximum.at(group_targets, inverse, targets)
    return stratified_folds(group_targets, n_folds, seed)[inverse]
