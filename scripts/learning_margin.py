"""Measure the learning test's margin over seeds: true labels vs labels shuffled across images.

    .venv/bin/python scripts/learning_margin.py --seeds 0 1 2 3 4
    .venv/bin/python scripts/learning_margin.py --seeds 0 1 --set backbone=test_resnet epochs=6

Prints one line per seed (real mAP, shuffled mAP, their difference and ratio) and the worst
case over the seeds. tests/test_train.py asserts a bound below that worst case; change the bound
only with a new measurement (docs/testing.md keeps the numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from learning import SETUP, learning_pair  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help=f"change {sorted(SETUP)}"
    )
    args = parser.parse_args()
    setup = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in SETUP or not value:
            parser.error(f"--set {item}: expected KEY=VALUE with KEY one of {sorted(SETUP)}")
        setup[key] = type(SETUP[key])(value)
    print(f"setup: { ({**SETUP, **setup}) }", flush=True)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="hpa-margin-") as tmp:
            real, fake = learning_pair(Path(tmp), seed, **setup)
        rows.append((real, fake))
        print(
            f"seed {seed}: real {real:.4f} shuffled {fake:.4f} "
            f"diff {real - fake:+.4f} ratio {real / max(fake, 1e-9):.2f}",
            flush=True,
        )
    print(
        f"worst: diff {min(r - f for r, f in rows):+.4f} "
        f"ratio {min(r / max(f, 1e-9) for r, f in rows):.2f} "
        f"lowest real {min(r for r, _ in rows):.4f} highest shuffled {max(f for _, f in rows):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
