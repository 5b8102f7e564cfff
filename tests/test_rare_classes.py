"""Rare classes: the capped class-balanced sampler, pos_weight and label smoothing, GeM pooling,
and the label-changing Negative augmentation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from hpa.cli import compose
from hpa.data.cells import CellDataset
from hpa.data.dataset import ImageDataset, NegativeAugment
from hpa.data.sampler import ClassBalancedSampler, balanced_weights
from hpa.errors import InputError
from hpa.labels import NEGATIVE, NUM_CLASSES
from hpa.models.export import export_model, load_exported
from hpa.models.factory import GeM, create_backbone
from hpa.models.losses import BCELoss, FocalLoss, auto_pos_weight, build_loss
from hpa.models.net import HPANet
from tiny_train import tiny

torch.set_num_threads(1)


def skewed_labels(n: int = 2000) -> np.ndarray:
    """Class 0 in 60% of the samples, 1 in 30%, 2 in 3%, 3 in 0.5%, others never."""
    rng = np.random.default_rng(0)
    labels = np.zeros((n, NUM_CLASSES), np.float32)
    for c, share in enumerate((0.6, 0.3, 0.03, 0.005)):
        labels[rng.permutation(n)[: int(share * n)], c] = 1
    return labels


def realised_frequencies(labels: np.ndarray, sampler: ClassBalancedSampler, epochs: int):
    drawn = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        drawn.extend(sampler)
    return labels[drawn].mean(axis=0)


def test_balanced_sampler_raises_rare_classes_within_the_cap():
    labels = skewed_labels()
    natural = labels.mean(axis=0)
    cap = 4.0
    capped = ClassBalancedSampler(range(len(labels)), labels, cap=cap)
    realised = realised_frequencies(labels, capped, epochs=40)  # 80k draws
    present = natural > 0
    ratio = realised[present] / natural[present]
    # No class beyond CAP x its natural frequency (a little sampling noise allowed) ...
    assert ratio.max() <= cap * 1.05
    # ... the rare ones raised well above 1 (uniform sampling: every ratio ~1), the most common
    # one not: class weights 1 / 2 / 4 / 4 against a mean sample weight of ~1.35 here.
    assert ratio[3] > 2.5 and ratio[2] > 2.5 and 1.2 < ratio[1] < 2 and ratio[0] < 1.1
    # Uncapped inverse frequency goes far beyond the cap for the rarest class.
    free = ClassBalancedSampler(range(len(labels)), labels, cap=None)
    assert realised_frequencies(labels, free, epochs=40)[3] / natural[3] > 2 * cap


def test_balanced_weights_stay_within_one_and_the_cap():
    weights = balanced_weights(skewed_labels(), cap=4.0)
    assert weights.min() == 1.0 and weights.max() == 4.0
    with pytest.raises(InputError, match="sampler_cap"):
        balanced_weights(skewed_labels(), cap=0.5)


def test_balanced_sampler_splits_one_draw_between_ddp_ranks():
    labels = skewed_labels(200)
    single = ClassBalancedSampler(range(200), labels, cap=4.0, seed=7)
    ranks = [ClassBalancedSampler(range(200), labels, 4.0, 2, r, seed=7) for r in (0, 1)]
    for epoch in (0, 3):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        halves = [list(r) for r in ranks]
        assert len(halves[0]) == len(halves[1]) == 100 == len(ranks[0])
        assert sorted(halves[0] + halves[1]) == sorted(single)
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first  # a new draw every epoch


def test_datamodule_uses_the_balanced_sampler(tiny_dataset):
    from hpa.data.datamodule import HPADataModule

    dm = HPADataModule(
        str(tiny_dataset),
        image_size=32,
        batch_size=4,
        sampler="balanced",
        sampler_cap=3,
        num_workers=0,
    )
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ClassBalancedSampler) and len(loader.sampler) == len(
        dm.train_set
    )
    assert dm.class_frequencies().shape == (NUM_CLASSES,)
    cells = HPADataModule(str(tiny_dataset), 24, 4, level="cell", sampler="balanced", num_workers=0)
    cells.prepare_data()
    cells.setup()
    sampler = cells.train_dataloader().sampler
    assert isinstance(sampler, ClassBalancedSampler) and len(sampler) == len(cells.train_set)
    assert len(sampler.weights) == len(cells.train_set)  # one weight per cell crop


def test_bce_with_pos_weight_and_smoothing_by_hand():
    logits, target = torch.full((1, NUM_CLASSES), 2.0), torch.ones(1, NUM_CLASSES)
    log_p, log_not_p = -math.log1p(math.exp(-2.0)), -math.log1p(math.exp(2.0))
    assert BCELoss()(logits, target).item() == pytest.approx(-log_p, rel=1e-5)
    weighted = BCELoss(pos_weight=[3.0] * NUM_CLASSES)(logits, target).item()
    assert weighted == pytest.approx(-3 * log_p, rel=1e-5)
    # s=0.2: target 1 -> 0.9, target 0 -> 0.1.
    smoothed = BCELoss(label_smoothing=0.2)(logits, target).item()
    assert smoothed == pytest.approx(-(0.9 * log_p + 0.1 * log_not_p), rel=1e-5)
    zero = BCELoss(label_smoothing=0.2)(logits, torch.zeros(1, NUM_CLASSES)).item()
    assert zero == pytest.approx(-(0.1 * log_p + 0.9 * log_not_p), rel=1e-5)


def test_focal_matches_torchvision_and_weights_positives_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, NUM_CLASSES, generator=g)
    targets = (torch.rand(8, NUM_CLASSES, generator=g) > 0.7).float()
    ours = FocalLoss(alpha=0.25, gamma=2.0)(logits, targets)
    theirs = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="mean")
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    # logit 0, target 1: p_t = 0.5, bce = pos_weight * ln 2, loss = alpha * 0.5^2 * bce.
    ones, zeros = torch.ones(1, NUM_CLASSES), torch.zeros(1, NUM_CLASSES)
    one = FocalLoss(alpha=0.25, gamma=2.0, pos_weight=[4.0] * NUM_CLASSES)(zeros, ones)
    assert one.item() == pytest.approx(0.25 * 0.25 * 4 * math.log(2), rel=1e-5)
    # Smoothing s=0.5: target 1 -> 0.75, so alpha_t = 0.25 * 0.75 + 0.75 * 0.25 = 0.375; p_t = 0.5.
    half = FocalLoss(alpha=0.25, gamma=2.0, label_smoothing=0.5)(
        torch.zeros(1, 1), torch.ones(1, 1)
    )
    assert half.item() == pytest.approx(0.375 * 0.25 * math.log(2), rel=1e-5)


def test_auto_pos_weight_is_negatives_over_positives_clipped():
    weights = auto_pos_weight([0.5, 0.1, 0.01, 0.0, 0.8], max_weight=10.0)
    assert weights.tolist() == pytest.approx([1.0, 9.0, 10.0, 10.0, 1.0])


def test_build_loss_options_and_state_dict():
    loss = build_loss("bce", pos_weight="auto", pos_weight_max=10.0, label_smoothing=0.1)
    assert loss.pos_weight.tolist() == [1.0] * NUM_CLASSES and loss.label_smoothing == 0.1
    assert "pos_weight" not in loss.state_dict()  # checkpoints keep their keys
    with pytest.raises(InputError, match="19"):
        build_loss("bce", pos_weight=[1.0, 2.0])
    with pytest.raises(InputError, match="label_smoothing"):
        build_loss("focal", label_smoothing=1.5)


def test_gem_pooling_is_learnable_and_survives_export(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet", num_classes=NUM_CLASSES, global_pool="gem")
    gems = [m for m in backbone.modules() if isinstance(m, GeM)]
    assert len(gems) == 1
    params = dict(backbone.named_parameters())
    assert "global_pool.pool.p" in params and params["global_pool.pool.p"].requires_grad
    net = HPANet(backbone, mean=[0.1] * 4, std=[0.2] * 4).eval()
    images = torch.randint(0, 255, (2, 4, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        gems[0].p.fill_(2.5)  # as if trained: the reload must bring this p back
        before = net(images)
        gems[0].p.fill_(1.0)
        assert not torch.allclose(before, net(images))  # p changes the output
        gems[0].p.fill_(2.5)
    meta = {
        "backbone": "test_resnet",
        "num_classes": NUM_CLASSES,
        "in_chans": 4,
        "global_pool": "gem",
        "class_names": [str(i) for i in range(NUM_CLASSES)],
        "image_size": 48,
    }
    export_model(net, tmp_path / "model", meta)
    reloaded, config = load_exported(tmp_path / "model")
    assert config["global_pool"] == "gem"
    with torch.no_grad():
        assert torch.equal(reloaded(images), before)
    assert reloaded.backbone.global_pool.pool.p.item() == pytest.approx(2.5)


class FixedSource:
    description = "fixed"

    def __init__(self, image: np.ndarray):
        self.image = image

    def load(self, sample_id: str) -> np.ndarray:
        return self.image


def test_negative_aug_darkens_green_and_relabels_negative():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    image.setflags(write=False)  # as a memory-mapped cache gives it
    target = np.zeros((1, NUM_CLASSES), np.float32)
    target[0, [3, 7]] = 1
    negative = np.eye(NUM_CLASSES, dtype=np.float32)[NEGATIVE]

    always = ImageDataset(
        ["a"], target, FixedSource(image), negative_aug=NegativeAugment(1.0, 0.05)
    )
    crop, y = always[0]
    assert np.array_equal(y.numpy(), negative)
    green = crop.numpy()[1].astype(float)
    assert green.max() <= 0.05 * 255 + 0.5 and np.allclose(green, image[..., 1] * 0.05, atol=0.5)
    for c in (0, 2, 3):
        assert np.array_equal(crop.numpy()[c], image[..., c])

    never = ImageDataset(["a"], target, FixedSource(image), negative_aug=NegativeAugment(0.0))
    plain = ImageDataset(["a"], target, FixedSource(image))
    for _ in range(20):
        assert np.array_equal(never[0][0].numpy(), plain[0][0].numpy())
        assert np.array_equal(never[0][1].numpy(), target[0])

    np.random.seed(0)
    half = ImageDataset(["a"], target, FixedSource(image), negative_aug=NegativeAugment(0.5))
    flipped = sum(int(half[0][1][NEGATIVE]) for _ in range(400))
    assert 140 < flipped < 260


def test_negative_aug_in_cell_dataset():
    crops = np.random.default_rng(1).integers(50, 256, (3, 12, 12, 4), dtype=np.uint8)
    cache = FixedSource(crops)
    target = np.eye(NUM_CLASSES, dtype=np.float32)[[5]]
    dataset = CellDataset(cache, ["a"], target, negative_aug=NegativeAugment(1.0, 0.0))
    for item in range(len(dataset)):
        crop, y = dataset[item]
        assert y.argmax() == NEGATIVE and y.sum() == 1 and crop[1].max() == 0
        assert torch.equal(crop[0], torch.from_numpy(crops[item][..., 0]))
    assert CellDataset(cache, ["a"], target)[0][1].argmax() == 5


def test_config_rejects_bad_values():
    for override, key in (
        ("data.sampler=uniform", "data.sampler"),
        ("data.sampler_cap=0.5", "data.sampler_cap"),
        ("loss.pos_weight=[1,2]", "loss.pos_weight"),
        ("loss.label_smoothing=1.0", "loss.label_smoothing"),
        ("data.negative_aug.p=2", "data.negative_aug.p"),
        ("model.global_pool=mean", "model.global_pool"),
    ):
        with pytest.raises(InputError, match=key):
            compose("train", [override, "paths.output_dir=x"])


def test_tiny_training_with_every_rare_class_option(tiny_dataset, tmp_path):
    from hpa.train import train

    out = tmp_path / "run"
    overrides = tiny(
        tiny_dataset,
        out,
        "threads=1",
        "data.sampler=balanced",
        "data.sampler_cap=5",
        "data.negative_aug.p=0.2",
        "loss.pos_weight=auto",
        "loss.pos_weight_max=8",
        "loss.label_smoothing=0.1",
        "model.global_pool=gem",
    )
    metrics = train(compose("train", overrides))
    assert math.isfinite(metrics["val/mAP"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["global_pool"] == "gem"
    net, _ = load_exported(out / "model")
    assert isinstance(net.backbone.global_pool.pool, GeM)


def test_pos_weight_auto_comes_from_the_training_set(tiny_dataset):
    from types import SimpleNamespace

    from hpa.data.datamodule import HPADataModule
    from hpa.training.module import HPAModule

    cfg = compose(
        "train", ["model.backbone=test_resnet", "loss.pos_weight=auto", "paths.output_dir=x"]
    )
    module = HPAModule(
        model=dict(cfg.model),
        optimizer=dict(cfg.optimizer),
        loss=dict(cfg.loss),
        scheduler=dict(cfg.scheduler),
        class_names=[str(i) for i in range(NUM_CLASSES)],
        image_size=32,
    )
    dm = HPADataModule(str(tiny_dataset), image_size=32, batch_size=4, n_folds=4)
    dm.setup()
    module._trainer = SimpleNamespace(datamodule=dm)
    module.setup("fit")
    frequencies = dm.train_set.targets.numpy().mean(axis=0)
    expected = auto_pos_weight(frequencies, cfg.loss.pos_weight_max)
    assert module.criterion.pos_weight.tolist() == pytest.approx(expected.tolist())
    assert expected.max() > 1  # rare classes weighted up
