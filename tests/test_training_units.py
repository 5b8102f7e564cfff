"""Training pieces one at a time: mixup / CutMix, the LR schedule, the DDP prediction gather,
EMA in the exported model, and a multirun over folds with its merged oof.csv."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from hpa.cli import compose
from hpa.errors import InputError
from hpa.train import train
from hpa.training.finish import gather_predictions
from hpa.training.mixing import mix_batch
from hpa.training.module import HPAModule
from hpa.training.schedules import warmup_cosine
from test_train import run_cli
from tiny_train import tiny

# --- mixup / CutMix -------------------------------------------------------------------------


def batch(seed: int, n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float images (every pixel distinct across samples) and multi-hot targets."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 4, size, size, generator=g) * 255
    targets = (torch.rand(n, 19, generator=g) < 0.3).float()
    return images, targets


def mix(images, targets, seed, mixup=0.0, cutmix=0.0, prob=1.0):
    torch.manual_seed(seed)  # mix_batch draws its permutation from torch's global RNG
    rng = np.random.default_rng(seed)
    return mix_batch(images, targets, mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, rng=rng)


def check_mixup(a, t, out, out_t) -> float | None:
    """out = lam * a + (1 - lam) * a[perm] for one lam and a permutation, found from the pixels
    alone; then out_t must be the same combination of t. Returns lam (None: nothing mixed)."""
    n = len(a)
    flat, flat_out = a.reshape(n, -1).double(), out.reshape(n, -1).double()
    partners, lams = [], []
    for i in range(n):
        if torch.allclose(flat_out[i], flat[i], atol=1e-3):
            partners.append(i)
            continue
        best = None
        for j in range(n):
            if j == i:
                continue
            d = flat[i] - flat[j]
            lam = float((flat_out[i] - flat[j]) @ d / (d @ d))
            residual = float((flat_out[i] - (lam * flat[i] + (1 - lam) * flat[j])).abs().max())
            if best is None or residual < best[0]:
                best = (residual, j, lam)
        assert best[0] < 1e-3, f"sample {i} is not a convex combination of two samples"
        partners.append(best[1])
        lams.append(best[2])
    assert sorted(partners) == list(range(n)), "partners are not a permutation of the batch"
    if not lams:
        return None
    lam = lams[0]
    assert 0 <= lam <= 1 and max(abs(x - lam) for x in lams) < 1e-4, lams
    for i, j in enumerate(partners):
        expected = t[i] if j == i else lam * t[i] + (1 - lam) * t[j]
        assert torch.allclose(out_t[i], expected, atol=1e-5), (i, j, lam)
    return lam


def check_cutmix(a, t, out, out_t) -> tuple[float, bool] | None:
    """out = a outside one box and a[perm] inside it (the same box for every sample); out_t must
    weigh the pasted sample by the box's share of the image. Returns (that share, whether the
    box was clipped by the image border); None if nothing changed."""
    n, _, h, w = a.shape
    changed = (out != a).any(dim=1)  # (n, h, w)
    if not changed.any():
        assert torch.equal(out_t, t)
        return None
    box = changed[changed.flatten(1).any(1)][0]
    rows, cols = torch.nonzero(box.any(1)).flatten(), torch.nonzero(box.any(0)).flatten()
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    assert box.sum() == (y1 - y0) * (x1 - x0), "the pasted region is not a rectangle"
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    share = (y1 - y0) * (x1 - x0) / (h * w)
    partners = []
    for i in range(n):
        assert torch.equal(out[i][:, ~inside], a[i][:, ~inside]), "pixels outside the box changed"
        j = next(j for j in range(n) if torch.equal(out[i][:, inside], a[j][:, inside]))
        partners.append(j)
        expected = (1 - share) * t[i] + share * t[j]
        assert torch.allclose(out_t[i], expected, atol=1e-6), (i, j, share)
    assert sorted(partners) == list(range(n)), "partners are not a permutation of the batch"
    return share, y0 == 0 or x0 == 0 or y1 == h or x1 == w


def test_mixup_mixes_targets_with_the_images_weights():
    lams = []
    for seed in range(10):
        a, t = batch(seed)
        out, out_t = mix(a, t, seed, mixup=0.4)
        assert out.shape == a.shape and out.dtype == torch.float32
        assert out_t.shape == t.shape and out_t.dtype == t.dtype
        lams.append(check_mixup(a, t, out, out_t))
    mixed = [x for x in lams if x is not None]
    assert len(mixed) >= 8 and max(mixed) - min(mixed) > 0.5  # lam is drawn per batch


def test_cutmix_weighs_targets_by_the_pasted_area():
    results = []
    for seed in range(30):
        a, t = batch(seed)
        out, out_t = mix(a, t, seed, cutmix=1.0)
        assert out.shape == a.shape and out.dtype == torch.float32
        assert out_t.shape == t.shape and out_t.dtype == t.dtype
        results.append(check_cutmix(a, t, out, out_t))
    boxes = [r for r in results if r is not None]
    # The checks above ran on boxes inside the image and on boxes cut by its border (where the
    # area differs most from the drawn lam), of different sizes.
    assert len(boxes) >= 20 and any(clipped for _, clipped in boxes)
    assert any(not clipped for _, clipped in boxes) and len({s for s, _ in boxes}) >= 5


def test_mixup_or_cutmix_when_both_are_on():
    kinds = []
    for seed in range(30):
        a, t = batch(seed)
        out, out_t = mix(a, t, seed, mixup=0.4, cutmix=1.0)
        exact = bool(torch.isin(out, a).all())  # CutMix copies pixels; mixup makes new values
        kinds.append("cutmix" if exact else "mixup")
        (check_cutmix if exact else check_mixup)(a, t, out, out_t)
    assert 5 <= kinds.count("cutmix") <= 25, kinds


@pytest.mark.parametrize("prob, mixup, cutmix", [(0.0, 0.4, 1.0), (1.0, 0.0, 0.0)])
def test_no_mixing_leaves_the_batch_unchanged(prob, mixup, cutmix):
    a, t = batch(0)
    a8 = a.to(torch.uint8)
    for seed in range(5):
        for images in (a, a8):
            out, out_t = mix(images, t, seed, mixup=mixup, cutmix=cutmix, prob=prob)
            assert out.dtype == images.dtype and torch.equal(out, images)
            assert out_t.dtype == t.dtype and torch.equal(out_t, t)


def test_prob_is_the_share_of_mixed_batches():
    a, t = batch(0, n=4, size=8)
    mixed = 0
    for seed in range(300):
        out, _ = mix(a, t, seed, mixup=0.4, cutmix=1.0, prob=0.3)
        mixed += not torch.equal(out, a)
    assert 60 <= mixed <= 120, mixed  # 90 expected


def test_uint8_batches_mix_into_float_pixels_in_range():
    """The DataLoader gives uint8 images; a convex combination needs a float type (HPANet
    takes either), on the same 0..255 scale."""
    a, t = batch(1)
    a8 = a.to(torch.uint8)
    out, out_t = mix(a8, t, 1, mixup=0.4)
    assert out.dtype == torch.float32 and out.shape == a8.shape and out_t.dtype == t.dtype
    assert out.min() >= 0 and out.max() <= 255 and not torch.equal(out, a8.float())
    out, out_t = mix(a8, t, 1, cutmix=1.0)  # pasted pixels: uint8 could stay uint8
    assert out.dtype in (torch.uint8, torch.float32) and out.shape == a8.shape
    assert out_t.dtype == t.dtype and check_cutmix(a8.float(), t, out.float(), out_t)


# --- warm-up + cosine -----------------------------------------------------------------------


@pytest.mark.parametrize("warmup, total, min_ratio", [(4, 20, 0.01), (1, 9, 0.1), (6, 30, 0.0)])
def test_warmup_cosine_shape(warmup, total, min_ratio):
    f = [warmup_cosine(step, warmup, total, min_ratio) for step in range(total + 3)]
    # Linear ramp from 1/warmup, reaching 1.0 on the last warm-up step.
    for step in range(warmup):
        assert f[step] == pytest.approx((step + 1) / warmup)
    assert f[warmup - 1] == pytest.approx(1.0) and f[warmup] == pytest.approx(1.0)
    # Then strictly decreasing to min_ratio at `total`, and flat after.
    after = f[warmup : total + 1]
    assert all(b < a for a, b in zip(after, after[1:], strict=False)), after
    assert f[total] == pytest.approx(min_ratio) and f[total + 2] == pytest.approx(min_ratio)
    assert all(min_ratio - 1e-12 <= x <= 1 + 1e-12 for x in f)
    # A cosine, not a straight line: half-way it is at the middle, a quarter in well above 3/4.
    span = total - warmup
    if span % 4 == 0:
        mid, quarter = f[warmup + span // 2], f[warmup + span // 4]
        assert mid == pytest.approx(min_ratio + (1 - min_ratio) / 2)
        cos_quarter = (1 + math.cos(math.pi / 4)) / 2  # 0.854
        assert quarter == pytest.approx(min_ratio + (1 - min_ratio) * cos_quarter)


def test_warmup_cosine_without_warmup_starts_at_full_lr():
    assert warmup_cosine(0, 0, 10, 0.05) == pytest.approx(1.0)
    assert warmup_cosine(10, 0, 10, 0.05) == pytest.approx(0.05)


def test_optimizer_sees_the_schedule_in_a_trainer_run(tiny_dataset, tmp_path, monkeypatch):
    seen, final = [], []

    def on_train_batch_start(self, batch, batch_idx):  # the LR this step's update will use
        seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self):
        final.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    monkeypatch.setattr(HPAModule, "on_train_batch_start", on_train_batch_start, raising=False)
    monkeypatch.setattr(HPAModule, "on_train_end", on_train_end, raising=False)
    lr, min_ratio = 1e-3, 0.1
    args = tiny(
        tiny_dataset,
        tmp_path / "run",
        "trainer.max_epochs=3",
        f"optimizer.lr={lr}",
        "scheduler.warmup_epochs=1",
        f"scheduler.min_lr_ratio={min_ratio}",
        "export=false",
    )
    train(compose("train", args))
    # 30 training samples in batches of 8 (drop_last): 3 steps an epoch, 9 in all; warm-up is
    # the first epoch's 3 steps.
    assert len(seen) == 9
    assert seen[:3] == pytest.approx([lr / 3, 2 * lr / 3, lr])
    assert all(b < a for a, b in zip(seen[3:], seen[4:], strict=False)), seen
    assert seen == pytest.approx([lr * warmup_cosine(s, 3, 9, min_ratio) for s in range(9)])
    assert final == pytest.approx([lr * min_ratio])  # after the last step's scheduler step


def test_a_module_of_before_the_config_groups_builds_the_same_parts():
    """A checkpoint's hparams of before: `loss.name` and AdamW's keys with the schedule's."""
    cfg = compose("train", ["model.backbone=test_resnet", "paths.output_dir=x"])
    module = HPAModule(
        model=dict(cfg.model),
        optimizer={"lr": 2e-3, "weight_decay": 0.1, "warmup_epochs": 2, "min_lr_ratio": 0.05},
        loss={"name": "focal", "gamma": 1.5, "pos_weight": None, "label_smoothing": 0.0},
        class_names=[str(i) for i in range(19)],
        image_size=32,
    )
    assert type(module.criterion).__name__ == "FocalLoss" and module.criterion.gamma == 1.5
    assert module.criterion.alpha == 0.25  # loss/focal.yaml's, where the old node had none
    optimizer, scheduler = module.hparams.optimizer, module.hparams.scheduler
    assert optimizer["_target_"] == "torch.optim.AdamW"
    assert (optimizer["lr"], optimizer["weight_decay"]) == (2e-3, 0.1)
    assert (scheduler["warmup_epochs"], scheduler["min_lr_ratio"]) == (2, 0.05)
    with pytest.raises(InputError, match="optimizer.betas_typo is not an option"):
        HPAModule(
            model=dict(cfg.model),
            optimizer={**dict(cfg.optimizer), "betas_typo": 1},
            loss=dict(cfg.loss),
            class_names=[str(i) for i in range(19)],
            image_size=32,
        )


