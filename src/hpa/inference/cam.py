"""Per-cell probabilities from an image model's class maps (`image_model_cells: cam`).

The whole image goes through the model once at its training size; its class maps (per-location
logits, `hpa.models.cam`) are upsampled bilinearly to the image's full resolution and averaged
inside each cell's mask: the mean *logit* of the cell, then a sigmoid. Mean logits rather than
mean probabilities, because with avg pooling the image's own logit is the same mean over the
whole map: a cell covering the image gets exactly the image prediction. TTA (hpa.inference.tta)
transforms the image, turns its maps back, and averages the cells' probabilities over TTA views
and models, as crops do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from hpa.data.images import resize
from hpa.inference.classifiers import Classifier
from hpa.inference.tta import DIHEDRAL, Augmentation
from hpa.models.cam import class_maps

# Each dihedral transform's inverse (the others undo themselves).
INVERSE = {"rot90": "rot270", "rot270": "rot90"}


def interpolation_matrix(source: int, target: int) -> torch.Tensor:
    """source x target: column t holds the weights of the source samples in target sample t under
    1-D linear interpolation (align_corners=False); bilinear 2-D is one such matrix per axis."""
    eye = torch.eye(source, dtype=torch.float64)[None]  # 1 x source x source
    return F.interpolate(eye, size=target, mode="linear", align_corners=False)[0].float()


def pool_in_cells(maps: torch.Tensor, labels: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """Mean of each class map inside each cell, the maps upsampled bilinearly to the labels' size:
    maps C x h x w, labels H x W (0 = background), ids n cell ids -> n x C.

    Computed without the full-resolution maps (19 x 2048^2 floats took seconds per image on a
    CPU): upsampling is linear and separable, up = Ry^T M Rx, so a cell's sum is
    sum(Ry[:, rows] 1_cell Rx[:, cols]^T * M), one small product over its bounding box.
    """
    _, h, w = maps.shape
    ry = interpolation_matrix(h, labels.shape[0]).to(maps)
    rx = interpolation_matrix(w, labels.shape[1]).to(maps)
    boxes = ndi.find_objects(labels)
    weights = maps.new_zeros(len(ids), h, w)
    for row, cell_id in enumerate(ids):
        rows, cols = boxes[int(cell_id) - 1]
        inside = torch.from_numpy(labels[rows, cols] == cell_id).to(maps)
        weights[row] = ry[:, rows] @ inside @ rx[:, cols].T / inside.sum()
    return torch.einsum("nij,cij->nc", weights, maps)


def undo(augmentation: Augmentation, maps: torch.Tensor) -> torch.Tensor:
    """Maps of an augmented (square) input back in the image's orientation; its scale needs no
    undoing, since maps are resized to the image anyway."""
    return DIHEDRAL[INVERSE.get(augmentation.name, augmentation.name)](maps)


@torch.inference_mode()
def cam_cell_probs(
    models: Sequence[Classifier],
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    augmentations: Sequence[Augmentation],
) -> np.ndarray:
    """H x W x 4 uint8 image, H x W cell labels, n cell ids -> n x classes: sigmoid(mean logit in
    the cell), averaged over the augmentations and over the models (by their weights), each model
    at its own input size."""
    device = next(models[0].net.parameters()).device
    resized: dict[int, torch.Tensor] = {}
    total = None
    for model in models:
        if model.size not in resized:
            batch = torch.from_numpy(np.ascontiguousarray(resize(image, model.size)))
            resized[model.size] = batch.permute(2, 0, 1)[None].to(device)
        for augmentation in augmentations:
            maps = undo(augmentation, class_maps(model.net, augmentation(resized[model.size])))
            probs = torch.sigmoid(pool_in_cells(maps[0].float(), labels, ids)) * model.weight
            total = probs if total is None else total + probs
    weight = sum(m.weight for m in models) * len(augmentations)
    return (total / weight).cpu().numpy()
