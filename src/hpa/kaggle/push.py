"""From a trained model/ to a Kaggle submission with the official `kaggle` CLI, one line per step.

    python -m hpa.kaggle push --model RUN/model [--model ...]
    python -m hpa.kaggle status | output --out DIR | submit --message M

`push` asks `kaggle datasets status` whether each data set exists (which also proves the CLI and
its token work), builds the bundle and one data set folder per model under --out (default
dist/kaggle), uploads each with `kaggle datasets version` if it exists (skipped when its files are
those of the last push) or `kaggle datasets create` if not, waits until Kaggle has processed them, and pushes the inference notebook with
`kaggle kernels push`: those data sets and the competition attached, the accelerator set,
Internet off. The kernel and its version go to --out/push.json for status, output and submit.
A CLI failure ends with one line (what the CLI said) and exit status 2.

With --with-hpacellseg [WHEEL] (and --with-wheel WHEEL) the bundle carries HPA-Cell-Segmentation's
wheel, and --segmenter-weights OWNER/SLUG (a data set already on Kaggle, never uploaded here) is
attached and sets SEGMENTER = "hpacellseg" in the pushed copy of the notebook; each
--predict-option KEY=VALUE goes into its PREDICT_OPTIONS. All of them are checked before any call.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpa.errors import InputError
from hpa.fsio import write_json
from hpa.inputs import env_seconds
from hpa.kaggle.bundle import (
    DATASET_METADATA,
    HPACELLSEG_WEIGHTS,
    check_no_deps,
    check_out,
    inference_parameters,
    make_bundle,
    make_kernels,
    make_model_dataset,
)
from hpa.kaggle.inputs import MODEL_FILES
from hpa.kaggle.metadata import (
    COMPETITION,
    KERNELS,
    PINNINGS,
    PLACEHOLDER_USER,
    check_accelerator,
    check_slug,
    check_user,
    kernel_slug,
)
from hpa.kaggle.wheels import Fetcher
from hpa.outputs import replace_folder

DEFAULT_OUT = Path("dist/kaggle")
STATE = "push.json"
INFERENCE = next(k for k in KERNELS if k.needs_models)
# What the CLI prints on stdout, with exit status 0, when a push or an upload failed.
_FAILED = re.compile(r"error:|are not valid", re.IGNORECASE)
_BOILERPLATE = re.compile(r"kaggle --debug|please report it at", re.IGNORECASE)
_NOT_FOUND = re.compile(r"\b404\b|not found", re.IGNORECASE)
LOG_POLL_S = 15.0  # between looks at a running kernel's log (logs --follow)
_FINISHED = re.compile(r"complete|error|cancel", re.IGNORECASE)  # KernelWorkerStatus.<...>
POLL_S = 10.0  # between `datasets status` calls while Kaggle processes an upload

Log = Callable[[str], None]


def cli_problem(done: subprocess.CompletedProcess) -> str | None:
    """What a failed CLI call said, in one line; None when it succeeded.

    The first paragraph of stderr holds the error (an HTTP error is followed by a hint, an
    unexpected one by a request to report it): its last line. Without stderr, the first stdout line
    (the authentication help). With exit status 0, a stdout line saying `... error: ...`.
    """
    if done.returncode == 0:
        failed = [line for line in done.stdout.splitlines() if _FAILED.search(line)]
        return failed[0].strip() if failed else None
    for paragraph in re.split(r"\n\s*\n", done.stderr.strip()):
        lines = [ln.strip() for ln in paragraph.splitlines() if ln.strip()]
        if lines and not any(_BOILERPLATE.search(ln) for ln in lines):
            return lines[-1]
    first = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    return first[0] if first else f"exit status {done.returncode}"


@dataclass
class KaggleCli:
    """The `kaggle` command found on PATH, run once per step."""

    exe: str

    @classmethod
    def find(cls) -> KaggleCli:
        exe = shutil.which("kaggle")
        if exe is None:
            raise InputError(
                "the kaggle command is not on PATH: pip install kaggle, and put your API token "
                "in ~/.kaggle/kaggle.json (kaggle.com > Settings > API)"
            )
        return cls(exe)

    # Every call is bounded: a stalled connection must not hang a command forever.
    # HPA_KAGGLE_TIMEOUT (seconds) moves the limit for slow links and large outputs.
    timeout_s: float = field(default_factory=lambda: env_seconds("HPA_KAGGLE_TIMEOUT", 1800))

    def call(self, *args: str) -> subprocess.CompletedProcess:
        try:
            # The CLI's output may hold bytes that are not UTF-8 (a kernel's log): replaced.
            return subprocess.run(
                [self.exe, *args],
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self.timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise InputError(
                f"kaggle {' '.join(args[:2])} gave no answer in {self.timeout_s:.0f} s; check the "
                "connection and run the same command again (HPA_KAGGLE_TIMEOUT=SECONDS moves "
                "the limit)"
            ) from None

    def run(self, *args: str, stdout_errors: bool = True) -> subprocess.CompletedProcess:
        """The call's result; a failure is one InputError line naming the subcommand.

        `stdout_errors=False` for output that may quote an error that is not the CLI's own (the
        failure message of a kernel, shown by `kernels status`).
        """
        done = self.call(*args)
        problem = cli_problem(done) if stdout_errors or done.returncode else None
        if problem is not None:
            raise InputError(f"kaggle {' '.join(args[:2])} failed: {problem}")
        return done


def require_user(user: str) -> str:
    if not user or user == PLACEHOLDER_USER:
        raise InputError(
            "no Kaggle user: set KAGGLE_USERNAME, pass --user, or put your API token "
            "(kaggle.json, with your username) in ~/.kaggle"
        )
    return check_user(user)


def read_state(out: Path) -> dict:
    try:
        state = json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def fingerprint(folder: Path) -> str:
    """The files of a data set folder (names and contents): same value, nothing to upload."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        sha.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def exists(cli: KaggleCli, dataset: str) -> bool:
    """Whether the data set is on Kaggle: `datasets status` succeeds, or fails with not found."""
    done = cli.call("datasets", "status", dataset)
    if done.returncode == 0:
        return True
    if _NOT_FOUND.search(done.stderr + done.stdout):
        return False
    raise InputError(f"kaggle datasets status failed: {cli_problem(done)}")


