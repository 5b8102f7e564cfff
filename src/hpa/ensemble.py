"""python -m hpa.ensemble oof=[RUN_DIR_OR_OOF_CSV,...] data_root=DIR out=ensemble.yaml

Searches the ensemble on out-of-fold predictions and writes a YAML that `hpa.predict
ensemble=FILE` reads. mode=weights (default): per-model weights within the image-level and
cell-level groups (coordinate search on the simplex, maximising the trainer's macro mAP), then,
where both levels exist, combine.method and combine.cell_weight. mode=area: the two constants of
downweight.area, grid-searched through the competition metric on a validation submission.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hpa.cli import compose, setup_logging
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import write_text
from hpa.inference.combine import METHODS, combine
from hpa.inputs import read_table
from hpa.labels import NUM_CLASSES
from hpa.outputs import output

log = logging.getLogger("hpa.ensemble")
CLASS_COLUMNS = [str(i) for i in range(NUM_CLASSES)]


# ---------------------------------------------------------------- out-of-fold predictions


def macro_ap(probs: np.ndarray, targets: np.ndarray) -> float:
    """The trainer's val/mAP: torchmetrics' per-class AP, averaged over classes with positives."""
    import torch
    from torchmetrics.functional.classification import multilabel_average_precision

    present = targets.sum(axis=0) > 0
    if not present.any():
        raise InputError("the targets have no positive label of any class; check train.csv")
    ap = multilabel_average_precision(
        torch.from_numpy(probs[:, present].astype(np.float32)),
        torch.from_numpy(targets[:, present].astype(np.int64)),
        num_labels=int(present.sum()),
        average=None,
    )
    return float(torch.nanmean(ap))


def oof_path(item: str | Path) -> Path:
    path = Path(item)
    path = path / "oof.csv" if path.is_dir() else path
    if not path.is_file():
        raise InputError(
            f"oof={item}: no oof.csv there; pass run folders (python -m hpa.train writes "
            "RUN/oof.csv) or oof.csv files"
        )
    return path


def read_oof(path: Path) -> pd.DataFrame:
    """An oof.csv: ID[, cell], fold, 0..18, keyed (and sorted) by ID and cell."""
    frame = read_table(path, str(path), "ID,fold,0..18", keep_default_na=True)
    missing = [c for c in ["ID", *CLASS_COLUMNS] if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; expected ID[,cell],fold,0..18")
    keys = ["ID", "cell"] if "cell" in frame.columns else ["ID"]
    if frame.duplicated(keys).any():
        raise InputError(f"{path}: a {'/'.join(keys)} appears twice; one row per prediction")
    return frame.set_index(keys).sort_index()


def model_dir_for(oof: Path, given: str | None) -> str:
    """The model/ folder the ensemble file names for one oof.csv (RUN/model by default)."""
    if given:
        return str(Path(given).resolve())
    beside = oof.parent / "model"
    if not (beside / "config.json").is_file():
        raise InputError(
            f"no exported model beside {oof} ({beside}); pass models=[MODEL_DIR,...] in the "
            "order of oof"
        )
    return str(beside.resolve())


def image_targets(train_csv: Path, ids: Sequence[str]) -> np.ndarray:
    from hpa.data.records import read_records, targets

    records = read_records(train_csv).set_index("ID")
    unknown = [i for i in ids if i not in records.index]
    if unknown:
        raise InputError(f"oof ID {unknown[0]} is not in {train_csv}; pass the run's data set")
    return targets(records.loc[list(ids)].reset_index())


def cell_targets(
    keys: pd.MultiIndex, train_csv: Path, cells_csv: Path | None
) -> tuple[np.ndarray, str]:
    """Per-cell truth from cells.csv (the oof's `cell` = position among the image's cells by
    ascending cell_id), else each cell's image labels (the weak labels the trainer scored)."""
    ids = list(keys.get_level_values(0))
    if cells_csv is None:
        return image_targets(train_csv, ids), f"weak labels from {train_csv}"
    from hpa.submission.truth import read_cell_classes

    classes = read_cell_classes(cells_csv)
    out = np.zeros((len(keys), NUM_CLASSES), np.float32)
    for row, (sample_id, cell) in enumerate(keys):
        cells = classes.get(sample_id)
        if cells is None or not 0 <= int(cell) < len(cells):
            raise InputError(f"oof cell {sample_id}/{cell} has no row in {cells_csv}")
        out[row, cells[sorted(cells)[int(cell)]]] = 1.0
    return out, f"cell truth from {cells_csv}"