# --- DDP validation predictions back into dataset order -------------------------------------


def rank_outputs(
    values: torch.Tensor, world_size: int, batch_size: int
) -> list[list[torch.Tensor]]:
    """What each rank's validation_step collects: Lightning's own validation sampler (no
    shuffling, padded to a multiple of the world size), in batches."""
    from pytorch_lightning.trainer.connectors.data_connector import _get_distributed_sampler
    from pytorch_lightning.trainer.states import RunningStage
    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(len(values))), batch_size=batch_size)
    outputs = []
    for rank in range(world_size):
        sampler = _get_distributed_sampler(
            loader,
            shuffle=False,
            overfit_batches=0,
            mode=RunningStage.VALIDATING,
            num_replicas=world_size,
            rank=rank,
        )
        local = values[list(sampler)]
        outputs.append(list(local.split(batch_size)))
    return outputs


def fake_rank(probs: list[torch.Tensor], targets: list[torch.Tensor], everyone) -> SimpleNamespace:
    """A module as gather_predictions sees it on one rank; all_gather stacks every rank's copy."""
    local_probs, local_targets = torch.cat(probs), torch.cat(targets)

    def all_gather(tensor):
        if torch.equal(tensor, local_probs):
            return torch.stack([torch.cat(p) for p, _ in everyone])
        assert torch.equal(tensor, local_targets)
        return torch.stack([torch.cat(t) for _, t in everyone])

    return SimpleNamespace(
        trainer=SimpleNamespace(world_size=len(everyone)),
        device=torch.device("cpu"),
        all_gather=all_gather,
    )


