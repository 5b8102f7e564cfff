"""Class activation maps: per-location logits, pooling inside cells, Puzzle-CAM, and
`python -m hpa.predict image_model_cells=cam`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hpa.cli import compose
from hpa.inference.cam import cam_cell_probs, pool_in_cells
from hpa.inference.classifiers import Classifier
from hpa.inference.tta import augmentations
from hpa.labels import NUM_CLASSES
from hpa.models.cam import class_maps, feature_map, puzzle_logits
from hpa.models.net import HPANet
from hpa.predict import main as predict_main
from hpa.synthetic import SyntheticConfig, generate_dataset
from hpa.train import train
from tiny_train import tiny
from untrained_model import export_untrained, untrained_net

torch.set_num_threads(1)


class PerPixel(nn.Module):
    """A timm-like backbone whose class map is known: features = the input itself (stride 1, no
    padding, so translation-equivariant), head = average pool + linear."""

    def __init__(self, classes: int = NUM_CLASSES, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(4, classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def identity_net(backbone: nn.Module) -> HPANet:
    """Normalisation that leaves 0..255 inputs as they are: the backbone sees the raw pixels."""
    return HPANet(backbone, mean=[0.0] * 4, std=[1 / 255] * 4).eval()


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, size, size), generator=gen, dtype=torch.uint8)


def blob_labels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Rectangles of ids 1, 2, 5 and 9 (ids need not be consecutive) on background."""
    labels = np.zeros((height, width), np.int32)
    rng = np.random.default_rng(seed)
    for cell_id in (1, 2, 5, 9):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        labels[y : y + rng.integers(3, 12), x : x + rng.integers(3, 12)] = cell_id
    return labels


# ---- class maps ------------------------------------------------------------------------------