def upload(
    cli: KaggleCli, folder: Path, message: str, on_kaggle: bool, known: dict[str, str], log: Log
) -> bool:
    """Create or version the data set in `folder`; False when it is unchanged since `known`."""
    dataset = json.loads((folder / DATASET_METADATA).read_text())["id"]
    if on_kaggle:
        if known.get(dataset) == fingerprint(folder):
            log(f"data set {dataset}: unchanged since the last push, not uploaded")
            return False
        log(f"data set {dataset}: new version: kaggle datasets version -p {folder}")
        cli.run("datasets", "version", "-p", str(folder), "-m", message)
    else:
        log(f"data set {dataset}: new: kaggle datasets create -p {folder}")
        cli.run("datasets", "create", "-p", str(folder))
    return True


def wait_ready(cli: KaggleCli, dataset: str, wait_s: float, log: Log) -> None:
    """Until Kaggle has processed the upload: a notebook pushed before attaches nothing."""
    deadline = time.monotonic() + wait_s
    while True:
        status = cli.run("datasets", "status", dataset).stdout.strip().lower()
        if status.endswith("ready"):
            log(f"data set {dataset}: ready")
            return
        if "error" in status:
            raise InputError(f"Kaggle could not process data set {dataset} (status {status!r})")
        if time.monotonic() >= deadline:
            raise InputError(
                f"data set {dataset} is still {status!r} after {wait_s:.0f} s; run the same "
                "command again later (what is uploaded already is not uploaded again)"
            )
        time.sleep(POLL_S)


def model_slugs(models: list[Path], slugs: list[str] | None) -> list[str]:
    if slugs is None:
        slugs = ["hpa-model", *(f"hpa-model-{i}" for i in range(2, len(models) + 1))]
    if len(slugs) != len(models):
        raise InputError(
            f"{len(slugs)} --model-slug for {len(models)} --model: give one slug per model"
        )
    return [check_slug(s, "--model-slug") for s in slugs]