def common_rows(frames: Sequence[pd.DataFrame], what: str) -> list[np.ndarray]:
    """The rows every frame has, in one order, as arrays."""
    index = frames[0].index
    for frame in frames[1:]:
        index = index.intersection(frame.index)
    if len(index) == 0:
        raise InputError(f"the {what} oof files share no rows; pass runs of the same data set")
    dropped = max(len(f) for f in frames) - len(index)
    if dropped:
        log.warning("ensemble: %s oof files: %d rows not in every file are left out", what, dropped)
    return [f.loc[index, CLASS_COLUMNS].to_numpy(np.float64) for f in frames], index


def search_weights(
    preds: Sequence[np.ndarray],
    score: Callable[[np.ndarray], float],
    step: float,
    passes: int,
    min_gain: float,
) -> tuple[np.ndarray, float, float]:
    """Coordinate search on the simplex from equal weights: for each model in turn, try its
    weight on a grid of `step` (the others rescaled to sum to the rest); keep a change only if it
    gains over `min_gain` (a tie keeps the weights nearer to equal: less fitted to the oof).
    Returns (weights, score, score of equal weights)."""
    n = len(preds)

    def score_of(w: np.ndarray) -> float:
        return score(sum(wi * p for wi, p in zip(w, preds, strict=True)))

    weights = np.full(n, 1.0 / n)
    equal = best = score_of(weights)
    if n == 1:
        return weights, best, equal
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, step), 6)
    for _ in range(passes):
        improved = False
        for i in range(n):
            rest = 1.0 - weights[i]
            for value in grid:
                cand = (
                    weights * ((1.0 - value) / rest)
                    if rest > 0
                    else np.full(n, (1 - value) / (n - 1))
                )
                cand[i] = value
                if cand.sum() <= 0:
                    continue
                s = score_of(cand)
                if s > best + min_gain:
                    best, weights, improved = s, cand, True
                    rest = 1.0 - weights[i]
        if not improved:
            break
    return weights, best, equal


def search_ensemble(cfg: DictConfig) -> dict[str, Any]:
    """Weights per level and the combine on the oof files; the ensemble file's content."""
    items = list(cfg.oof)
    if not items:
        raise InputError("oof is empty; pass oof=[RUN_DIR_OR_OOF_CSV,...] (two or more runs)")
    given = list(cfg.models) if cfg.models else [None] * len(items)
    if len(given) != len(items):
        raise InputError(f"models has {len(given)} entries for {len(items)} oof; give one per oof")
    train_csv = Path(cfg.train_csv) if cfg.train_csv else None
    if train_csv is None and cfg.data_root:
        train_csv = Path(cfg.data_root) / "train.csv"
    if train_csv is None:
        raise InputError("set data_root=DIR (its train.csv) or train_csv=FILE for the targets")
    cells_csv = Path(cfg.cells_csv) if cfg.cells_csv else None
    if cells_csv is None and cfg.data_root and (Path(cfg.data_root) / "cells.csv").is_file():
        cells_csv = Path(cfg.data_root) / "cells.csv"

    paths = [oof_path(i) for i in items]
    frames = [read_oof(p) for p in paths]
    models = [model_dir_for(p, g) for p, g in zip(paths, given, strict=True)]
    levels = ["cell" if "cell" in f.index.names else "image" for f in frames]
    search = dict(step=float(cfg.step), passes=int(cfg.passes), min_gain=float(cfg.min_gain))
    weights = [0.0] * len(items)
    report: dict[str, Any] = {}
    means: dict[str, tuple[np.ndarray, Any]] = {}
    for level in ("image", "cell"):
        members = [i for i, lv in enumerate(levels) if lv == level]
        if not members:
            continue
        preds, index = common_rows([frames[i] for i in members], level)
        if level == "image":
            truth, source = image_targets(train_csv, list(index)), str(train_csv)
        else:
            truth, source = cell_targets(index, train_csv, cells_csv)
        w, best, equal = search_weights(preds, lambda p, t=truth: macro_ap(p, t), **search)
        for i, wi in zip(members, w, strict=True):
            weights[i] = round(float(wi), 4)
        means[level] = (sum(wi * p for wi, p in zip(w, preds, strict=True)), index)
        report[level] = {
            "rows": len(index),
            "targets": source,
            "models": [models[i] for i in members],
            "mAP_per_model": [round(macro_ap(p, truth), 5) for p in preds],
            "mAP_equal_weights": round(equal, 5),
            "mAP_chosen": round(best, 5),
        }
        log.info(
            "ensemble: %s level, %d rows: equal weights %.4f, chosen %s %.4f",
            level,
            len(index),
            equal,
            [weights[i] for i in members],
            best,
        )
    result: dict[str, Any] = {"models": models, "model_weights": weights}
    if "image" in means and "cell" in means:
        result["combine"], report["combine"] = search_combine(
            means, cells_truth=cell_targets(means["cell"][1], train_csv, cells_csv)[0], cfg=cfg
        )
    result["oof_scores"] = report
    result["searched_on"] = [str(p) for p in paths]
    return result