@torch.no_grad()
def test_avg_pool_maps_average_to_the_image_logits():
    net, images = untrained_net(), random_images(2, 64)
    maps = class_maps(net, images)
    assert maps.shape[:2] == (2, NUM_CLASSES) and maps.shape[2:] == (2, 2)  # stride 32
    torch.testing.assert_close(maps.mean((2, 3)), net(images), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_catavgmax_map_is_the_classifier_as_a_1x1_convolution():
    net, images = untrained_net(global_pool="catavgmax"), random_images(2, 64)
    features = feature_map(net, images)
    fc = net.backbone.get_classifier()
    width = features.shape[1]
    assert fc.in_features == 2 * width  # avg and max concatenated
    # A single location is both its own average and its own maximum.
    weight = fc.weight[:, :width] + fc.weight[:, width:]
    expected = F.conv2d(features, weight[:, :, None, None], fc.bias)
    torch.testing.assert_close(class_maps(net, images), expected, rtol=1e-4, atol=1e-5)


def test_maps_of_a_token_backbone_are_refused():
    class Tokens(PerPixel):
        def forward_features(self, x):
            return x.flatten(2).transpose(1, 2)  # N x L x C, as a ViT gives

    from hpa.errors import InputError

    with pytest.raises(InputError, match="image_model_cells=crops"):
        class_maps(identity_net(Tokens()), random_images(1, 8))


# ---- pooling inside cells ----------------------------------------------------------------------


@pytest.mark.parametrize("map_shape, label_shape", [((4, 5), (37, 41)), ((6, 6), (24, 24))])
def test_pooled_maps_equal_a_per_cell_loop(map_shape, label_shape):
    torch.manual_seed(0)
    maps = torch.randn(NUM_CLASSES, *map_shape)
    labels = blob_labels(*label_shape)
    ids = np.unique(labels)[1:]
    assert ids.tolist() == [1, 2, 5, 9]
    pooled = pool_in_cells(maps, labels, ids)
    up = F.interpolate(maps[None], size=labels.shape, mode="bilinear", align_corners=False)[0]
    for row, cell_id in enumerate(ids):
        inside = torch.from_numpy(labels == cell_id)
        torch.testing.assert_close(pooled[row], up[:, inside].mean(1), rtol=1e-5, atol=1e-5)


def test_cam_cells_are_exact_for_known_per_location_logits():
    """Per-pixel logits W x + b: a cell's probability is sigmoid(W mean(x in cell) + b), also
    under every dihedral TTA view (so the maps are turned back correctly)."""
    net, size = identity_net(PerPixel()), 24
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    labels = blob_labels(size, size, seed=2)
    ids = np.unique(labels)[1:]
    fc = net.backbone.fc
    weight, bias = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    expected = np.stack(
        [1 / (1 + np.exp(-(weight @ image[labels == i].mean(0) + bias))) for i in ids]
    )
    model = Classifier(net, "image", size, None, "per-pixel")
    for views in (augmentations(["none"]), augmentations("d4")):
        probs = cam_cell_probs([model], image, labels, ids, views)
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


# ---- Puzzle-CAM --------------------------------------------------------------------------------


def test_puzzle_loss_is_zero_for_translation_equivariant_maps():
    net = identity_net(PerPixel())
    images = random_images(2, 16)
    with torch.no_grad():
        logits, loss = puzzle_logits(net, images, tiles=2)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(logits, net(images))


def test_puzzle_loss_of_a_padded_cnn_is_positive_and_trains_it():
    net = untrained_net()
    images = random_images(2, 64)
    with torch.no_grad():
        logits, loss = puzzle_logits(net, images, tiles=2)
    torch.testing.assert_close(logits, net(images), rtol=1e-4, atol=1e-5)
    assert float(loss) > 1e-4  # zero padding at tile edges: the tiles' maps differ
    net.train()
    _, loss = puzzle_logits(net, images, tiles=2)
    loss.backward()
    first_conv = next(p for p in net.backbone.parameters() if p.ndim == 4)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_training_with_puzzle_weight_logs_the_puzzle_loss(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    cfg = compose("train", tiny(tiny_dataset, out, "model.cam.puzzle_weight=0.5"))
    metrics = train(cfg)
    assert np.isfinite(metrics["val/mAP"])
    logged = pd.read_csv(next(out.glob("csv/**/metrics.csv")))
    puzzle = logged["train/puzzle_epoch"].dropna()
    assert len(puzzle) > 0 and (puzzle > 0).all()


# ---- hpa.predict image_model_cells=cam --------------------------------------------------------


@pytest.fixture(scope="module")
def image_model_and_testset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cam_predict")
    model = export_untrained(root / "model", "image", 64)
    cfg = SyntheticConfig(
        n_images=3, seed=5, image_size=96, cells_per_image=(3, 4), split="test", workers=1
    )
    return model, generate_dataset(cfg, root / "test", progress=False)


def run_predict(model: Path, testset: Path, out: Path, *extra: str) -> pd.DataFrame:
    predict_main(
        [
            f"models=[{model}]",
            f"input_dir={testset / 'test'}",
            f"sample_submission={testset / 'sample_submission.csv'}",
            f"submission={out}",
            "segmenter=truth",
            "progress=false",
            *extra,
        ]
    )
    return pd.read_csv(out, keep_default_na=False, dtype={"ID": str})


def confidences(submission: pd.DataFrame, cls: int) -> dict[str, list[float]]:
    out = {}
    for row in submission.itertuples():
        parts = row.PredictionString.split()
        out[row.ID] = [float(parts[i + 1]) for i in range(0, len(parts), 3) if int(parts[i]) == cls]
    return out


def test_predict_with_cam_scores_each_cell_from_the_maps(image_model_and_testset, tmp_path):
    model, testset = image_model_and_testset
    cells_only = ("combine.cell_weight=1.0", "tta=[none,hflip]")
    cam = run_predict(model, testset, tmp_path / "cam.csv", "image_model_cells=cam", *cells_only)
    crops = run_predict(model, testset, tmp_path / "crops.csv", *cells_only)
    for cls in (0, 5):
        by_cam, by_crops = confidences(cam, cls), confidences(crops, cls)
        assert by_cam.keys() == by_crops.keys()
        for sid, values in by_cam.items():
            assert len(values) == len(by_crops[sid]) >= 3  # every true cell, scored
            assert len(set(values)) > 1  # cells of one image differ
            assert values != by_crops[sid]  # and not as their crops are


def test_bad_image_model_cells_exits_2(image_model_and_testset, tmp_path, capsys):
    model, testset = image_model_and_testset
    with pytest.raises(SystemExit) as exit_info:
        run_predict(model, testset, tmp_path / "x.csv", "image_model_cells=pixels")
    assert exit_info.value.code == 2 and "image_model_cells" in capsys.readouterr().err


def test_predict_yaml_default_keeps_crops():
    cfg = compose("predict", ["models=[x]", "input_dir=.", "sample_submission=s.csv"])
    assert cfg.image_model_cells == "crops" and cfg.image_model_on_cells is True
    assert json.dumps(list(cfg.keys()))  # composes and passes config_check
