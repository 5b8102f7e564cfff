"""Checkpoints that survive kills and full disks, and a CSV history that survives resumes.

- `AtomicCheckpointIO`: every checkpoint is serialised in memory and written through `hpa.fsio`
  (temp file in the same folder, then rename), so a full disk leaves the previous good file and
  a one-line `DiskFullError`. Lightning's own writer goes through fsspec, whose local temp file
  lives in /tmp and is *copied* into place: a full disk leaves a truncated `best.ckpt`.
- `SaveOnSigterm`: Lightning turns SIGTERM into a `SIGTERMException` at the next batch; this
  callback writes `last.ckpt` at that point so the run resumes from where it was stopped.
- `AppendingCSVLogger`: Lightning's CSVLogger deletes `metrics.csv` when its folder already
  holds one (a resumed run lost every epoch logged before the kill); this one appends.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hpa.fsio import atomic_path, checksum_path, write_bytes

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into memory, then an atomic write beside the target (local paths)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # With its checksum: a resume refuses a checkpoint damaged since (train.check_ckpt).
        write_bytes(path, buffer.getbuffer(), checksum=True)

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        if "://" not in str(path):
            checksum_path(path).unlink(missing_ok=True)  # written with it, by us


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved paths are this run's own when resumed.

    Lightning stores best/last paths absolute and reloads `best_model_path` even when the run's
    folder has moved (overwrite=true moves a run aside into previous-<time>/): the resumed run
    would then validate and export another run's best.ckpt. Each saved path is read as the same
    file name in this run's checkpoint folder.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and Path(old) != Path(self.dirpath):

            def here(p: Any) -> Any:
                return str(Path(self.dirpath) / Path(p).name) if p else p

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": here(state_dict.get("best_model_path")),
                "kth_best_model_path": here(state_dict.get("kth_best_model_path")),
                "last_model_path": here(state_dict.get("last_model_path")),
                "best_k_models": {
                    here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()
                },
            }
        super().load_state_dict(state_dict)


class SaveOnSigterm(pl.Callback):
    """On SIGTERM (Lightning stops at the next batch), write `dirpath/last.ckpt` to resume from."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # whole: to resume from
            self.saved = self.path


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv: its columns are read back and new rows appended."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AppendingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run appends to metrics.csv."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def weights_only(method) -> dict[str, bool]:
    """`weights_only=True` for Trainer.fit/validate where Lightning takes it (>= 2.6): our
    checkpoints hold tensors and plain values, so they load without unpickling code."""
    import inspect

    return {"weights_only": True} if "weights_only" in inspect.signature(method).parameters else {}


def checkpoint_summary(path: str | Path) -> dict[str, Any]:
    """Epoch, global step and whether it was written mid-epoch, read without unpickling code."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    loops = ckpt.get("loops", {}).get("fit_loop", {})
    progress = loops.get("epoch_loop.batch_progress", {}).get("current", {})
    return {
        "epoch": int(ckpt.get("epoch", 0)),
        "global_step": int(ckpt.get("global_step", 0)),
        "batches_into_epoch": int(progress.get("completed", 0)),
        "hyper_parameters": ckpt.get("hyper_parameters", {}),
        "state_dict": ckpt.get("state_dict", {}),
    }
