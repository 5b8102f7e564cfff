"""Training on bags of cells (`model=mil data=bags`): HPAModule with a pool over each bag.

Batches are (crops B x N x 4 x S x S, targets B x K, mask B x N). The steps wrap the crops and
mask into a `CellBag` and hand over to HPAModule's own steps, so loss, logging and validation
metrics (mAP on image labels) are the same code as for image models. `self.net` stays a plain
HPANet, the backbone + per-cell head: what finish_run exports, as a level=cell model with the
crop size and margin, so `hpa.predict` scores each cell's crop with it like any cell model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hpa.errors import InputError
from hpa.models.mil import CellPool, cell_outputs, feature_size
from hpa.training.module import HPAModule


@dataclass
class CellBag:
    """A batch of bags; `len` is the number of bags (what the steps log as the batch size)."""

    crops: torch.Tensor  # B x N x 4 x S x S uint8
    mask: torch.Tensor  # B x N bool, True = a real cell

    def __len__(self) -> int:
        return len(self.crops)


class MILModule(HPAModule):
    """`model.mil` configures the pool (configs/model/mil.yaml)."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        loss: dict[str, Any],
        class_names: Sequence[str],
        image_size: int,
        level: str = "cell",
        mix: dict[str, float] | None = None,
        scheduler: dict[str, Any] | None = None,
    ):
        if (mix or {}).get("prob", 0.0) > 0:
            raise InputError(
                "mix.prob > 0 does not apply to bags of cells (model=mil); set mix.prob=0"
            )
        if (model.get("cam") or {}).get("puzzle_weight", 0.0) > 0:
            raise InputError(
                "model.cam.puzzle_weight > 0 is for image models; set it to 0 with model=mil"
            )
        super().__init__(model, optimizer, loss, class_names, image_size, level, mix, scheduler)
        mil = model["mil"]
        self.pool = CellPool(
            mil["pool"],
            feature_size(self.net),
            len(self.class_names),
            mil["attention_dim"],
            mil["lse_r"],
        )

    def forward(self, bag: CellBag) -> torch.Tensor:
        """Image logits (B x K) of a batch of bags."""
        logits, features = cell_outputs(self.net, bag.crops, bag.mask)
        return self.pool(logits, features, bag.mask)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        crops, targets, mask = batch
        return super().training_step((CellBag(crops, mask), targets), batch_idx)

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        crops, targets, mask = batch
        return super().validation_step((CellBag(crops, mask), targets), batch_idx)


def module_class(model: Mapping[str, Any], data_level: str) -> tuple[type[HPAModule], str]:
    """(the Lightning module class, the level its exported model predicts at) for a run:
    `model=mil` and `data=bags` go together; anything else is HPAModule at the data's level."""
    is_mil = bool(model.get("mil"))
    if is_mil != (data_level == "bag"):
        raise InputError(
            "model=mil trains on bags of cells and data=bags needs model=mil: use both "
            "(python -m hpa.train model=mil data=bags) or neither"
        )
    return (MILModule, "cell") if is_mil else (HPAModule, data_level)
