"""Training throughput: the real DataLoader (from the hpa.prepare cache) vs in-memory tensors.

    python scripts/bench_train.py --data-root data/hpa --size 512            # on the GPU box
    python scripts/bench_train.py --data-root /tmp/syn --size 64 --backbones test_resnet --steps 3

For each backbone, samples/s of full training steps (forward, backward, AdamW) fed (a) by the
DataLoader with the train augmentations and (b) by one batch kept on the device. The ratio a/b
says how much the data pipeline costs: >= 0.9 means the GPU is not starved. One JSON line out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from hpa.cli import compose  # noqa: E402
from hpa.data.datamodule import HPADataModule  # noqa: E402
from hpa.labels import NUM_CLASSES  # noqa: E402
from hpa.models import HPANet, create_backbone  # noqa: E402
from hpa.threads import configure_threads  # noqa: E402


def measure(net, opt, batches, steps: int, device, dtype) -> float:
    """Samples/s over `steps` training steps after 2 warm-up steps."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    seen, start = 0, None
    for i, (images, targets) in enumerate(batches):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net(images).float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(images)
        if i + 1 >= steps + 2:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def loader_batches(loader):
    while True:
        yield from loader


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-root", required=True)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--backbones", nargs="+", default=["efficientnet_b0", "resnet50"])
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: free cores - workers)"
    )
    args = p.parse_args()
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads}: use 1 or more (or leave it out: free cores - workers)")
    threads = configure_threads(args.threads, workers=args.workers)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]
    cfg = compose(
        "train", [f"data.root={args.data_root}", "data.synthetic=null", "paths.output_dir=."]
    )
    dm = HPADataModule(
        root=args.data_root,
        image_size=args.size,
        batch_size=args.batch_size,
        n_folds=cfg.data.n_folds,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        augment={"train": list(cfg.data.augment.train)},
    )
    dm.setup("fit")
    source = dm.train_set.source.description
    results = {}
    for name in args.backbones:
        net = HPANet(create_backbone(name, NUM_CLASSES), cfg.model.mean, cfg.model.std)
        net = net.to(device).to(memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        fixed = (
            torch.randint(
                0, 255, (args.batch_size, 4, args.size, args.size), dtype=torch.uint8, device=device
            ),
            torch.rand(args.batch_size, NUM_CLASSES, device=device).round(),
        )
        memory = measure(net, opt, itertools.repeat(fixed), args.steps, device, dtype)
        real = measure(net, opt, loader_batches(dm.train_dataloader()), args.steps, device, dtype)
        results[name] = {
            "loader_samples_per_s": round(real, 2),
            "memory_samples_per_s": round(memory, 2),
            "ratio": round(real / memory, 3),
        }
        print(f"{name}: loader {real:.1f}/s, in-memory {memory:.1f}/s", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "train",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "image_size": args.size,
                "batch_size": args.batch_size,
                "precision": args.precision,
                "channels_last": True,
                "workers": args.workers,
                "torch_threads": threads,
                "source": source,
                "backbones": results,
            }
        )
    )


if __name__ == "__main__":
    main()