@pytest.mark.parametrize("n, world_size", [(10, 2), (11, 2), (7, 3), (5, 4), (13, 4), (1, 2)])
def test_gather_puts_every_ranks_predictions_back_in_dataset_order(n, world_size):
    g = torch.Generator().manual_seed(n * 10 + world_size)
    probs = torch.rand(n, 19, generator=g)
    targets = (torch.rand(n, 19, generator=g) < 0.5).float()
    per_rank = list(
        zip(rank_outputs(probs, world_size, 2), rank_outputs(targets, world_size, 2), strict=True)
    )
    if n % world_size:  # the sampler padded: some samples are predicted twice
        assert sum(len(torch.cat(p)) for p, _ in per_rank) > n
    for p, t in per_rank:
        module = fake_rank(p, t, per_rank)
        gathered = gather_predictions(module, torch.cat(p), torch.cat(t), n)
        assert gathered is not None
        assert torch.equal(gathered[0], probs) and torch.equal(gathered[1], targets)


def test_gather_refuses_when_a_rank_did_not_see_its_whole_share():
    probs, targets = torch.rand(10, 19), torch.rand(10, 19)
    per_rank = list(zip(rank_outputs(probs, 2, 2), rank_outputs(targets, 2, 2), strict=True))
    p, t = per_rank[0]
    module = fake_rank(p[:-1], t[:-1], per_rank)  # e.g. limit_val_batches cut the last batch
    assert gather_predictions(module, torch.cat(p[:-1]), torch.cat(t[:-1]), 10) is None


