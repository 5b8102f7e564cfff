"""python -m hpa.train [overrides]: fit, pick the best checkpoint, write metrics.json and model/."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hpa.cli import override_key, override_value
from hpa.errors import InputError, exit_on_input_error
from hpa.fsio import move_into_place, verify_checksum
from hpa.inputs import check_regular_file
from hpa.outputs import claim_names, lock

log = logging.getLogger(__name__)


def run_dir_for(ckpt_path: str | None, default: str) -> str:
    """A resumed run continues in the folder that holds its checkpoints/."""
    if ckpt_path:
        path = Path(ckpt_path)
        if path.parent.name == "checkpoints":
            return str(path.parent.parent)
    return default


OmegaConf.register_new_resolver("hpa_run_dir", run_dir_for, replace=True)


def sqlite_url(path: str) -> str:
    """`sqlite:///` URL of `path` (made absolute, its folder created): an Optuna study file."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


OmegaConf.register_new_resolver("hpa_sqlite", sqlite_url, replace=True)
# The default run folder's name ends in the process id: two runs started in the same second
# get two folders.
OmegaConf.register_new_resolver("hpa_pid", lambda: str(os.getpid()), replace=True, use_cache=True)


class Stopped(Exception):
    """Training stopped by SIGTERM; `last.ckpt` (if any) holds where it stopped."""

    def __init__(self, run_dir: Path, last: Path | None, summary: dict[str, Any] | None):
        self.run_dir, self.last, self.summary = run_dir, last, summary
        super().__init__(str(last))

    def message(self) -> str:
        if self.last is None:
            return "stopped by SIGTERM; nothing was saved yet: run the same command to start again"
        where = f"epoch {self.summary['epoch']}, step {self.summary['global_step']}"
        return f"stopped by SIGTERM; {where} saved: run the same command with ckpt_path={self.last} added"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; return the metrics of the best checkpoint."""
    from hpa.config_check import check_config

    # Bad input is one line in a few seconds: checked before the heavy imports (Lightning,
    # timm: seconds each) and before the model and the data are built.
    check_config(cfg, "train")
    from hpa.demo import check_data_root, ensure_synthetic_data

    check_data_root(cfg.data.root, cfg.data.train_csv, cfg.data.get("synthetic"))
    ckpt_path = check_ckpt(cfg.ckpt_path)
    if cfg.model.get("backbone"):
        from hpa.models.factory import check_backbone

        check_backbone(cfg.model.backbone)

    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from hpa.labels import CLASS_NAMES
    from hpa.pipeline import build_datamodule
    from hpa.signals import lightning_first
    from hpa.threads import configure_training_threads
    from hpa.training.checkpointing import AtomicCheckpointIO, checkpoint_summary, weights_only
    from hpa.training.finish import SamplesSeen, ValidationPredictions, finish_run
    from hpa.training.mil import module_class

    if not is_secondary_rank() and Path(cfg.paths.output_dir).is_dir():
        # What a run writes is hpa.train's: hpa.evaluate & co. keep off. Only in a folder that
        # is there (Hydra made it): a debug run that writes nothing makes no folder.
        claim_names(cfg.paths.output_dir, RUN_FILES, "hpa.train")
    configure_training_threads(cfg)  # torch threads = free cores - loader workers (or threads=N)
    pl.seed_everything(cfg.seed, workers=True)
    # The model first: a bad backbone fails in a second, before any data is generated or read.
    # HPAModule, or MILModule for model=mil data=bags (it exports a level=cell model)
    module_cls, level = module_class(cfg.model, cfg.data.get("level", "image"))
    module = module_cls(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        class_names=CLASS_NAMES,
        image_size=cfg.data.image_size,
        level=level,
        mix=OmegaConf.to_container(cfg.mix, resolve=True),
    )
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    ensure_synthetic_data(data_cfg["root"], data_cfg["train_csv"], data_cfg.pop("synthetic"))
    segmenter_cfg = cfg.get("segmenter")
    datamodule = build_datamodule(
        data_cfg, OmegaConf.to_container(segmenter_cfg, resolve=True) if segmenter_cfg else None
    )
    resumed = checkpoint_summary(ckpt_path) if ckpt_path else None  # read once, used twice
    if resumed:
        check_ckpt_matches(ckpt_path, resumed, module)
        check_resume_epochs(ckpt_path, resumed, cfg.trainer.get("max_epochs"))
    predictions = ValidationPredictions()  # the final validation's, for oof.csv and plots
    seen = SamplesSeen()  # training samples of this fit, for metrics.json's timing
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += [predictions, seen]
    loggers = (
        [instantiate(c) for c in cfg.logger.values() if c is not None]
        if cfg.get("logger")
        else False
    )
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=cfg.paths.output_dir,
        plugins=[AtomicCheckpointIO()],
    )
    if cfg.trainer.get("enable_checkpointing", True) is not False:
        check_space_for_checkpoints(module, Path(cfg.paths.output_dir))
    if cfg.tune:
        tune(trainer, module, datamodule)
    if resumed:
        log.info(
            "resuming from %s (epoch %d, step %d; run folder %s)",
            ckpt_path,
            resumed["epoch"],
            resumed["global_step"],
            cfg.paths.output_dir,
        )
    started, t0 = datetime.now().astimezone().isoformat(timespec="seconds"), time.perf_counter()
    try:
        try:
            fit_args = weights_only(trainer.fit)
            with lightning_first(lambda: trainer.received_sigterm):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **fit_args)
        except SIGTERMException:
            raise stopped(cfg, callbacks) from None
        if trainer.received_sigterm:  # SIGTERM after the last check: fit returned normally
            raise stopped(cfg, callbacks)
        if not cfg.export:
            return {k: float(v) for k, v in trainer.callback_metrics.items()}
        timing = seen.timing(started, time.perf_counter() - t0, trainer.world_size)
        return finish_run(
            trainer,
            module,
            datamodule,
            Path(cfg.paths.output_dir),
            predictions,
            timing=timing,
            report=cfg.report,
        )
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Leave the DDP process group, if any, while the interpreter is whole: Lightning does it
    at exit for NCCL only, and a gloo (CPU) group left to the interpreter's shutdown can abort
    the process ("terminate called without an active exception", pytorch/pytorch#190489), which
    Lightning's launcher answers by SIGKILLing every rank. Every collective is behind us here."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def stopped(cfg: DictConfig, callbacks: list) -> Stopped:
    from hpa.training.checkpointing import SaveOnSigterm, checkpoint_summary

    keeper = next((c for c in callbacks if isinstance(c, SaveOnSigterm)), None)
    last = keeper.saved or (keeper.path if keeper.path.is_file() else None) if keeper else None
    return Stopped(Path(cfg.paths.output_dir), last, checkpoint_summary(last) if last else None)


def tune(trainer, module, datamodule) -> None:
    """tune=true: the largest batch size that fits, then the learning rate for it."""
    from pytorch_lightning.tuner import Tuner

    tuner = Tuner(trainer)
    size = tuner.scale_batch_size(module, datamodule=datamodule, mode="binsearch")
    finder = tuner.lr_find(module, datamodule=datamodule, attr_name="lr")
    log.info("tune: batch size %s, learning rate %.2e", size, module.lr)
    if finder is not None and trainer.is_global_zero:
        fig = finder.plot(suggest=True)
        fig.savefig(Path(trainer.default_root_dir) / "lr_find.png")


def check_ckpt(ckpt_path: str | None) -> str | None:
    """A resume checkpoint must exist and be a readable checkpoint (loaded without pickle)."""
    if not ckpt_path:
        return None
    if not Path(ckpt_path).is_file():
        raise InputError(
            f"ckpt_path={ckpt_path} does not exist; point it at a .ckpt from checkpoints/"
        )
    import torch

    check_regular_file(ckpt_path, "ckpt_path")
    verify_checksum(ckpt_path, "ckpt_path")  # bytes damaged since it was written: one line
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise InputError(
            f"ckpt_path={ckpt_path} is not a readable checkpoint ({type(err).__name__}); "
            "use checkpoints/last.ckpt of the run, or start without ckpt_path"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path={ckpt_path} is not a Lightning checkpoint (no state_dict)")
    return ckpt_path


def check_ckpt_matches(ckpt_path: str, saved: dict[str, Any], module) -> None:
    """The model being resumed must be the one in the checkpoint (`saved`, its
    `checkpoint_summary`): same image size, classes and level, same weights, same shapes."""
    kept = saved["hyper_parameters"]
    for key in ("image_size", "class_names", "level"):
        old, new = kept.get(key), module.hparams.get(key)
        if old is not None and new is not None and _plain(old) != _plain(new):
            shown = f"{len(new)} classes" if key == "class_names" else f"{new!r}"
            was = f"{len(old)} classes" if key == "class_names" else f"{old!r}"
            raise InputError(
                f"ckpt_path={ckpt_path} was trained with {key} {was}, this run has {shown}; "
                "the model depends on it. Resume with the run's own settings (its "
                ".hydra/overrides.yaml), or start without ckpt_path"
            )
    ours = module.state_dict()
    theirs = saved["state_dict"]
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    old = saved["hyper_parameters"].get("model", {}) or {}
    new = module.hparams.get("model", {}) or {}
    changed = [
        f"model.{k}={new.get(k)!r} (checkpoint: {old.get(k)!r})"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k not in ("pretrained", "pretrained_path")
    ]
    what = (
        "; ".join(changed)
        if changed
        else (
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} reshaped weights"
        )
    )
    raise InputError(
        f"ckpt_path={ckpt_path} holds a different model: {what}. Resume with the run's own "
        "model settings (its .hydra/overrides.yaml), or start without ckpt_path"
    )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_resume_epochs(ckpt_path: str, saved: dict[str, Any], max_epochs: int | None) -> None:
    """A checkpoint saved at or past trainer.max_epochs has nothing left to train."""
    if max_epochs is not None and max_epochs >= 0 and saved["epoch"] >= max_epochs:
        raise InputError(
            f"ckpt_path={ckpt_path} was saved after epoch {saved['epoch'] + 1} of training, "
            f"past trainer.max_epochs={max_epochs}; raise trainer.max_epochs to train on"
        )


# Set once Hydra hands over a composed config: an exit before that is Hydra rejecting the
# command line or the config (it has printed why), which is bad input, not a failed run.
_composed = False


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@exit_on_input_error
def _hydra_main(cfg: DictConfig) -> float | None:
    global _composed
    _composed = True
    try:
        metrics = train(cfg)
    except Stopped as stop:
        print(stop.message(), file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, what a shell reports for a process the signal ended
    # What a sweeper (hydra/sweeper=optuna) optimises.
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


def _unparsable(argv: list[str]) -> str | None:
    """Name the first override Hydra's grammar rejects (its own message quotes only a fragment)."""
    from hpa.cli import override_problem

    return next(
        (p for p in (override_problem(a) for a in argv if not a.startswith("-")) if p), None
    )


