"""python -m hpa.train [overrides]: fit, pick the best checkpoint, write metrics.json and model/."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hpa.errors import exit_on_input_error

log = logging.getLogger(__name__)


def run_dir_for(ckpt_path: str | None, default: str) -> str:
    """A resumed run continues in the folder that holds its checkpoints/."""
    if ckpt_path:
        path = Path(ckpt_path)
        if path.parent.name == "checkpoints":
            return str(path.parent.parent)
    return default


OmegaConf.register_new_resolver("hpa_run_dir", run_dir_for, replace=True)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; return the metrics of the best checkpoint."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from hpa.data.datamodule import HPADataModule
    from hpa.demo import ensure_synthetic_data
    from hpa.labels import CLASS_NAMES
    from hpa.training.finish import finish_run
    from hpa.training.module import HPAModule

    pl.seed_everything(cfg.seed, workers=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    ensure_synthetic_data(data_cfg["root"], data_cfg["train_csv"], data_cfg.pop("synthetic"))
    datamodule = HPADataModule(**data_cfg)
    module = HPAModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        class_names=CLASS_NAMES,
        image_size=cfg.data.image_size,
        level=cfg.data.get("level", "image"),
        mix=OmegaConf.to_container(cfg.mix, resolve=True),
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
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
    )
    if cfg.tune:
        tune(trainer, module, datamodule)
    ckpt_path = check_ckpt(cfg.ckpt_path)
    if ckpt_path:
        log.info("resuming from %s (run folder %s)", ckpt_path, cfg.paths.output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if not cfg.export:
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
    return finish_run(trainer, module, datamodule, Path(cfg.paths.output_dir), cfg)


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
    import torch

    from hpa.errors import InputError

    if not ckpt_path:
        return None
    if not Path(ckpt_path).is_file():
        raise InputError(
            f"ckpt_path={ckpt_path} does not exist; point it at a .ckpt from checkpoints/"
        )
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


# Set once Hydra hands over a composed config: an exit before that is Hydra rejecting the
# command line or the config (it has printed why), which is bad input, not a failed run.
_composed = False


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@exit_on_input_error
def _hydra_main(cfg: DictConfig) -> None:
    global _composed
    _composed = True
    train(cfg)


def _unparsable(argv: list[str]) -> str | None:
    """Name the first override Hydra's grammar rejects (its own message quotes only a fragment)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except HydraException:
            return f"cannot parse the override `{arg}` (Hydra syntax: key=value, group=option)"
    return None


def main() -> None:
    # The contract's `paths.output_dir=DIR` sets Hydra's run folder (in a multirun, the sweep folder).
    argv = sys.argv[1:]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for i, arg in enumerate(argv):
        if arg.startswith("paths.output_dir="):
            key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            if not any(a.startswith(key + "=") for a in argv):
                argv[i] = f"{key}={arg.split('=', 1)[1]}"
    sys.argv[1:] = argv
    try:
        _hydra_main()
    except SystemExit as done:
        if done.code == 1 and not _composed:
            hint = "`python -m hpa.train --help` lists the config groups and their options"
            what = _unparsable(argv) or "bad override or config (see above)"
            print(f"error: {what}; {hint}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