# --- EMA ------------------------------------------------------------------------------------


def test_exported_weights_are_the_ema_of_the_raw_weights(tiny_dataset, tmp_path, monkeypatch):
    """Record the raw weights after every step, average them independently, compare with
    model/: the export must be the EMA at the best checkpoint's step, not the raw weights."""
    raw = []

    def on_train_batch_end(self, outputs, batch, batch_idx):
        raw.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})

    monkeypatch.setattr(HPAModule, "on_train_batch_end", on_train_batch_end, raising=False)
    decay = 0.5
    out = tmp_path / "ema"
    args = tiny(
        tiny_dataset,
        out,
        "trainer.max_epochs=2",
        "callbacks=ema",
        "callbacks.ema.update_starting_at_step=0",
        f"callbacks.ema.decay={decay}",
    )
    train(compose("train", args))
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    steps = best["global_step"]
    assert len(raw) == 6 and steps in (3, 6)
    ema = dict(raw[0])  # the first update copies the weights; then ema = d * ema + (1 - d) * w
    for weights in raw[1:steps]:
        ema = {k: decay * ema[k] + (1 - decay) * weights[k] for k in ema}
    exported = load_file(str(out / "model" / "model.safetensors"))
    floats = [k for k, v in exported.items() if v.is_floating_point()]
    conv = next(k for k in floats if k.endswith("conv1.weight"))
    assert not torch.allclose(ema[conv], raw[steps - 1][conv], atol=1e-6)  # EMA is visible
    for k in floats:
        assert torch.allclose(exported[k], ema[k], atol=1e-6), k