# The launchers and sweeper of the `sweep` extra, and the module each needs.
_SWEEP_PLUGINS = {
    "hydra/launcher=ray": "ray",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hparams_search=": "hydra_plugins.hydra_optuna_sweeper",
}


def _missing_extra(argv: list[str]) -> str | None:
    """A launcher or sweeper asked for whose package is not installed: name the extra."""
    from importlib.util import find_spec

    for arg in argv:
        for choice, module in _SWEEP_PLUGINS.items():
            if not arg.startswith(choice) or arg.endswith("=null"):
                continue
            try:
                found = find_spec(module) is not None
            except ImportError:  # a missing parent package
                found = False
            if not found:
                return f"{arg} needs the sweep extra: pip install 'hpa[sweep]'"
    return None


# What a run writes into its folder. A folder holding any of the first four holds a run that a new
# run must not overwrite (its history, checkpoints or results would be replaced).
RUN_RESULTS = ("metrics.json", "model", "checkpoints", "csv/metrics.csv")
RUN_FILES = (
    *RUN_RESULTS[:3],
    "csv",
    "tensorboard",
    ".hydra",
    "oof.csv",
    "plots",
    "report.html",
    "report_data.npz",
    "lr_find.png",
    "train.log",
)


def holds_run(folder: Path) -> list[str]:
    """The results of an earlier run that `folder` holds."""
    found = []
    for name in RUN_RESULTS:
        path = folder / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def _sets(arg: str, key: str) -> bool:
    """Whether the command-line argument `arg` is an override of `key` (`key=v`, `+key=v`, ...)."""
    return "=" in arg and override_key(arg) == key


