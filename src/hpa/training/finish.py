"""End of a run: metrics of the best checkpoint -> metrics.json; its weights -> model/."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from hpa.fsio import atomic_path, write_json
from hpa.models.export import export_model
from hpa.training.checkpointing import weights_only
from hpa.training.module import HPAModule

log = logging.getLogger(__name__)


def finish_run(
    trainer: pl.Trainer, module: HPAModule, datamodule: pl.LightningDataModule, out: Path, cfg: Any
) -> dict[str, Any]:
    """Re-validate the best checkpoint, then (rank 0 only) write metrics.json and export model/."""
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt and ckpt.best_model_path else None
    module.collect_predictions = True
    module.predictions, module.prediction_targets = [], []
    results = trainer.validate(
        module,
        datamodule=datamodule,
        ckpt_path=best or None,
        verbose=False,
        **weights_only(trainer.validate),
    )[0]
    module.collect_predictions = False
    in_order = trainer.world_size == 1
    if not in_order and module.hparams.level == "image" and module.predictions:
        in_order = gather_predictions(module, len(datamodule.val_set), trainer.world_size)
    per_class = {name: results.get(f"val/AP/{name}", float("nan")) for name in module.class_names}
    metrics = {
        "val/mAP": results["val/mAP"],
        "val/AP_per_class": {k: (None if math.isnan(v) else v) for k, v in per_class.items()},
        "val/F1": results.get("val/F1"),
        "val/loss": results.get("val/loss"),
        "epoch": int(_best_epoch(best, trainer)),
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best,
        "backbone": cfg.model.backbone,
        "image_size": int(cfg.data.image_size),
        "fold": int(cfg.data.fold),
    }
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        export_model(
            module.net,
            out / "model",
            {
                "backbone": cfg.model.backbone,
                "num_classes": len(module.class_names),
                "in_chans": int(cfg.model.in_chans),
                "global_pool": cfg.model.get("global_pool"),
                "class_names": list(module.class_names),
                "image_size": int(cfg.data.image_size),
                "level": module.hparams.level,
                "cell_margin": cfg.data.get("cell_margin"),  # level=cell: how its crops were cut
                "metrics": {"val/mAP": metrics["val/mAP"], "epoch": metrics["epoch"]},
            },
        )
        write_plots_and_oof(module, datamodule, metrics, out, in_order)
        log.info(
            "val/mAP %.4f (epoch %d); wrote %s and %s",
            metrics["val/mAP"],
            metrics["epoch"],
            out / "metrics.json",
            out / "model",
        )
    return metrics


def gather_predictions(module: HPAModule, n: int, world_size: int) -> bool:
    """Every rank's validation predictions, in dataset order, on every rank (a collective call).

    Lightning validates under a DistributedSampler without shuffling: rank r gets samples
    r, r + W, r + 2W, ... of the dataset padded to a multiple of W by repeating its start. So the
    gathered (W, L, C) tensors, transposed to (L, W, C) and flattened, are the padded dataset
    order; the first n rows are the dataset. False (and nothing changed) if shapes disagree.
    """
    import torch

    probs = torch.cat(module.predictions)
    targets = torch.cat(module.prediction_targets)
    per_rank = -(-n // world_size)
    if len(probs) != per_rank:
        log.warning(
            "oof: %d predictions on this rank, expected %d; no oof.csv", len(probs), per_rank
        )
        return False

    def in_dataset_order(local: torch.Tensor) -> torch.Tensor:
        gathered = module.all_gather(local.to(module.device))  # (W, L, C)
        return gathered.transpose(0, 1).reshape(-1, local.shape[1])[:n].cpu()

    module.predictions = [in_dataset_order(probs)]
    module.prediction_targets = [in_dataset_order(targets)]
    return True


def write_plots_and_oof(
    module: HPAModule, datamodule: Any, metrics: dict, out: Path, in_order: bool
) -> None:
    """PNG plots in out/plots/, and out/oof.csv (validation probabilities by sample ID).

    `in_order`: the predictions follow the validation set's order (one process, or gathered
    from every DDP rank), so rows map to sample IDs.
    """
    import pandas as pd
    import torch

    from hpa.training import plots

    if not module.predictions:
        return
    probs = torch.cat(module.predictions)
    targets = torch.cat(module.prediction_targets)
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    plots.plot_ap_bars(metrics["val/AP_per_class"], folder / "ap_per_class.png")
    plots.plot_pr_curves(probs, targets, module.class_names, folder / "pr_curves.png")
    val_set = datamodule.val_set
    n = min(12, len(val_set), len(probs))
    images = [val_set[i][0].numpy() for i in range(n)]
    plots.plot_samples(images, probs[:n], targets[:n], folder / "val_samples.png")
    ids = getattr(val_set, "ids", None)
    if in_order and ids is not None and len(ids) == len(probs):
        frame = pd.DataFrame(probs.numpy(), columns=[str(i) for i in range(probs.shape[1])])
        frame.insert(0, "fold", int(datamodule.fold))
        frame.insert(0, "ID", ids)
        with atomic_path(out / "oof.csv") as tmp:
            frame.to_csv(tmp, index=False, float_format="%.5f")
        merge_sweep_oof(out)


def merge_sweep_oof(out: Path) -> None:
    """In a multirun (data.fold=0,1,2,3,4), gather every fold's oof.csv into the sweep folder."""
    import pandas as pd

    sweep = out.parent
    parts = sorted(sweep.glob("*/oof.csv"))
    if len(parts) < 2 or not (sweep / "multirun.yaml").exists():
        return
    merged = pd.concat([pd.read_csv(p) for p in parts]).drop_duplicates("ID", keep="last")
    with atomic_path(sweep / "oof.csv") as tmp:
        merged.to_csv(tmp, index=False, float_format="%.5f")


def _best_epoch(best: str | None, trainer: pl.Trainer) -> int:
    if best:
        import torch

        return int(
            torch.load(best, map_location="cpu", weights_only=True).get(
                "epoch", trainer.current_epoch
            )
        )
    return trainer.current_epoch
