"""python -m hpa.synthetic out=DIR n_images=N seed=S image_size=PX bit_depth=8|16"""

from __future__ import annotations

import sys

from hpa.cli import check_writable, compose
from hpa.errors import exit_on_input_error
from hpa.signals import graceful_sigterm
from hpa.synthetic.generator import SyntheticConfig, generate_dataset


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("synthetic", sys.argv[1:] if argv is None else argv)
    options = {k: v for k, v in cfg.items() if k != "out" and v is not None}
    check_writable(cfg.out, "out")
    with graceful_sigterm("the files written so far are whole; run the same command again"):
        out = generate_dataset(SyntheticConfig(**options), cfg.out)
    print(
        f"wrote {cfg.n_images} samples to {out} ({cfg.split}.csv, {cfg.split}/, masks/, "
        "cells.csv, sample_submission.csv)"
    )


if __name__ == "__main__":
    main()