def run_folder(argv: list[str]) -> Path | None:
    """The folder this command writes its run (or, in a multirun, its jobs) into, as Hydra will
    name it; None for the default time-stamped folder (new and unique: it holds the PID)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    ckpt = override_value(argv, "ckpt_path")
    if not multirun and ckpt not in (None, "null", "") and "${" not in ckpt:
        return Path(run_dir_for(ckpt, ""))
    folder = override_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    return None if folder is None or "${" in folder else Path(folder)


def runs_in(folder: Path, multirun: bool) -> dict[Path, list[str]]:
    """Each run `folder` holds (in a multirun: its job folders) and what it holds of one."""
    candidates = [folder]
    if multirun and folder.is_dir():
        candidates += sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    return {p: found for p in candidates if (found := holds_run(p))}


def move_aside(folder: Path) -> Path:
    """overwrite=true: an earlier run's files move into `folder/previous-<time>/` (never
    deleted); only the names a run writes move, the user's own files stay where they are."""
    import time

    aside = folder / f"previous-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir()
    from hpa.outputs import MANIFEST

    for name in (*RUN_FILES, MANIFEST):  # the old run's record of its files goes with them
        if (folder / name).exists():
            move_into_place(folder / name, aside / name)
    return aside


def guard_run_folder(argv: list[str]) -> list[str]:
    """A new run (or sweep) into a folder that holds a run refuses, unless `overwrite=true`
    (the old files move aside into `previous-<time>/`). A resume keeps the run's first
    `.hydra/` config. The folder checked is the one written: paths.output_dir (hydra.run.dir),
    a sweep's job folders, a resumed checkpoint's run."""
    import time

    overwrite = (override_value(argv, "overwrite") or "false").lower() in ("true", "1", "yes")
    argv = [a for a in argv if not _sets(a, "overwrite")]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if override_value(argv, "ckpt_path") not in (None, "null", "") and not multirun:
        if override_value(argv, "hydra.output_subdir") is None:
            argv.append(f"hydra.output_subdir=.hydra/resumed-{time.strftime('%Y%m%d-%H%M%S')}")
        return argv
    folder = run_folder(argv)
    if folder is None:
        return argv  # a fresh time-stamped folder
    found = runs_in(folder, multirun)
    if not found:
        return argv
    if not overwrite:
        where, what = next(iter(found.items()))
        option = "hydra.sweep.dir" if multirun else "paths.output_dir"
        resume = (
            f"Resume it with ckpt_path={where / 'checkpoints' / 'last.ckpt'}, choose"
            if not multirun
            else "Choose"
        )
        raise InputError(
            f"{option}={folder} already holds a run ({where}: {', '.join(what)}); nothing was "
            f"changed. {resume} another folder, or add overwrite=true (the old run moves to "
            "previous-<time>/ there)"
        )
    for where in found:
        aside = move_aside(where)
        print(f"overwrite=true: the earlier run in {where} moved to {aside}", file=sys.stderr)
    return argv