def check_hpacellseg(hpacellseg: Path | None, segmenter_weights: str | None) -> None:
    """Both or neither: the notebook segments with hpacellseg only with its wheel and weights."""
    if segmenter_weights is not None and hpacellseg is None:
        raise InputError(
            f"--segmenter-weights {segmenter_weights}: the bundle needs hpacellseg's wheel as "
            "well; add --with-hpacellseg [WHEEL]"
        )
    if hpacellseg is not None and segmenter_weights is None:
        raise InputError(
            "--with-hpacellseg: the notebook also needs hpacellseg's weights; add "
            f"--segmenter-weights OWNER/SLUG (a data set holding {' and '.join(HPACELLSEG_WEIGHTS)})"
        )


def push(
    models: list[Path],
    out: Path,
    user: str,
    bundle_slug: str = "hpa-bundle",
    slugs: list[str] | None = None,
    message: str = "pushed by python -m hpa.kaggle push",
    accelerator: str = "NvidiaTeslaT4",
    pinning: str = "original",
    wait_s: float = 900.0,
    fetch: Fetcher | None = None,
    log: Log = print,
    hpacellseg: Path | None = None,
    wheels: Sequence[Path] = (),
    segmenter_weights: str | None = None,
    predict_options: Sequence[str] = (),
    run_timeout: int | None = None,
) -> dict:
    """Everything `python -m hpa.kaggle push` does; returns what it recorded in out/push.json.

    `hpacellseg` and `wheels`: the bundle's --no-deps wheels (`bundle --with-hpacellseg WHEEL
    --with-wheel WHEEL`); `segmenter_weights`: the data set attached for SEGMENTER = "hpacellseg";
    `predict_options`: the notebook's PREDICT_OPTIONS; `run_timeout`: the kernel's run time
    limit in seconds (`kaggle kernels push -t`), Kaggle's own when None.
    """
    cli = KaggleCli.find()  # every check that needs no work first: fail in a second, not later
    user = require_user(user)
    check_slug(bundle_slug, "--bundle-slug")
    slugs = model_slugs(models, slugs)
    check_accelerator(accelerator)
    if run_timeout is not None and run_timeout <= 0:
        raise InputError(f"--timeout {run_timeout}: give the run time limit in seconds, e.g. 32400")
    if pinning not in PINNINGS:
        raise InputError(f"--pinning {pinning!r}: use one of {', '.join(PINNINGS)}")
    check_hpacellseg(hpacellseg, segmenter_weights)
    no_deps = check_no_deps([*([hpacellseg] if hpacellseg else []), *wheels])
    parameters = inference_parameters(segmenter_weights, predict_options)
    attached = [segmenter_weights] if segmenter_weights else []
    for model in models:  # read_model_config's first check, without importing torch (seconds)
        if not all((model / name).is_file() for name in MODEL_FILES):
            raise InputError(
                f"{model} is not an exported hpa model (needs {' and '.join(MODEL_FILES)}); "
                "use the model/ folder that `python -m hpa.train` writes"
            )
    out = check_out(out)
    state = read_state(out)
    datasets = [f"{user}/{bundle_slug}", *(f"{user}/{s}" for s in slugs)]
    on_kaggle = {}
    for dataset in datasets:  # also proves the CLI and its token work, before minutes of building
        on_kaggle[dataset] = exists(cli, dataset)
        log(f"data set {dataset}: {'on Kaggle' if on_kaggle[dataset] else 'not on Kaggle yet'}")
    for dataset in attached:  # someone else's to upload: only checked, attached as it is
        if not exists(cli, dataset):
            raise InputError(
                f"--segmenter-weights {dataset}: no such data set on Kaggle (or not shared with "
                f"{user}); create it from a folder holding {' and '.join(HPACELLSEG_WEIGHTS)} "
                "with kaggle datasets create -p FOLDER"
            )
        log(f"data set {dataset}: on Kaggle (attached, not uploaded: hpacellseg's weights)")

    log(f"bundle: building {out / bundle_slug} (hpa's wheel + what Kaggle's image lacks)")
    folders = [out / bundle_slug]
    make_bundle(
        folders[0], user, bundle_slug, "hpa offline wheels", fetch=fetch, log=log, no_deps=no_deps
    )
    for i, (model, slug) in enumerate(zip(models, slugs, strict=True), start=1):
        title = "hpa model" if i == 1 else f"hpa model {i}"
        log(f"model: {model} -> {out / slug}")
        folders.append(make_model_dataset(model, out / slug, user, slug, title))

    known = dict(state.get("datasets", {}))
    for folder, dataset in zip(folders, datasets, strict=True):
        if upload(cli, folder, message, on_kaggle[dataset], known, log):
            wait_ready(cli, dataset, wait_s, log)
            known[dataset] = fingerprint(folder)
            write_json(out / STATE, {**state, "datasets": known})  # kept if a later step fails

    kernels = make_kernels(
        out / "kernels", user, bundle_slug, slugs, accelerator, pinning, attached, parameters
    )
    folder = next(k for k in kernels if k.name == kernel_slug(INFERENCE))
    kernel = f"{user}/{folder.name}"
    for name, value in parameters.items():
        log(f"notebook {kernel}: {name} = {value!r}")
    log(
        f"notebook {kernel}: kaggle kernels push -p {folder} ({accelerator}, Internet off, "
        f"data sets {', '.join([*datasets, *attached])}, competition {COMPETITION})"
    )
    limit = ["-t", str(run_timeout)] if run_timeout else []
    done = cli.run("kernels", "push", "-p", str(folder), *limit)
    found = re.search(r"Kernel version (\d+)", done.stdout)
    version = int(found[1]) if found else None
    state = {"datasets": known, "kernel": kernel, "version": version}
    write_json(out / STATE, state)
    at = f" version {version}" if version else ""
    log(f"pushed {kernel}{at}; it runs on Kaggle now: python -m hpa.kaggle status")
    log('when it is complete: python -m hpa.kaggle submit --message "what changed"')
    return state