def search_combine(means, cells_truth: np.ndarray, cfg: DictConfig) -> tuple[dict, dict]:
    """combine.method x combine.cell_weight on the cells whose image has an image-level oof."""
    cell_probs, cell_index = means["cell"]
    image_probs, image_index = means["image"]
    position = pd.Series(np.arange(len(image_index)), index=image_index)
    ids = cell_index.get_level_values(0)
    have = ids.isin(image_index)
    if not have.any():
        raise InputError("no cell-level oof row belongs to an image of the image-level oof")
    cell, truth = cell_probs[have], cells_truth[have]
    image = image_probs[position.loc[ids[have]].to_numpy()]
    methods = list(cfg.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"methods={methods}: use some of {', '.join(METHODS)}")
    defaults = compose("predict", []).combine
    default_score = macro_ap(
        combine(cell, image, len(cell), defaults.method, float(defaults.cell_weight)), truth
    )
    best = (default_score, defaults.method, float(defaults.cell_weight))
    for method in methods:
        for w in [float(x) for x in cfg.cell_weights] if method != "product" else [0.5]:
            s = macro_ap(combine(cell, image, len(cell), method, w), truth)
            if s > best[0] + float(cfg.min_gain):
                best = (s, method, w)
    chosen = {"method": best[1], "cell_weight": best[2]}
    info = {
        "rows": int(have.sum()),
        "mAP_default": round(default_score, 5),
        "mAP_chosen": round(best[0], 5),
    }
    log.info("ensemble: combine %s, oof mAP %.4f (default %.4f)", chosen, best[0], default_score)
    return chosen, info


# ---------------------------------------------------------------- area weights on a submission