def is_secondary_rank() -> bool:
    """A DDP process other than the first (Lightning, torchrun and SLURM name it in the
    environment): the first one holds the run folder's lock for all of them."""
    return any(
        os.environ.get(name, "0") not in ("", "0")
        for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK")
    )


# Hydra's own files and logs need a little room before training writes anything.
MIN_FREE_BYTES = 1 << 20


def check_output_location(argv: list[str]) -> None:
    """The run folder (or the folder runs go under) must be writable and not full: checked
    before Hydra writes into it, so either is one line naming the folder, not Hydra's error."""
    from hpa.cli import check_writable
    from hpa.fsio import DiskFullError, disk_full_message, free_bytes

    multirun = any(a in ("-m", "--multirun") for a in argv)
    folder = override_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    option = "paths.output_dir"
    if folder is None:
        folder = override_value(argv, "paths.log_dir") or os.environ.get("HPA_LOG_DIR", "outputs")
        option = "paths.log_dir"
    if "${" in folder:  # an interpolation: Hydra resolves it, and reports its own problems
        return
    check_writable(folder, option)
    free = free_bytes(folder)
    if free is not None and free < MIN_FREE_BYTES:
        raise DiskFullError(disk_full_message(folder, MIN_FREE_BYTES))


def check_space_for_checkpoints(module, out: Path, copies: int = 2) -> None:
    """Before the first epoch: room for `copies` checkpoints (best and last: weights plus the
    optimizer's two moments, ~3x the weights), so a run does not die at the end of epoch 1."""
    from hpa.fsio import DiskFullError, disk_full_message, free_bytes

    weights = sum(p.numel() * p.element_size() for p in module.state_dict().values())
    needed = copies * 3 * weights
    free = free_bytes(out)
    if free is not None and free < needed:
        raise DiskFullError(disk_full_message(out, needed))