# --- multirun over folds --------------------------------------------------------------------


def test_multirun_over_folds_writes_each_fold_and_one_merged_oof(tiny_dataset, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in tiny(tiny_dataset, sweep) if not a.startswith("data.n_folds=")]
    r = run_cli(["-m", "data.fold=0,1", "data.n_folds=2", *args], tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # paths.output_dir=DIR became the sweep folder: nothing went to the default outputs/.
    assert (sweep / "multirun.yaml").is_file() and not (tmp_path / "outputs").exists()
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 2
    folds = {}
    for job in jobs:
        fold = json.loads((job / "metrics.json").read_text())["fold"]
        assert (job / "model" / "model.safetensors").is_file()
        oof = pd.read_csv(job / "oof.csv")
        assert (oof["fold"] == fold).all()
        folds[fold] = oof
    assert sorted(folds) == [0, 1]
    merged = pd.read_csv(sweep / "oof.csv")
    ids = pd.read_csv(tiny_dataset / "train.csv")["ID"]
    assert merged["ID"].is_unique and sorted(merged["ID"]) == sorted(ids)
    assert set(folds[0]["ID"]).isdisjoint(folds[1]["ID"])
    expected = pd.concat(folds.values()).set_index("ID").sort_index()
    pd.testing.assert_frame_equal(merged.set_index("ID").sort_index(), expected)


@pytest.mark.parametrize(("folds", "merged"), [((0, 1), True), ((0, 0), False)])
def test_sweep_oof_is_merged_only_over_distinct_folds(tmp_path, folds, merged):
    """An lr or Optuna sweep on one fold predicts the same samples in every job: merging those
    would mix trials into a meaningless file."""
    from hpa.training.finish import merge_sweep_oof

    (tmp_path / "multirun.yaml").write_text("{}\n")
    for job, fold in enumerate(folds):
        (tmp_path / str(job)).mkdir()
        frame = pd.DataFrame({"ID": [f"a{job}", f"b{job}"], "fold": fold, "0": [0.1, 0.9]})
        frame.to_csv(tmp_path / str(job) / "oof.csv", index=False)
    merge_sweep_oof(tmp_path / "0")
    assert (tmp_path / "oof.csv").is_file() == merged
    if merged:
        assert sorted(pd.read_csv(tmp_path / "oof.csv")["ID"]) == ["a0", "a1", "b0", "b1"]
