"""python -m hpa.kaggle: the folders to upload to Kaggle, and the kaggle CLI steps that upload them.

    python -m hpa.kaggle push --model RUN/model [--model ...]   # all of it, with the kaggle CLI
        [--with-hpacellseg [WHEEL] --with-wheel WHEEL --segmenter-weights OWNER/SLUG]
        [--predict-option KEY=VALUE ...]             # the pushed notebook's SEGMENTER, options
    python -m hpa.kaggle status                      # the pushed notebook's run
    python -m hpa.kaggle output --out DIR            # its output (submission.csv, log)
    python -m hpa.kaggle submit --message M          # its submission.csv to the competition
    python -m hpa.kaggle logs [--follow]             # its log, as it runs

    python -m hpa.kaggle data --out DIR [--sizes 512 ...]  # the competition's zip -> the cache
        [--keep-images] [--delete-archive] [--archive-dir DIR2]

    python -m hpa.kaggle bundle --out DIR            # wheels for an offline `pip install hpa`
        [--with-hpacellseg [WHEEL]] [--with-wheel WHEEL]  # + wheels installed with --no-deps
    python -m hpa.kaggle model --model RUN/model --out DIR
    python -m hpa.kaggle kernels --out DIR           # each notebook with kernel-metadata.json
        [--segmenter-weights OWNER/SLUG] [--predict-option KEY=VALUE ...]

By hand: `kaggle datasets create -p DIR` (or `version`) and `kaggle kernels push -p DIR/<kernel>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import DiskFullError, disk_full_message
from hpa.kaggle import push as pushing
from hpa.kaggle.bundle import (
    HPACELLSEG_WEIGHTS,
    inference_parameters,
    make_bundle,
    make_kernels,
    make_model_dataset,
)
from hpa.kaggle.metadata import (
    DEFAULT_ACCELERATOR,
    DEFAULT_PINNING,
    PINNINGS,
    PLACEHOLDER_USER,
    default_user,
    install_cell,
)
from hpa.kaggle.wheels import BundleError, default_hpacellseg_wheel
from hpa.signals import graceful_sigterm

DEFAULT_WHEEL = Path("<../shared/wheels>")  # --with-hpacellseg given without a file
HINTS = {
    "push": "the data sets uploaded so far are kept; run the same command again (unchanged ones "
    "are not uploaded twice)",
    "status": "run the same command again",
    "submit": "run `python -m hpa.kaggle status`, then submit again if nothing was submitted",
    "logs": "run the same command again",
    "data": "the downloaded part of the archive and the finished rows of the caches are kept; "
    "run the same command again to go on",
}


def add_no_deps_options(parser: argparse.ArgumentParser) -> None:
    """--with-hpacellseg and --with-wheel, as bundle and push take them (no_deps_wheels)."""
    parser.add_argument(
        "--with-hpacellseg",
        nargs="?",
        type=Path,
        const=DEFAULT_WHEEL,
        metavar="WHEEL",
        help="add HPA-Cell-Segmentation's wheel (default: ../shared/wheels/hpacellseg-*.whl), "
        "which the inference notebook installs with pip install --no-deps (segmenter=hpacellseg)",
    )
    parser.add_argument(
        "--with-wheel",
        action="append",
        type=Path,
        default=[],
        metavar="WHEEL",
        help="another wheel to install with --no-deps, e.g. pytorch_zoo's, which hpacellseg's "
        "weights need: pip wheel --no-deps https://github.com/haoxusci/pytorch_zoo/archive/"
        "master.zip",
    )


def hpacellseg_wheel(args: argparse.Namespace) -> Path | None:
    """--with-hpacellseg's wheel: the one given, ../shared/wheels' without a file, else None."""
    if args.with_hpacellseg == DEFAULT_WHEEL:
        return default_hpacellseg_wheel()
    return args.with_hpacellseg


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """What the pushed inference notebook gets besides the bundle and the models (push, kernels)."""
    parser.add_argument(
        "--segmenter-weights",
        metavar="OWNER/SLUG",
        help=f"a Kaggle data set holding {' and '.join(HPACELLSEG_WEIGHTS)}: attached to the "
        'inference notebook, which then segments with SEGMENTER = "hpacellseg" (the bundle needs '
        "--with-hpacellseg)",
    )
    parser.add_argument(
        "--predict-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an hpa.predict option (configs/predict.yaml) for the notebook's PREDICT_OPTIONS, "
        "e.g. tta=d4; repeat for more",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.kaggle",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    user = {
        "default": default_user(),
        "help": "Kaggle user name ($KAGGLE_USERNAME, else kaggle.json's username)",
    }
    kernel_opts = {
        "accelerator": {
            "default": DEFAULT_ACCELERATOR,
            "help": f"GPU of the notebook (machine_shape; default {DEFAULT_ACCELERATOR})",
        },
        "pinning": {
            "default": DEFAULT_PINNING,
            "choices": PINNINGS,
            "help": "docker_image_pinning_type: original keeps the image of the notebook's first "
            "version (the one kaggle_image.txt describes); latest takes today's",
        },
    }

    push = sub.add_parser("push", help="bundle + model data sets + inference notebook, uploaded")
    push.add_argument("--model", type=Path, action="append", required=True, help="model/ folder")
    push.add_argument("--out", type=Path, default=pushing.DEFAULT_OUT, help="default dist/kaggle")
    push.add_argument("--user", **user)
    push.add_argument("--bundle-slug", default="hpa-bundle")
    push.add_argument("--model-slug", action="append", help="one per --model (hpa-model, -2, ...)")
    push.add_argument("--message", default="pushed by python -m hpa.kaggle push")
    push.add_argument("--accelerator", **kernel_opts["accelerator"])
    push.add_argument("--pinning", **kernel_opts["pinning"])
    push.add_argument("--wait", type=float, default=900.0, help="seconds to wait for uploads")
    push.add_argument(
        "--timeout",
        type=int,
        metavar="SECONDS",
        help="the kernel's run time limit (kaggle kernels push -t; default: Kaggle's)",
    )
    add_no_deps_options(push)
    add_inference_options(push)

    pushed = {"type": Path, "default": pushing.DEFAULT_OUT, "help": "push's --out (push.json)"}
    kernel = {"help": "OWNER/SLUG (default: the last push's, else USER/hpa-inference)"}
    status = sub.add_parser("status", help="the pushed notebook's status")
    output = sub.add_parser("output", help="download the pushed notebook's output")
    output.add_argument("--out", type=Path, required=True)
    submit = sub.add_parser("submit", help="submit the pushed notebook's submission.csv")
    submit.add_argument("--message", required=True)
    submit.add_argument("--version", type=int, help="kernel version (default: the last push's)")
    logs = sub.add_parser("logs", help="the pushed notebook's log (kaggle kernels logs)")
    logs.add_argument("--follow", action="store_true", help="new lines as it runs, until it ends")
    for cmd in (status, output, submit, logs):
        cmd.add_argument("--kernel", **kernel)
        cmd.add_argument("--pushed", **pushed)
        cmd.add_argument("--user", **user)

    data = sub.add_parser(
        "data", help="the competition's files, decoded straight from the zip into the cache"
    )
    data.add_argument(
        "--out", type=Path, required=True, help="the data root to fill (train.csv, .hpa_cache/)"
    )
    data.add_argument(
        "--sizes", type=int, nargs="+", default=[512], metavar="PX", help="cache sizes (512)"
    )
    data.add_argument(
        "--keep-images", action="store_true", help="also unpack the PNGs into OUT/train, OUT/test"
    )
    data.add_argument(
        "--delete-archive",
        action="store_true",
        help="remove the archive once every cache is complete (kept by default)",
    )
    data.add_argument("--archive-dir", type=Path, help="where the ~160 GB archive goes (OUT)")
    data.add_argument("--workers", type=int, help="decoding processes (default: every core)")

    bundle = sub.add_parser("bundle", help="hpa's wheel + every dependency Kaggle's image lacks")
    bundle.add_argument("--out", type=Path, required=True, help="folder to write (replaced whole)")
    bundle.add_argument("--user", **user)
    bundle.add_argument("--slug", default="hpa-bundle", help="dataset slug (default: hpa-bundle)")
    bundle.add_argument("--title", default="hpa offline wheels")
    add_no_deps_options(bundle)

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
    kernels.add_argument("--accelerator", **kernel_opts["accelerator"])
    kernels.add_argument("--pinning", **kernel_opts["pinning"])
    add_inference_options(kernels)
    return parser.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = getattr(args, "out", None) or Path.cwd()
    hint = HINTS.get(
        args.command, f"nothing half-written is left in {out}; run the same command again"
    )
    try:
        with graceful_sigterm(hint):
            run(args)
    except BundleError as err:  # the bundle cannot be made as asked: bad input, like the rest
        if "No space left on device" in str(err):  # said by pip or the wheel build it ran
            raise DiskFullError(disk_full_message(out.resolve().parent)) from None
        raise InputError(str(err)) from None


def run(args: argparse.Namespace) -> None:
    if args.command == "data":
        from hpa.kaggle.data import get_data  # decoding (cv2, the cache) only for this command

        get_data(
            args.out,
            args.sizes,
            args.keep_images,
            args.delete_archive,
            args.archive_dir,
            args.workers,
        )
        return
    if args.command == "push":
        pushing.push(
            args.model,
            args.out,
            args.user,
            args.bundle_slug,
            args.model_slug,
            args.message,
            args.accelerator,
            args.pinning,
            args.wait,
            hpacellseg=hpacellseg_wheel(args),
            wheels=args.with_wheel,
            segmenter_weights=args.segmenter_weights,
            predict_options=args.predict_option,
            run_timeout=args.timeout,
        )
        return
    if args.command in ("status", "output", "submit", "logs"):
        kernel = pushing.pushed_kernel(args.pushed, args.kernel, args.user)
        if args.command == "status":
            pushing.status(kernel)
        elif args.command == "logs":
            pushing.logs(kernel, args.follow)
        elif args.command == "output":
            pushing.output(kernel, args.out)
        else:
            version = args.version
            if version is None and not args.kernel:
                version = pushing.read_state(args.pushed).get("version")
            pushing.submit(kernel, version, args.message)
        return
    if args.command == "bundle":
        hpacellseg = hpacellseg_wheel(args)
        extra = [*([hpacellseg] if hpacellseg else []), *args.with_wheel]
        wheels = make_bundle(args.out, args.user, args.slug, args.title, no_deps=extra)
        print(f"\nwrote {len(wheels)} wheels and dataset-metadata.json to {args.out}")
        print(f"upload:  kaggle datasets create -p {args.out}")
        print(f"update:  kaggle datasets version -p {args.out} -m 'new hpa'")
        print("In a notebook with this dataset attached (Internet off), install with:\n")
        print(f"    {install_cell(args.slug)}\n")
        if extra:  # what the inference notebook runs when the bundle lists them (no-deps.txt)
            paths = " ".join(f"/kaggle/input/{args.slug}/{Path(w).name}" for w in extra)
            print(f"    !pip install --no-index --no-deps {paths}\n")
    elif args.command == "model":
        out = make_model_dataset(args.model, args.out, args.user, args.slug, args.title)
        print(f"wrote {out} (config.json, model.safetensors, dataset-metadata.json)")
        print(f"upload:  kaggle datasets create -p {out}   (mounted at /kaggle/input/{args.slug})")
    else:
        models = args.model_slug or ["hpa-model"]
        parameters = inference_parameters(args.segmenter_weights, args.predict_option)
        weights = [args.segmenter_weights] if args.segmenter_weights else []
        folders = make_kernels(
            args.out,
            args.user,
            args.bundle_slug,
            models,
            args.accelerator,
            args.pinning,
            weights,
            parameters,
        )
        for folder in folders:
            print(f"wrote {folder}   push: kaggle kernels push -p {folder}")
        if weights:
            print("note: the bundle must carry hpacellseg's wheel (bundle --with-hpacellseg)")
    if args.user == PLACEHOLDER_USER:
        print(f"note: ids say {PLACEHOLDER_USER!r}: pass --user or set KAGGLE_USERNAME to upload")


if __name__ == "__main__":
    main()
