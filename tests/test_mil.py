"""Bags of cells (`model=mil data=bags`): the bag dataset, pooling over real cells only, and a
tiny training whose exported model `hpa.predict` runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from hpa.cli import compose
from hpa.data.bags import BagDataset
from hpa.errors import InputError
from hpa.labels import NUM_CLASSES
from hpa.models.export import load_exported
from hpa.models.factory import create_backbone
from hpa.models.mil import POOLS, CellPool, cell_outputs, feature_size
from hpa.models.net import HPANet
from hpa.pipeline import build_datamodule
from hpa.predict import main as predict_main
from hpa.synthetic import SyntheticConfig, generate_dataset
from hpa.train import train
from hpa.training.mil import MILModule, module_class
from hpa.training.module import HPAModule
from tiny_train import tiny

torch.set_num_threads(1)
MEAN, STD = [0.08, 0.05, 0.05, 0.08], [0.15, 0.11, 0.16, 0.15]
SIZE = 16


class FakeCache:
    """Crops by sample ID, as CellCache.load gives them (N x S x S x 4 uint8)."""

    def __init__(self, counts: dict[str, int]):
        rng = np.random.default_rng(0)
        self.crops = {
            sid: rng.integers(1, 256, (n, SIZE, SIZE, 4), dtype=np.uint8)
            for sid, n in counts.items()
        }

    def load(self, sample_id: str) -> np.ndarray:
        return self.crops[sample_id]


def bags(train: bool = False) -> tuple[BagDataset, FakeCache]:
    cache = FakeCache({"many": 7, "few": 2, "none": 0})
    targets = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 3, 18]]
    return BagDataset(cache, ["many", "few", "none"], targets, 4, train=train, seed=1), cache


def test_bag_shapes_masks_and_padding():
    dataset, cache = bags()
    assert len(dataset) == 3 and dataset.item_keys() == {"ID": ["many", "few", "none"]}
    crops, target, mask = dataset[1]
    assert crops.shape == (4, 4, SIZE, SIZE) and crops.dtype == torch.uint8
    assert mask.tolist() == [True, True, False, False] and target[3] == 1
    assert np.array_equal(crops[:2].numpy(), cache.crops["few"].transpose(0, 3, 1, 2))
    assert not crops[2:].any()  # padding is blank
    crops, _, mask = dataset[2]  # no cell at all: one blank crop stands in, marked real
    assert mask.tolist() == [True, False, False, False] and not crops.any()
    assert dataset.preview(1).shape == (4, SIZE, 2 * SIZE)  # 2 cells side by side
    assert dataset.preview(0).shape == (4, 2 * SIZE, 2 * SIZE)  # 4 in a 2 x 2 grid


def test_big_bags_draw_distinct_cells_fixed_in_validation_fresh_in_training():
    val, cache = bags(train=False)
    all_crops = {c.tobytes() for c in cache.crops["many"].transpose(0, 3, 1, 2)}
    first, _, mask = val[0]
    assert mask.all()
    drawn = [c.tobytes() for c in first.numpy()]
    assert len(set(drawn)) == 4 and set(drawn) <= all_crops
    assert torch.equal(val[0][0], first)  # validation: the same draw every time
    training, _ = bags(train=True)
    torch.manual_seed(0)
    draws = {tuple(sorted(c.tobytes() for c in training[0][0].numpy())) for _ in range(10)}
    assert len(draws) > 1  # training: a new subset each time


def small_net(seed: int = 0) -> HPANet:
    torch.manual_seed(seed)
    return HPANet(create_backbone("test_resnet", NUM_CLASSES, 4), MEAN, STD)


@pytest.mark.parametrize("method", POOLS)
def test_padding_never_reaches_the_pooled_prediction(method):
    """A bag of 3 real cells gives the same image logits whatever its padding holds, in
    training mode too (padding must not reach batch norm)."""
    net = small_net()
    pool = CellPool(method, feature_size(net), NUM_CLASSES, attention_dim=8, lse_r=3.0)
    torch.manual_seed(1)
    crops = torch.randint(0, 256, (2, 5, 4, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    garbage = crops.clone()
    garbage[0, 3:] = torch.randint(0, 256, (2, 4, 32, 32), dtype=torch.uint8)
    blank = crops.clone()
    blank[0, 3:] = 0
    for mode in (True, False):
        net.train(mode)
        out = [pool(*cell_outputs(net, c, mask), mask) for c in (garbage, blank)]
        torch.testing.assert_close(out[0], out[1])
        assert torch.isfinite(out[0]).all()


def test_attention_weights_sum_to_one_over_real_cells():
    net = small_net().eval()
    pool = CellPool("attention", feature_size(net), NUM_CLASSES, attention_dim=8, lse_r=1.0)
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    _, features = cell_outputs(
        net, torch.randint(0, 256, (2, 4, 4, 32, 32), dtype=torch.uint8), mask
    )
    weights = pool.weights(features, mask)
    assert weights.shape == (2, 4, NUM_CLASSES)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, NUM_CLASSES))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()


def test_pools_lie_between_the_real_cells_mean_and_max():
    logits = torch.randn(1, 3, NUM_CLASSES)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = {
        m: CellPool(m, 4, NUM_CLASSES, 8, 4.0)(logits, torch.zeros(1, 3, 4), mask) for m in POOLS
    }
    torch.testing.assert_close(out["max"], logits.amax(1))
    torch.testing.assert_close(out["mean"], logits.mean(1))
    assert (out["lse"] >= out["mean"] - 1e-5).all() and (out["lse"] <= out["max"] + 1e-5).all()
    # attention: a weighted mean of the cells' logits
    assert (out["attention"] >= logits.amin(1) - 1e-5).all()
    assert (out["attention"] <= out["max"] + 1e-5).all()


@torch.no_grad()
def test_cell_logits_are_what_the_exported_net_gives_each_crop():
    net = small_net().eval()
    crops = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    logits, _ = cell_outputs(net, crops, mask)
    torch.testing.assert_close(logits[mask], net(crops[mask]), rtol=1e-4, atol=1e-5)
    assert not logits[~mask].any()


def test_model_mil_and_data_bags_go_together():
    assert module_class({"mil": {"pool": "mean"}}, "bag") == (MILModule, "cell")
    assert module_class({}, "cell") == (HPAModule, "cell")
    with pytest.raises(InputError, match="model=mil"):
        module_class({"mil": {"pool": "mean"}}, "cell")
    with pytest.raises(InputError, match="data=bags"):
        module_class({}, "bag")


def test_tiny_mil_training_exports_a_cell_model_that_predict_runs(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    bags = ["model=mil", "data=bags", "data.cells_per_image=3"]
    cfg = compose("train", tiny(tiny_dataset, out, *bags, "report=true", batch_size=4))
    metrics = train(cfg)
    assert np.isfinite(metrics["val/mAP"])
    # The pictures show a bag's cell crops (its preview), in plots/ and in the report.
    assert (out / "plots" / "val_samples.png").is_file() and (out / "report.html").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["level"] == "cell" and config["image_size"] == 32
    assert config["cell_margin"] == pytest.approx(0.05)
    # The oof holds what the exported cell model gives every validation cell (so hpa.ensemble
    # groups it with cell models), not the bag's pooled image prediction.
    oof = pd.read_csv(out / "oof.csv")
    assert list(oof.columns[:3]) == ["ID", "cell", "fold"]
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("synthetic")
    datamodule = build_datamodule(data_cfg)
    datamodule.setup("fit")
    cells = datamodule.val_set.cells()
    assert oof[["ID", "cell"]].values.tolist() == [
        list(k) for k in zip(*cells.item_keys().values(), strict=True)
    ]
    assert len(oof) > oof["ID"].nunique()  # several cells per image
    net, _ = load_exported(out / "model")
    with torch.no_grad():
        crops = torch.stack([cells[i][0] for i in range(len(cells))])
        expected = torch.sigmoid(net(crops)).numpy()
    got = oof[[str(k) for k in range(NUM_CLASSES)]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)

    test = generate_dataset(
        SyntheticConfig(n_images=3, seed=8, image_size=64, split="test", workers=1),
        tmp_path / "test",
        progress=False,
    )
    submission = tmp_path / "sub.csv"
    predict_main(
        [
            f"models=[{out / 'model'}]",
            f"input_dir={test / 'test'}",
            f"sample_submission={test / 'sample_submission.csv'}",
            f"submission={submission}",
            "segmenter=truth",
            "progress=false",
        ]
    )
    rows = pd.read_csv(submission, keep_default_na=False)
    assert len(rows) == 3 and all(
        len(s.split()) % (3 * NUM_CLASSES) == 0 for s in rows.PredictionString
    )
    assert all(rows.PredictionString != "")