@exit_on_input_error  # also: `--help | head` ends quietly
def main() -> None:
    # The contract's `paths.output_dir=DIR` sets Hydra's run folder (in a multirun, the sweep folder).
    argv = sys.argv[1:]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for i, arg in enumerate(argv):
        if _sets(arg, "paths.output_dir"):
            given, other = arg.split("=", 1)[1], override_value(argv, key)
            if other is not None and other != given:  # one folder guarded, another written
                raise InputError(
                    f"paths.output_dir={given} and {key}={other} name two folders; give one of them"
                )
            argv[i] = f"{key}={given}"
    # The contract's `hydra/sweeper=optuna` maximises (the plugin's default is to minimise).
    if "hydra/sweeper=optuna" in argv and override_value(argv, "hydra.sweeper.direction") is None:
        argv.insert(argv.index("hydra/sweeper=optuna") + 1, "hydra.sweeper.direction=maximize")
    with contextlib.ExitStack() as held:
        if not any(a in ("-h", "--help", "--cfg", "-c", "--info", "-i") for a in argv):
            check_output_location(argv)
            precompose(argv)  # a bad key or value: one line, before Hydra prints its block
            folder = run_folder(argv)
            if folder is not None and not is_secondary_rank():
                # One training per folder, taken before Hydra writes its config there.
                option = "hydra.sweep.dir" if multirun else "paths.output_dir"
                held.enter_context(lock(folder, option))
            argv = guard_run_folder(argv)
        # A full disk mid-run must not turn every log line into a "Logging error" traceback:
        # the write that matters (a checkpoint, metrics) reports it, in one line.
        logging.raiseExceptions = False
        sys.argv[1:] = argv
        try:
            _hydra_main()
        except SystemExit as done:
            if done.code == 1 and not _composed:
                hint = "`python -m hpa.train --help` lists the config groups and their options"
                what = (
                    _unparsable(argv)
                    or _missing_extra(argv)
                    or "bad override or config (see above)"
                )
                raise InputError(f"{what}; {hint}") from None
            raise


def precompose(argv: list[str]) -> None:
    """Compose train's config as Hydra will (the same overrides, hydra's own left out) and check
    it, so that a mistyped key or a bad value is one line (hpa.cli.compose). Sweeps (-m) and
    sweep plugins are left to Hydra, which reports those itself."""
    from hpa.cli import compose

    if any(a in ("-m", "--multirun") for a in argv) or _missing_extra(argv):
        return
    overrides = [  # Hydra's own settings (but the user's config folders) and overwrite left out
        a
        for a in argv
        if "=" in a
        and not a.startswith("-")
        and (
            override_key(a) == "hydra.searchpath"
            or not override_key(a).startswith(("hydra.", "hydra/"))
        )
        and not _sets(a, "overwrite")
    ]
    try:
        compose("train", overrides, check=False)
    except InputError as err:
        hint = "`python -m hpa.train --help` lists the config groups and their options"
        raise InputError(f"{err}; {hint}") from None


if __name__ == "__main__":
    main()