def tune_area(cfg: DictConfig) -> dict[str, Any]:
    """Grid-search downweight.area.border/interior through the competition metric.

    `submission` must be predicted with the area weights off; each detection's confidence is
    scaled as hpa.predict would (hpa.inference.combine.area_factors) and the set scored against
    `truth_dir` for every pair of constants (hpa.evaluate's metric, the masks' IoUs computed once).
    """
    from hpa.inference.combine import area_factors
    from hpa.submission.metric import MeanAveragePrecision, mask_ious
    from hpa.submission.predictions import decode_masks, parse_prediction_string, read_submission
    from hpa.submission.truth import TruthSet

    if not cfg.submission or not cfg.truth_dir:
        raise InputError("mode=area needs submission=VALIDATION.csv and truth_dir=DIR")
    frame = read_submission(cfg.submission).set_index("ID")
    truth = TruthSet(cfg.truth_dir)
    reference = float(cfg.area.reference_size)
    images = []  # per image: detections, masks' (area, on border), shape, iou, truth ids, cells
    for sample_id in tqdm(truth.ids, desc="read", unit="img", disable=not cfg.progress):
        mask = truth.mask(sample_id)
        cells = truth.cell_classes.get(sample_id, {})
        if sample_id not in frame.index:  # its cells still count as truth, all missed
            images.append(
                ([], np.zeros(0), np.zeros(0, bool), mask.shape, np.zeros((0, 0)), [], cells)
            )
            continue
        row = frame.loc[sample_id]
        where = f"submission row {sample_id}"
        detections, texts = parse_prediction_string(row["PredictionString"], where=where)
        masks = decode_masks(texts, *mask.shape, where=where)
        iou, truth_ids = mask_ious(masks, mask)
        area = np.array([m.sum() for m in masks], np.float64)
        edge = np.array(
            [m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks], bool
        )
        images.append((detections, area, edge, mask.shape, iou, truth_ids, cells))

    def score(border: float, interior: float) -> float | None:
        metric = MeanAveragePrecision(float(cfg.iou_threshold))
        for detections, area, edge, shape, iou, truth_ids, cells in images:
            factor = area_factors(area, edge, shape, border, interior, reference)
            scaled = [
                type(d)(d.class_id, d.confidence * factor[d.mask], d.mask) for d in detections
            ]
            metric.add_matches(scaled, iou, truth_ids, cells)
        return metric.result()["mAP"]

    grid = [(float(b), float(i)) for b in cfg.area.borders for i in cfg.area.interiors]
    if (0.0, 0.0) not in grid:
        grid.insert(0, (0.0, 0.0))
    scores = {}
    for pair in tqdm(grid, desc="area grid", unit="pair", disable=not cfg.progress):
        scores[pair] = score(*pair)
    if scores[(0.0, 0.0)] is None:
        raise InputError(f"truth_dir={cfg.truth_dir} has no annotated cell; nothing to score")
    off = scores[(0.0, 0.0)]
    best = max(grid, key=lambda p: (scores[p] > off + float(cfg.min_gain), scores[p]))
    if scores[best] <= off + float(cfg.min_gain):
        best = (0.0, 0.0)
    log.info("ensemble: area weights %s: mAP %.4f (off %.4f)", best, scores[best], off)
    return {
        "downweight": {
            "area": {
                "border": best[0] or None,
                "interior": best[1] or None,
                "reference_size": reference,
            }
        },
        "area_scores": {
            "mAP_off": round(off, 5),
            "mAP_chosen": round(scores[best], 5),
            "grid": [
                {"border": b, "interior": i, "mAP": round(s, 5)} for (b, i), s in scores.items()
            ],
            "submission": str(cfg.submission),
            "truth_dir": str(cfg.truth_dir),
        },
    }


# ---------------------------------------------------------------- entry point


def write_ensemble_file(out: Path, content: dict[str, Any], header: str, merge: bool) -> Path:
    """YAML for `hpa.predict ensemble=FILE`. `merge`: keep what an existing file holds besides
    (mode=area adds downweight.area to the weights a mode=weights run wrote)."""
    if merge and out.is_file():
        try:
            old = yaml.safe_load(out.read_text())
        except yaml.YAMLError as err:
            raise InputError(
                f"out={out} exists and is not YAML ({err}); pass another out"
            ) from None
        if isinstance(old, dict):
            content = {**old, **content}
    text = f"# {header}\n# Read by: python -m hpa.predict ensemble={out.name} ...\n"
    return write_text(out, text + yaml.safe_dump(content, sort_keys=False))


def run(cfg: DictConfig, argv: Sequence[str]) -> Path:
    out = Path(cfg.out)
    oofs = list(cfg.oof) if OmegaConf.is_list(cfg.get("oof")) else [cfg.get("oof")]
    inputs = [*oofs, cfg.get("submission"), cfg.get("truth_dir")]
    with output(out, "out", "hpa.ensemble", inputs=inputs):
        if cfg.mode == "weights":
            content = search_ensemble(cfg)
        elif cfg.mode == "area":
            content = tune_area(cfg)
        else:
            raise InputError(f"mode={cfg.mode!r}: use weights or area")
        header = "python -m hpa.ensemble " + " ".join(argv)
        write_ensemble_file(out, content, header, merge=cfg.mode == "area")
    print(yaml.safe_dump({k: v for k, v in content.items() if "scores" not in k}, sort_keys=False))
    print(f"wrote {out}")
    return out


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose("ensemble", argv)
    run(cfg, argv)


if __name__ == "__main__":
    main()
