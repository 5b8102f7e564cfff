"""End of a run: metrics of the best checkpoint -> metrics.json; its weights -> model/."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from hpa.models.export import export_model
from hpa.training.module import HPAModule

log = logging.getLogger(__name__)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def finish_run(
    trainer: pl.Trainer, module: HPAModule, datamodule: pl.LightningDataModule, out: Path, cfg: Any
) -> dict[str, Any]:
    """Re-validate the best checkpoint, then (rank 0 only) write metrics.json and export model/."""
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt and ckpt.best_model_path else None
    results = trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
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
        _atomic_json(out / "metrics.json", metrics)
        export_model(
            module.net,
            out / "model",
            {
                "backbone": cfg.model.backbone,
                "num_classes": len(module.class_names),
                "in_chans": int(cfg.model.in_chans),
                "class_names": list(module.class_names),
                "image_size": int(cfg.data.image_size),
                "level": module.hparams.level,
                "metrics": {"val/mAP": metrics["val/mAP"], "epoch": metrics["epoch"]},
            },
        )
        log.info("val/mAP %.4f (epoch %d); wrote %s and %s", metrics["val/mAP"], metrics["epoch"],
                 out / "metrics.json", out / "model")
    return metrics


def _best_epoch(best: str | None, trainer: pl.Trainer) -> int:
    if best:
        import torch

        return int(torch.load(best, map_location="cpu", weights_only=True).get("epoch", trainer.current_epoch))
    return trainer.current_epoch
