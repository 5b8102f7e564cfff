"""The Lightning module: loss, AdamW with warm-up + cosine, mAP / per-class AP / F1 on validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from hpa.models.cam import puzzle_logits
from hpa.models.factory import create_backbone
from hpa.models.losses import build_loss
from hpa.models.net import HPANet
from hpa.training.mixing import mix_batch


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class HPAModule(pl.LightningModule):
    """`model`, `optimizer`, `loss` and `mix` are the config groups of the same names, whole: the
    YAML under configs/ is the one place defaults live (no second set here to disagree with)."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        loss: dict[str, Any],
        class_names: Sequence[str],
        image_size: int,
        level: str = "image",
        mix: dict[str, float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.lr = optimizer["lr"]  # an attribute, so that Lightning's LR finder can set it
        self.mix = mix or {}
        self._mix_rng = np.random.default_rng(0)
        n = len(self.class_names)
        backbone = create_backbone(
            model["backbone"],
            num_classes=n,
            in_chans=model["in_chans"],
            pretrained=model["pretrained"],
            pretrained_path=model["pretrained_path"],
            drop_rate=model["drop_rate"],
            global_pool=model["global_pool"],
        )
        self.net = HPANet(backbone, mean=model["mean"], std=model["std"])
        if model["channels_last"]:
            self.net = self.net.to(memory_format=torch.channels_last)
        loss = dict(loss)
        if model["compile"]:
            self.net.compile()  # in place: state_dict keys (and exports) stay unchanged
        self.criterion = build_loss(loss.pop("name"), **loss)
        self.val_ap = MultilabelAveragePrecision(num_labels=n, average=None)
        self.val_f1 = MultilabelF1Score(num_labels=n, average="macro")

    def setup(self, stage: str) -> None:
        # loss.pos_weight=auto: from the training set's class frequencies (hpa.models.losses).
        if stage == "fit" and self.hparams.loss.get("pos_weight") == "auto":
            from hpa.models.losses import auto_pos_weight

            frequencies = self.trainer.datamodule.class_frequencies()
            self.criterion.set_pos_weight(
                auto_pos_weight(frequencies, self.hparams.loss["pos_weight_max"])
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        images, targets = mix_batch(
            images,
            targets,
            mixup_alpha=self.mix.get("mixup_alpha", 0.0),
            cutmix_alpha=self.mix.get("cutmix_alpha", 0.0),
            prob=self.mix.get("prob", 0.0),
            rng=self._mix_rng,
        )
        cam = self.hparams.model.get("cam") or {}
        if cam.get("puzzle_weight", 0.0) > 0:  # Puzzle-CAM (model.cam), logits from the same pass
            logits, puzzle = puzzle_logits(self.net, images, cam["tiles"])
            self.log("train/puzzle", puzzle, on_step=True, on_epoch=True, batch_size=len(images))
            loss = self.criterion(logits, targets) + cam["puzzle_weight"] * puzzle
        else:
            loss = self.criterion(self(images), targets)
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images)
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        logits = self(images)
        self.log(
            "val/loss",
            self.criterion(logits, targets),
            prog_bar=True,
            batch_size=len(images),
            sync_dist=True,
        )
        probs = torch.sigmoid(logits.float())
        self.val_ap.update(probs, targets.long())
        self.val_f1.update(probs, targets.long())
        return {"probs": probs}  # hpa.training.finish.ValidationPredictions keeps them

    def on_validation_epoch_end(self) -> None:
        ap = self.val_ap.compute()
        present = ~torch.isnan(ap)
        mean_ap = ap[present].mean() if present.any() else torch.tensor(0.0, device=ap.device)
        self.log("val/mAP", mean_ap, prog_bar=True)
        self.log("val/F1", self.val_f1.compute())
        for name, value in zip(self.class_names, ap, strict=True):
            self.log(f"val/AP/{name}", value)
        self.val_ap.reset()
        self.val_f1.reset()

    def configure_optimizers(self):
        cfg = self.hparams.optimizer
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=cfg["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(cfg["warmup_epochs"] * total / epochs))
        min_ratio = cfg["min_lr_ratio"]
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warmup, total, min_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
