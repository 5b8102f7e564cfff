"""python -m hpa.kaggle bundle|kernels|model: the folders to upload to Kaggle.

    python -m hpa.kaggle bundle --out DIR            # wheels for an offline `pip install hpa`
    python -m hpa.kaggle model --model RUN/model --out DIR
    python -m hpa.kaggle kernels --out DIR           # each notebook with kernel-metadata.json

Then `kaggle datasets create -p DIR` (or `version`) and `kaggle kernels push -p DIR/<kernel>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import DiskFullError, disk_full_message
from hpa.kaggle.bundle import make_bundle, make_kernels, make_model_dataset
from hpa.kaggle.metadata import PLACEHOLDER_USER, default_user, install_cell
from hpa.kaggle.wheels import BundleError
from hpa.signals import graceful_sigterm


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.kaggle",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    user = {"default": default_user(), "help": "Kaggle user name ($KAGGLE_USERNAME)"}

    bundle = sub.add_parser("bundle", help="hpa's wheel + every dependency Kaggle's image lacks")
    bundle.add_argument("--out", type=Path, required=True, help="folder to write (replaced whole)")
    bundle.add_argument("--user", **user)
    bundle.add_argument("--slug", default="hpa-bundle", help="dataset slug (default: hpa-bundle)")
    bundle.add_argument("--title", default="hpa offline wheels")

    model = sub.add_parser("model", help="an exported model/ as a Kaggle dataset")
    model.add_argument("--model", type=Path, required=True, help="model/ folder hpa.train wrote")
    model.add_argument("--out", type=Path, required=True)
    model.add_argument("--user", **user)
    model.add_argument("--slug", default="hpa-model")
    model.add_argument("--title", default="hpa model")

    kernels = sub.add_parser("kernels", help="one folder per notebook with kernel-metadata.json")
    kernels.add_argument("--out", type=Path, required=True)
    kernels.add_argument("--user", **user)
    kernels.add_argument("--bundle-slug", default="hpa-bundle")
    slugs = {"action": "append", "help": "model dataset(s) for inference (default: hpa-model)"}
    kernels.add_argument("--model-slug", **slugs)
    return parser.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    hint = f"nothing half-written is left in {args.out}; run the same command again"
    try:
        with graceful_sigterm(hint):
            run(args)
    except BundleError as err:  # the bundle cannot be made as asked: bad input, like the rest
        if "No space left on device" in str(err):  # said by pip or the wheel build it ran
            raise DiskFullError(disk_full_message(args.out.resolve().parent)) from None
        raise InputError(str(err)) from None


def run(args: argparse.Namespace) -> None:
    if args.command == "bundle":
        wheels = make_bundle(args.out, args.user, args.slug, args.title)
        print(f"\nwrote {len(wheels)} wheels and dataset-metadata.json to {args.out}")
        print(f"upload:  kaggle datasets create -p {args.out}")
        print(f"update:  kaggle datasets version -p {args.out} -m 'new hpa'")
        print("In a notebook with this dataset attached (Internet off), install with:\n")
        print(f"    {install_cell(args.slug)}\n")
    elif args.command == "model":
        out = make_model_dataset(args.model, args.out, args.user, args.slug, args.title)
        print(f"wrote {out} (config.json, model.safetensors, dataset-metadata.json)")
        print(f"upload:  kaggle datasets create -p {out}   (mounted at /kaggle/input/{args.slug})")
    else:
        models = args.model_slug or ["hpa-model"]
        for folder in make_kernels(args.out, args.user, args.bundle_slug, models):
            print(f"wrote {folder}   push: kaggle kernels push -p {folder}")
    if args.user == PLACEHOLDER_USER:
        print(f"note: ids say {PLACEHOLDER_USER!r}: pass --user or set KAGGLE_USERNAME to upload")


if __name__ == "__main__":
    main()
