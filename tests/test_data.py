import numpy as np
import pytest
import torch

from hpa.data.datamodule import HPADataModule
from hpa.data.folds import stratified_folds
from hpa.data.records import read_records, targets
from hpa.data.transforms import PerChannelBrightnessContrast, build_transform
from hpa.errors import InputError

AUGMENT = {
    "train": [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "RandomRotate90", "p": 0.5},
        {"name": "Affine", "scale": [0.9, 1.1], "rotate": [-10, 10], "p": 0.5},
        {"name": "PerChannelBrightnessContrast", "brightness": 0.1, "contrast": 0.1, "p": 1.0},
    ],
    "val": [],
}


def test_records_normalise_labels(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("ID,Label\na,8|5|0\nb,17|17\nc,18\n")
    records = read_records(csv)
    assert records["Label"].tolist() == ["0|5|8", "17", "18"]
    y = targets(records)
    assert y.shape == (3, 19) and y[0, [0, 5, 8]].tolist() == [1, 1, 1] and y.sum() == 5


@pytest.mark.parametrize(
    "content,needle",
    [
        ("ID,Label\na,0\nb,25\n", "row 3"),
        ("ID,Labels\na,0\n", "Label"),
        ("ID,Label\na,0\na,1\n", "more than once"),
        ("ID,Label\n", "no rows"),
    ],
)
def test_bad_csv_is_reported(tmp_path, content, needle):
    csv = tmp_path / "train.csv"
    csv.write_text(content)
    with pytest.raises(InputError, match=needle):
        read_records(csv)


def test_missing_csv(tmp_path):
    with pytest.raises(InputError, match="train.csv"):
        read_records(tmp_path / "train.csv")


def test_folds_are_stratified_and_deterministic():
    rng = np.random.default_rng(0)
    y = (rng.random((500, 19)) < 0.15).astype(np.float32)
    y[y.sum(1) == 0, 0] = 1
    folds = stratified_folds(y, 5, seed=1)
    np.testing.assert_array_equal(folds, stratified_folds(y, 5, seed=1))
    assert set(folds) == {0, 1, 2, 3, 4}

    def imbalance(assignment):
        per_fold = np.stack([y[assignment == k].sum(0) for k in range(5)])
        return np.abs(per_fold - y.sum(0) / 5).mean()

    # Iterative stratification spreads every class far more evenly than a plain split does.
    assert imbalance(folds) < 0.5 * imbalance(np.arange(len(y)) % 5)
    assert np.bincount(folds).min() >= 90


def test_build_transform_from_config_and_unknown_name():
    t = build_transform(AUGMENT["train"])
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    out = t(image=image)["image"]
    assert out.shape == (32, 32, 4) and out.dtype == np.uint8
    assert build_transform([]) is None
    with pytest.raises(InputError, match="NoSuchFlip"):
        build_transform([{"name": "NoSuchFlip"}])


def test_per_channel_jitter_differs_between_channels():
    t = PerChannelBrightnessContrast(brightness=0.2, contrast=0.2, p=1.0)
    image = np.full((8, 8, 4), 100, dtype=np.uint8)
    out = t(image=image)["image"]
    assert len(set(out[0, 0].tolist())) > 1


def test_datamodule_splits_by_fold(tiny_dataset):
    dms = [
        HPADataModule(
            root=str(tiny_dataset), image_size=32, batch_size=8, fold=k, n_folds=4, augment=AUGMENT
        )
        for k in range(4)
    ]
    val_ids = []
    for dm in dms:
        dm.setup("fit")
        assert not set(dm.train_set.ids) & set(dm.val_set.ids)
        val_ids += dm.val_set.ids
    assert sorted(val_ids) == sorted(dms[0].records["ID"])
    images, y = next(iter(dms[0].train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 4, 32, 32)
    assert y.shape == (8, 19)


def test_datamodule_rejects_bad_fold(tiny_dataset):
    with pytest.raises(InputError, match="data.fold=7"):
        HPADataModule(root=str(tiny_dataset), image_size=32, batch_size=8, fold=7, n_folds=5)
