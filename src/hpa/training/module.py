"""The Lightning module: the configured loss, optimizer and schedule; mAP / per-class AP / F1 on
validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from hpa.build import build, with_target
from hpa.models.cam import puzzle_logits
from hpa.models.factory import create_backbone
from hpa.models.net import HPANet
from hpa.training.mixing import mix_batch


class HPAModule(pl.LightningModule):
    """`model`, `optimizer`, `scheduler`, `loss` and `mix` are the config groups of the same names,
    whole: the YAML under configs/ is the one place defaults live (no second set here to disagree
    with). `loss`, `optimizer` and `scheduler` are `_target_` nodes (hpa.build); the two older
    forms a checkpoint may hold (`loss.name`, AdamW keys with the schedule's) are read too."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        loss: dict[str, Any],
        class_names: Sequence[str],
        image_size: int,
        level: str = "image",
        mix: dict[str, float] | None = None,
        scheduler: dict[str, Any] | None = None,
    ):
        super().__init__()
        optimizer, scheduler = _optimizer_nodes(optimizer, scheduler)
        loss = with_target(loss, "loss")
        # Explicitly, as normalised here: what load_from_checkpoint passes back to the class.
        self.save_hyperparameters(
            {
                "model": model,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "loss": loss,
                "class_names": list(class_names),
                "image_size": image_size,
                "level": level,
                "mix": mix,
            }
        )
        self.class_names = list(class_names)
        # An attribute, so that Lightning's LR finder can set it (None: an optimizer without lr).
        self.lr = optimizer.get("lr")
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
        if model["compile"]:
            self.net.compile()  # in place: state_dict keys (and exports) stay unchanged
        self.criterion = build(loss, "loss")
        # The optimizer and schedule are built when training starts; a wrong option is refused
        # now, in the first second, not after the data is read.
        build(optimizer, "optimizer")
        build(scheduler, "scheduler")
        self.val_ap = MultilabelAveragePrecision(num_labels=n, average=None)
        self.val_f1 = MultilabelF1Score(num_labels=n, average="macro")

    def setup(self, stage: str) -> None:
        # loss.pos_weight=auto: from the training set's class frequencies (hpa.models.losses).
        if stage == "fit" and getattr(self.criterion, "pos_weight_auto", False):
            from hpa.models.losses import auto_pos_weight

            frequencies = self.trainer.datamodule.class_frequencies()
            self.criterion.set_pos_weight(
                auto_pos_weight(frequencies, self.criterion.pos_weight_max)
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
        options = {"lr": self.lr} if "lr" in self.hparams.optimizer else {}
        opt = build(self.hparams.optimizer, "optimizer")(self.parameters(), **options)
        sched = build(self.hparams.scheduler, "scheduler")(
            opt,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            max_epochs=max(1, self.trainer.max_epochs or 1),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _optimizer_nodes(
    optimizer: dict[str, Any], scheduler: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimizer, scheduler) `_target_` nodes; a checkpoint of before the two groups holds
    AdamW's lr and weight_decay with the schedule's warmup_epochs and min_lr_ratio in one."""
    from hpa.build import option

    optimizer = dict(optimizer)
    if "_target_" not in optimizer:  # the older form
        old = optimizer
        optimizer = {**option("optimizer", "adamw"), "lr": old["lr"]}
        optimizer["weight_decay"] = old.get("weight_decay", optimizer["weight_decay"])
        if scheduler is None:
            scheduler = {**option("scheduler", "warmup_cosine")}
            for key in ("warmup_epochs", "min_lr_ratio"):
                scheduler[key] = old.get(key, scheduler[key])
    if scheduler is None:
        scheduler = option("scheduler", "warmup_cosine")
    return optimizer, dict(scheduler)
