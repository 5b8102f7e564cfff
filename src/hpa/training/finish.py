"""End of a run: metrics of the best checkpoint -> metrics.json; its weights -> model/."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from hpa.fsio import atomic_path, write_json
from hpa.models.export import export_model
from hpa.training.checkpointing import weights_only
from hpa.training.module import HPAModule

log = logging.getLogger(__name__)


class ValidationPredictions(pl.Callback):
    """Keeps the probabilities and targets of the latest validation epoch, in loader order.

    `validation_step` returns its batch's probabilities; this collects them, so that the end of
    a run can write out-of-fold predictions and plots from the final validation of the best
    checkpoint without flags on the module.
    """

    def __init__(self) -> None:
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.probs, self.targets = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if outputs is not None:
            self.probs.append(outputs["probs"].detach().cpu())
            self.targets.append(batch[1].detach().cpu())

    def collected(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.probs:
            return None
        return torch.cat(self.probs), torch.cat(self.targets)


class SamplesSeen(pl.Callback):
    """Counts the training samples of a fit (this process's batches), for metrics.json's
    `timing`, which `python -m hpa.runs` shows as img/s."""

    def __init__(self) -> None:
        self.samples = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch[1])  # the targets: one row per image (or cell, or bag)

    def timing(self, started: str, train_s: float, world_size: int = 1) -> dict[str, Any]:
        """`started` (ISO time) and `train_s` (seconds) measured around trainer.fit; every rank
        sees as many samples as this one (DistributedSampler)."""
        samples = self.samples * world_size
        return {
            "started": started,
            "train_s": round(train_s, 3),
            "train_samples": samples,
            "train_samples_per_s": round(samples / train_s, 3) if train_s > 0 else None,
        }


def finish_run(
    trainer: pl.Trainer,
    module: HPAModule,
    datamodule: Any,
    out: Path,
    predictions: ValidationPredictions,
    timing: dict[str, Any] | None,
    report: bool,
) -> dict[str, Any]:
    """Validate the best checkpoint, then (rank 0 only) write metrics.json, model/, oof.csv and
    report_data.npz from those same weights (with callbacks=ema: the average that was
    validated), and (`report`) draw plots/ and report.html from them. `timing`
    (SamplesSeen.timing) goes into metrics.json as it is."""
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt and ckpt.best_model_path else None
    results = trainer.validate(
        module,
        datamodule=datamodule,
        ckpt_path=best or None,
        verbose=False,
        **weights_only(trainer.validate),
    )[0]
    best_epoch = trainer.current_epoch
    if best:
        # Validation swapped the checkpoint's weights in (for EMA, its average) and back out
        # again: export exactly the weights that were validated.
        saved = torch.load(best, map_location="cpu", weights_only=True)
        module.load_state_dict(saved["state_dict"])
        best_epoch = int(saved.get("epoch", best_epoch))
    collected = predictions.collected()
    in_order = trainer.world_size == 1
    if collected and not in_order and module.hparams.level == "image":
        collected = gather_predictions(module, *collected, len(datamodule.val_set))
        in_order = collected is not None
    per_class = {name: results.get(f"val/AP/{name}", float("nan")) for name in module.class_names}
    hparams = module.hparams
    metrics = {
        "val/mAP": results["val/mAP"],
        "val/AP_per_class": {k: (None if math.isnan(v) else v) for k, v in per_class.items()},
        "val/F1": results.get("val/F1"),
        "val/loss": results.get("val/loss"),
        "epoch": best_epoch,
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best,
        "backbone": hparams.model["backbone"],
        "image_size": int(hparams.image_size),
        "fold": int(datamodule.fold),
    }
    if timing:
        metrics["timing"] = timing
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        export_model(
            module.net,
            out / "model",
            {
                "backbone": hparams.model["backbone"],
                "num_classes": len(module.class_names),
                "in_chans": int(hparams.model.get("in_chans", 4)),
                "global_pool": hparams.model.get("global_pool"),
                "class_names": list(module.class_names),
                "image_size": int(hparams.image_size),
                "level": hparams.level,
                # level=cell: how its crops were cut
                "cell_margin": datamodule.cell_margin if hparams.level == "cell" else None,
                "metrics": {"val/mAP": metrics["val/mAP"], "epoch": metrics["epoch"]},
            },
        )
        if collected:
            if report:
                write_plots(module, datamodule, *collected, metrics, out)
            write_oof(module, datamodule, *collected, out, in_order)
            write_report(datamodule, *collected, out, in_order, draw=report)
        log.info(
            "val/mAP %.4f (epoch %d); wrote %s and %s",
            metrics["val/mAP"],
            metrics["epoch"],
            out / "metrics.json",
            out / "model",
        )
    return metrics


def gather_predictions(
    module: HPAModule, probs: torch.Tensor, targets: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every rank's validation predictions, in dataset order, on every rank (a collective call).

    Lightning validates under a DistributedSampler without shuffling: rank r gets samples
    r, r + W, r + 2W, ... of the dataset padded to a multiple of W by repeating its start. So the
    gathered (W, L, C) tensors, transposed to (L, W, C) and flattened, are the padded dataset
    order; the first n rows are the dataset. None if this rank's count is not the expected one.
    """
    world_size = module.trainer.world_size
    per_rank = -(-n // world_size)
    if len(probs) != per_rank:
        log.warning(
            "oof: %d predictions on this rank, expected %d; no oof.csv", len(probs), per_rank
        )
        return None

    def in_dataset_order(local: torch.Tensor) -> torch.Tensor:
        gathered = module.all_gather(local.to(module.device))  # (W, L, C)
        return gathered.transpose(0, 1).reshape(-1, local.shape[1])[:n].cpu()

    return in_dataset_order(probs), in_dataset_order(targets)


def write_plots(
    module: HPAModule,
    datamodule: Any,
    probs: torch.Tensor,
    targets: torch.Tensor,
    metrics: dict,
    out: Path,
) -> None:
    """PNG plots in out/plots/: per-class AP, precision-recall curves, labelled samples."""
    from hpa.training import plots

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    plots.plot_ap_bars(metrics["val/AP_per_class"], folder / "ap_per_class.png")
    plots.plot_pr_curves(probs, targets, module.class_names, folder / "pr_curves.png")
    val_set = datamodule.val_set
    n = min(12, len(val_set), len(probs))
    preview = getattr(val_set, "preview", None)  # a bag of cells shows its crops in a grid
    images = [preview(i) if preview else val_set[i][0].numpy() for i in range(n)]
    plots.plot_samples(images, probs[:n], targets[:n], folder / "val_samples.png")


def write_oof(
    module: HPAModule,
    datamodule: Any,
    probs: torch.Tensor,
    targets: torch.Tensor,
    out: Path,
    in_order: bool,
) -> None:
    """out/oof.csv: validation probabilities keyed by sample ID (and, for cell-level runs, the
    cell).

    `in_order`: the predictions follow the validation set's order (one process, or gathered
    from every DDP rank), so rows map to the validation set's items.
    """
    import pandas as pd

    val_set = datamodule.val_set
    keys = val_set.item_keys()
    if not in_order or len(keys["ID"]) != len(probs):
        return  # e.g. a debug run that validated a few batches only
    cells = getattr(val_set, "cells", None)
    if cells is not None:
        # Bags of cells (model=mil): validation scored images, but the exported model scores
        # cells, so the oof file holds what it predicts for every validation cell (hpa.ensemble
        # reads the rows' level from their keys, and must see a cell model).
        cell_set = cells()
        probs, keys = predict_dataset(module.net, cell_set), cell_set.item_keys()
    frame = pd.DataFrame(probs.numpy(), columns=[str(i) for i in range(probs.shape[1])])
    frame.insert(0, "fold", int(datamodule.fold))
    for position, (name, values) in enumerate(keys.items()):
        frame.insert(position, name, values)
    with atomic_path(out / "oof.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.5f")
    merge_sweep_oof(out, key=list(keys))


def write_report(
    datamodule: Any,
    probs: torch.Tensor,
    targets: torch.Tensor,
    out: Path,
    in_order: bool,
    draw: bool,
) -> Path | None:
    """out/report_data.npz and (`draw`) the out/report.html drawn from it (hpa.viz.report). A
    finished run never fails here: a drawing error is one line in the log, and the run's other
    files stand (`python -m hpa.show run=DIR` draws or redraws it from report_data.npz)."""
    try:
        from hpa.training.plots import composite
        from hpa.viz.report import collect, save_run_data, write_run_report

        val_set = datamodule.val_set
        preview = getattr(val_set, "preview", None)  # a bag of cells: its crops in a grid

        def picture(i: int):
            return composite(preview(i) if preview else val_set[i][0].numpy())

        keys = val_set.item_keys()
        if not in_order or len(keys["ID"]) != len(probs):
            # rows that do not follow the validation set (a debug run's few batches): no
            # thumbnails, since a row's picture would be another sample's
            keys, picture = {"row": list(range(len(probs)))}, None
        data = collect(probs.numpy(), targets.numpy(), keys, picture)
        save_run_data(out, data)
        if not draw:
            log.info("report: not drawn (report=false); python -m hpa.show run=%s draws it", out)
            return None
        path = write_run_report(out, data)
    except Exception as err:  # noqa: BLE001 - a report must not fail a finished training
        log.warning(
            "report: not written (%s: %s)",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
        return None
    log.info("report: %s", path)
    return path


def predict_dataset(net: torch.nn.Module, dataset: Any, batch_size: int = 64) -> torch.Tensor:
    """Sigmoid outputs (N x K, CPU) of `net` in eval mode over a dataset of (input, target)."""
    from torch.utils.data import DataLoader

    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    outputs = []
    with torch.no_grad():
        for inputs, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            outputs.append(torch.sigmoid(net(inputs.to(device)).float()).cpu())
    net.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros((0, 0))


def merge_sweep_oof(out: Path, key: list[str] | None = None) -> None:
    """In a multirun (data.fold=0,1,2,3,4), gather every fold's oof.csv into the sweep folder."""
    import pandas as pd

    sweep = out.parent
    parts = sorted(sweep.glob("*/oof.csv"))
    if len(parts) < 2 or not (sweep / "multirun.yaml").exists():
        return
    frames = [pd.read_csv(p) for p in parts]
    folds = [tuple(sorted(set(f["fold"]))) if "fold" in f else () for f in frames]
    if any(len(f) != 1 for f in folds) or len(set(folds)) != len(folds):
        # Not a sweep over data.fold (e.g. an lr or Optuna search on one fold): the jobs predict
        # the same samples with different settings, and a merged file would mean nothing.
        log.info("oof: the jobs of %s do not cover distinct folds; no merged oof.csv", sweep)
        return
    merged = pd.concat(frames)
    merged = merged.drop_duplicates(key or ["ID"], keep="last")
    with atomic_path(sweep / "oof.csv") as tmp:
        merged.to_csv(tmp, index=False, float_format="%.5f")