def pushed_kernel(pushed: Path, kernel: str | None, user: str) -> str:
    """--kernel, else the one the last push recorded, else USER/hpa-inference."""
    if kernel:
        return kernel
    return read_state(pushed).get("kernel") or f"{require_user(user)}/{kernel_slug(INFERENCE)}"


def status(kernel: str, log: Log = print) -> str:
    cli = KaggleCli.find()
    text = cli.run("kernels", "status", kernel, stdout_errors=False).stdout.strip()
    log(text)
    return text


def logs(kernel: str, follow: bool = False, log: Log = print) -> str:
    """The kernel's log (`kaggle kernels logs`); `follow`: new lines as it runs, until it ends."""
    cli = KaggleCli.find()
    shown = ""
    while True:
        # The status first: a log read after a finished status is the whole log.
        status = cli.run("kernels", "status", kernel, stdout_errors=False).stdout if follow else ""
        text = cli.run("kernels", "logs", kernel, stdout_errors=False).stdout
        new = text[len(shown) :] if text.startswith(shown) else text
        if new.strip():
            log(new.rstrip("\n"))
        shown = text
        if not follow:
            return text
        if _FINISHED.search(status):
            log(status.strip())
            return text
        time.sleep(LOG_POLL_S)


def output(kernel: str, out: Path, log: Log = print) -> Path:
    """Download the kernel's output (submission.csv, its log) into `out`, replaced whole."""
    cli = KaggleCli.find()
    out = check_out(out)
    log(f"output of {kernel}: kaggle kernels output {kernel} -p {out}")
    # Replaced whole only when it holds nothing but an earlier output of this command.
    with replace_folder(out, "--out", "hpa.kaggle output") as tmp:
        cli.run("kernels", "output", kernel, "-p", str(tmp))
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        log(f"  {path}")
    return out


def submit(kernel: str, version: int | None, message: str, log: Log = print) -> str:
    """Submit the kernel version's submission.csv to the competition (a code competition)."""
    cli = KaggleCli.find()
    if version is None:
        raise InputError(
            f"no kernel version to submit: pass --version N (the number `python -m hpa.kaggle "
            f"push` printed; Kaggle shows it on {kernel}'s page)"
        )
    log(f"submit {kernel} version {version} to {COMPETITION}")
    done = cli.run(
        "competitions",
        "submit",
        "-c",
        COMPETITION,
        "-k",
        kernel,
        "-v",
        str(version),
        "-f",
        "submission.csv",
        "-m",
        message,
    )
    text = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "submitted"
    log(text)
    return text
