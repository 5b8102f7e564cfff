"""python -m hpa.runs [DIR ...] [--filter KEY=VALUE ...] [--sort COLUMN] [--markdown] [--plot FILE.png]

One table of every training run under the folders (default: the output root, `paths.log_dir`:
$HPA_LOG_DIR or outputs), best val mAP first:

  when      start of the run
  run       its folder, relative to the folder searched
  overrides its command-line overrides (.hydra/overrides.yaml; paths.* and hydra.* left out);
            those every listed run shares are printed once above the table
  mAP       best val/mAP (metrics.json; for an unfinished run the best epoch in csv/metrics.csv)
  epoch     the epoch of that best mAP (0-based, as in metrics.json)
  epochs    epochs run / trainer.max_epochs
  weakest   the 3 classes with the lowest AP at that epoch
  time      wall time per session (a resume adds one), summed: from Hydra writing the run's
            .hydra/config.yaml to train.log's last line
  img/s     training samples per second of trainer.fit (metrics.json's timing: samples seen /
            train_s, validation included); for a run without it, train samples x epochs / time
  status    done (metrics.json written), unfinished (killed, or still running: epochs from
            csv/metrics.csv) or no epoch (stopped before the first validation)

--filter KEY=VALUE (or KEY!=VALUE; VALUE may hold * and ? wildcards; several filters must all
hold) selects runs by any config key, e.g. model.backbone=resnet18, data=cells, trainer.max_epochs=12
(a run that did not override KEY is matched by the value in its saved config), or status=done.
--sort COLUMN: map (default), when, time, img/s, epoch, epochs, run, status or any config key;
--reverse flips it. --plot FILE.png draws val mAP over epochs of the listed runs;
--markdown prints the table as Markdown, for notes.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hpa.cli import override_key
from hpa.errors import InputError, exit_on_input_error

# Folders inside a run that never hold another run.
_ARTIFACTS = {"checkpoints", "model", "csv", "plots", "tensorboard", "wandb", "mlruns"}
# Override keys that say where things went, not what was trained.
_NOISE = ("paths.", "hydra.", "hydra/")
# train.log lines (Hydra's job logging): "[2026-12-01 18:39:39,188][name][INFO] - message".
_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{1,6}))?\]")
# What train() logs first (hpa.threads, then Lightning's seed): a new session, start or resume.
_SESSION_START = ("] - threads: ", "] - Seed set to ")
STARTUP_S = 600  # at most this long from Hydra writing the config to train()'s first line
_TRAIN_IMAGES = re.compile(r"data: fold \d+/\d+, (\d+) train / \d+ val samples")
_TRAIN_CELLS = re.compile(r"data: (\d+) train / \d+ val cell crops")
SHORT_NAMES = {
    "Nucleoli fibrillar center": "Nucleoli fib. center",
    "Endoplasmic reticulum": "ER",
    "Intermediate filaments": "Interm. filaments",
    "Vesicles and punctate cytosolic patterns": "Vesicles",
}
COLUMNS = (
    "when",
    "run",
    "overrides",
    "mAP",
    "epoch",
    "epochs",
    "weakest",
    "time",
    "img/s",
    "status",
)
# --sort names -> (attribute, highest first)
SORTS = {
    "map": ("map", True),
    "when": ("start", True),
    "time": ("wall_s", False),
    "img/s": ("img_s", True),
    "epoch": ("best_epoch", False),
    "epochs": ("epochs", True),
    "run": ("label", False),
    "status": ("status", False),
}
SORT_ALIASES = {
    "val/map": "map",
    "start": "when",
    "wall": "time",
    "img_s": "img/s",
    "speed": "img/s",
}


@dataclass
class Run:
    path: Path
    label: str
    overrides: dict[str, str] = field(default_factory=dict)  # key (no +/~ prefix) -> value
    written: list[str] = field(default_factory=list)  # the overrides as written, noise dropped
    choices: dict[str, Any] = field(default_factory=dict)  # config groups chosen (hydra.yaml)
    config: Any = None  # .hydra/config.yaml (unresolved)
    status: str = "no epoch"
    start: datetime | None = None
    wall_s: float | None = None
    map: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    max_epochs: int | None = None
    weakest: list[tuple[str, float]] = field(default_factory=list)
    train_samples: int | None = None
    img_s: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/mAP)

    def setting(self, key: str) -> str | None:
        """The run's value of a config key, as text: its override, else the group it chose,
        else its saved config; None when the run has no such key."""
        if key == "status":
            return self.status
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return _text(self.choices[key])
        if self.config is not None:
            from omegaconf import OmegaConf

            sentinel = object()
            try:
                value = OmegaConf.select(
                    self.config, key, default=sentinel, throw_on_resolution_failure=False
                )
            except Exception:  # a malformed key: the run has no such setting
                return None
            if value is not sentinel:
                if OmegaConf.is_config(value):
                    value = OmegaConf.to_container(value, resolve=False)
                return _text(value)
        return None


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- finding and reading runs ---------------------------------------------------------------


def is_run(folder: Path) -> bool:
    if (folder / ".hydra" / "overrides.yaml").is_file() or (
        folder / "csv" / "metrics.csv"
    ).is_file():
        return True
    return _read_json(folder / "metrics.json").get("val/mAP") is not None


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (itself included), without looking inside runs' artifacts
    or hidden folders (.hydra/resumed-*). Earlier runs moved aside (previous-<time>/) count."""
    found = []
    for folder, subdirs, _ in os.walk(root):
        path = Path(folder)
        if is_run(path):
            found.append(path)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _ARTIFACTS)
    return found


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception:  # missing or malformed: the run is listed without it
        return None


def read_overrides(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    loaded = _load_yaml(path)
    if loaded is None or not OmegaConf.is_list(loaded):
        return []
    return [str(x) for x in OmegaConf.to_container(loaded)]


def read_history(path: Path) -> dict[int, dict[str, str]]:
    """epoch -> the csv row of its validation (the last one logged for that epoch)."""
    rows: dict[int, dict[str, str]] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("val/mAP") or not row.get("epoch"):
                    continue
                try:
                    rows[int(float(row["epoch"]))] = row
                except ValueError:
                    continue
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return rows


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def read_log(path: Path) -> tuple[list[list[datetime]], int | None]:
    """([start, end] of each session, training samples per epoch) from train.log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return [], None
    sessions: list[list[datetime]] = []
    samples = cells = None
    after_start = False  # the previous line was a session start too (one session, not two)
    for line in lines:
        match = _LOG_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            stamp = stamp.replace(microsecond=int((match.group(2) or "0").ljust(6, "0")))
            starts = any(mark in line for mark in _SESSION_START)
            if not sessions or (starts and not after_start):
                sessions.append([stamp, stamp])
            else:
                sessions[-1][1] = stamp
            after_start = starts
        if samples is None and (found := _TRAIN_IMAGES.search(line)):
            samples = int(found.group(1))
        if cells is None and (found := _TRAIN_CELLS.search(line)):
            cells = int(found.group(1))
    return sessions, cells or samples


def _with_startup(sessions: list[list[datetime]], launches: list[float]) -> None:
    """Move each session's start back to when Hydra wrote its config (.hydra/config.yaml, or
    resumed-*/config.yaml), before the imports that precede train()'s first log line; only a
    config written up to STARTUP_S before the session counts (a copied folder has new times)."""
    times = [datetime.fromtimestamp(t) for t in launches]
    for session in sessions:
        earlier = [t for t in times if 0 <= (session[0] - t).total_seconds() <= STARTUP_S]
        if earlier:
            session[0] = max(earlier)  # the launch just before it


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _latest(first: Path, resumes: list[Path], name: str) -> Path:
    """The newest session's copy of one of Hydra's files."""
    return next((d / name for d in reversed(resumes) if (d / name).is_file()), first / name)


def read_run(path: Path, label: str) -> Run:
    run = Run(path=path, label=label)
    first = hydra_dir = path / ".hydra"
    # A resumed run's latest settings (e.g. more trainer.max_epochs) are in .hydra/resumed-<time>/.
    resumes = sorted(d for d in hydra_dir.glob("resumed-*") if (d / "overrides.yaml").is_file())
    if resumes:
        hydra_dir = resumes[-1]
    for text in read_overrides(hydra_dir / "overrides.yaml"):
        key, value = override_key(text), text.partition("=")[2]
        if key.startswith(_NOISE) or (resumes and key == "ckpt_path"):  # the resume itself
            continue
        run.overrides[key] = value
        run.written.append(text)
    hydra_cfg = _load_yaml(_latest(first, resumes, "hydra.yaml"))
    if hydra_cfg is not None:
        from omegaconf import OmegaConf

        choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices", default=None)
        if OmegaConf.is_dict(choices):
            run.choices = {
                k: v
                for k, v in OmegaConf.to_container(choices).items()
                if not k.startswith("hydra")
            }
    run.config = _load_yaml(_latest(first, resumes, "config.yaml"))
    if run.config is not None:
        max_epochs = run.setting("trainer.max_epochs")
        run.max_epochs = (
            int(max_epochs) if max_epochs and max_epochs.lstrip("-").isdigit() else None
        )

    metrics = _read_json(path / "metrics.json")
    rows = read_history(path / "csv" / "metrics.csv")
    finished = metrics.get("val/mAP") is not None
    if finished and isinstance(metrics.get("epochs_run"), int):
        # The final re-validation of best.ckpt is logged as one epoch past the last.
        rows = {e: r for e, r in rows.items() if e < metrics["epochs_run"]}
    run.history = [
        (e, m) for e, r in sorted(rows.items()) if (m := _float(r["val/mAP"])) is not None
    ]
    if finished:
        run.status = "done"
        run.map = _float(metrics["val/mAP"])
        run.best_epoch = metrics.get("epoch") if isinstance(metrics.get("epoch"), int) else None
        run.epochs = (
            metrics.get("epochs_run") if isinstance(metrics.get("epochs_run"), int) else None
        )
        per_class = metrics.get("val/AP_per_class") or {}
        aps = {k: v for k, v in ((k, _float(v)) for k, v in per_class.items()) if v is not None}
    elif run.history:
        run.status = "unfinished"
        run.best_epoch, run.map = max(run.history, key=lambda em: (em[1], -em[0]))
        run.epochs = run.history[-1][0] + 1
        row = rows[run.best_epoch]
        prefix = "val/AP/"
        aps = {
            k[len(prefix) :]: v
            for k in row
            if k and k.startswith(prefix) and (v := _float(row[k])) is not None
        }
    else:
        aps = {}
    run.weakest = sorted(aps.items(), key=lambda kv: kv[1])[:3]

    sessions, run.train_samples = read_log(path / "train.log")
    configs = [first / "config.yaml", *(d / "config.yaml" for d in resumes)]
    _with_startup(sessions, [t for t in map(_mtime, configs) if t is not None])
    if sessions:
        run.start = sessions[0][0]
        run.wall_s = sum(max(0.0, (end - begin).total_seconds()) for begin, end in sessions)
    else:  # no timestamped log: the files' times
        begin = _mtime(first / "config.yaml") or _mtime(path)
        ends = [_mtime(path / p) for p in ("metrics.json", "csv/metrics.csv", "train.log")]
        ends = [t for t in ends if t is not None]
        if begin is not None:
            run.start = datetime.fromtimestamp(begin)
            if ends:
                run.wall_s = max(0.0, max(ends) - begin)
    # metrics.json's timing (train.py, around trainer.fit of the last session): the log's
    # sessions say when and how long (they include start-up and every resume); timing fills in
    # without a log, and gives img/s as measured (samples seen / train_s).
    timing = metrics.get("timing") if isinstance(metrics.get("timing"), dict) else {}
    if isinstance(timing.get("started"), str) and not sessions:
        try:
            started = datetime.fromisoformat(timing["started"])
            run.start = started.astimezone().replace(tzinfo=None) if started.tzinfo else started
        except ValueError:
            pass
    if not sessions:
        run.wall_s = _float(timing.get("train_s")) or run.wall_s
    run.img_s = _float(timing.get("train_samples_per_s"))
    if run.img_s is None and run.train_samples and run.epochs and run.wall_s:
        run.img_s = run.train_samples * run.epochs / run.wall_s
    return run


def collect(folders: list[Path]) -> list[Run]:
    runs = []
    for folder in folders:
        if not folder.exists():
            raise InputError(f"{folder} does not exist; pass a folder that holds training runs")
        if not folder.is_dir():
            raise InputError(f"{folder} is a file; pass a folder that holds training runs")
        for path in find_runs(folder):
            label = path.relative_to(folder).as_posix()
            if len(folders) > 1 or label == ".":
                label = (folder / label).as_posix() if label != "." else folder.as_posix()
            runs.append(read_run(path, label))
    return runs


# --- selecting and ordering -----------------------------------------------------------------


def parse_filter(text: str) -> tuple[str, str, bool]:
    """`KEY=VALUE` / `KEY!=VALUE` -> (key, pattern, wanted)."""
    key, sep, value = text.partition("!=")
    if not sep:
        key, sep, value = text.partition("=")
    key = override_key(key.strip())
    if not sep or not key:
        raise InputError(
            f"--filter {text!r}: write KEY=VALUE or KEY!=VALUE, e.g. model.backbone=resnet18"
        )
    return key, value.strip(), sep == "="


def apply_filters(runs: list[Run], filters: list[str]) -> list[Run]:
    for text in filters:
        key, pattern, wanted = parse_filter(text)
        values = [run.setting(key) for run in runs]
        if runs and all(v is None for v in values):
            known = sorted({k for run in runs for k in run.overrides} | {"status"})
            raise InputError(
                f"--filter {text}: no run has a setting {key!r}; "
                f"use a config key, e.g. {', '.join(known[:6])}"
            )
        runs = [
            run
            for run, value in zip(runs, values, strict=True)
            if (value is not None and fnmatch.fnmatchcase(value, pattern)) == wanted
        ]
    return runs


def _sort_value(value: Any) -> tuple:
    """Numbers before text, numbers by value."""
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    if isinstance(value, datetime):
        return (0, value.timestamp(), "")
    number = _float(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def sort_runs(runs: list[Run], column: str, reverse: bool = False) -> list[Run]:
    name = SORT_ALIASES.get(column.lower(), column.lower())
    attribute, descending = SORTS.get(name, (None, False))
    if attribute is None and runs and all(run.setting(column) is None for run in runs):
        raise InputError(
            f"--sort {column}: not a column ({', '.join(SORTS)}) nor a setting of any run"
        )

    def value(run: Run) -> Any:
        return getattr(run, attribute) if attribute else run.setting(column)

    present = [r for r in runs if value(r) is not None]
    missing = [r for r in runs if value(r) is None]  # always last
    present.sort(key=lambda r: r.label)  # ties in a stable order
    present.sort(key=lambda r: _sort_value(value(r)), reverse=descending != reverse)
    return present + missing


def split_overrides(runs: list[Run]) -> tuple[list[str], dict[int, list[str]]]:
    """Overrides every run shares (shown once) and, per run, the rest."""
    if len(runs) < 2:
        return [], {id(r): r.written for r in runs}
    common = [o for o in runs[0].written if all(o in r.written for r in runs[1:])]
    return common, {id(r): [o for o in r.written if o not in common] for r in runs}


# --- output ---------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table_rows(
    runs: list[Run], varying: dict[int, list[str]], quote=lambda o: o
) -> list[list[str]]:
    rows = []
    for run in runs:
        epochs = "" if run.epochs is None else str(run.epochs)
        if epochs and run.max_epochs and run.max_epochs > 0:
            epochs += f"/{run.max_epochs}"
        rows.append(
            [
                run.start.strftime("%Y-%m-%d %H:%M") if run.start else "",
                run.label,
                " ".join(quote(o) for o in varying.get(id(run), [])),
                "" if run.map is None else f"{run.map:.4f}",
                "" if run.best_epoch is None else str(run.best_epoch),
                epochs,
                ", ".join(f"{SHORT_NAMES.get(k, k)} {v:.2f}" for k, v in run.weakest),
                format_seconds(run.wall_s),
                "" if run.img_s is None else f"{run.img_s:.1f}",
                run.status,
            ]
        )
    return rows


def render_text(runs: list[Run], where: str) -> str:
    common, varying = split_overrides(runs)
    rows = [list(COLUMNS), *table_rows(runs, varying)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    numeric = {"mAP", "epoch", "epochs", "time", "img/s"}
    lines = [f"{len(runs)} run{'s' if len(runs) != 1 else ''} under {where}"]
    if common:
        lines.append("all with: " + " ".join(common))
    for row in rows:
        cells = [
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for cell, width, name in zip(row, widths, COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_md(text)}`"


def render_markdown(runs: list[Run], where: str) -> str:
    common, varying = split_overrides(runs)
    head = f"{len(runs)} run{'s' if len(runs) != 1 else ''} under {_code(where)}"
    if common:
        head += ", all with " + " ".join(_code(o) for o in common)
    right = {"mAP", "epoch", "epochs", "time", "img/s"}
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + "|".join("---:" if c in right else "---" for c in COLUMNS) + "|")
    for row in table_rows(runs, varying, quote=_code):
        cells = [c if name == "overrides" else _md(c) for c, name in zip(row, COLUMNS, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_history(runs: list[Run], out: Path) -> Path:
    """val/mAP over epochs, one line per run (its best epoch starred), into one image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpa.viz import figures

    drawn = [r for r in runs if r.history]
    if not drawn:
        raise InputError(
            f"--plot {out}: none of the listed runs has a val/mAP history (csv/metrics.csv)"
        )
    fig, ax = plt.subplots(figsize=(9, 5.5))
    supported = fig.canvas.get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in supported:
        plt.close(fig)
        raise InputError(
            f"--plot {out}: use a file name ending in .png (or {', '.join(sorted(supported))})"
        )
    _, varying = split_overrides(drawn)
    for run in drawn:
        label = textwrap.fill(" ".join([run.label, *varying.get(id(run), [])]), 110)
        epochs, maps = zip(*run.history, strict=True)
        (line,) = ax.plot(epochs, maps, marker="o", markersize=3, label=label)
        if run.best_epoch is not None and run.map is not None:
            ax.plot([run.best_epoch], [run.map], marker="*", markersize=12, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("val/mAP")
    ax.set_title(f"val/mAP per epoch, {len(drawn)} run{'s' if len(drawn) != 1 else ''} (* best)")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(drawn) <= 20:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12))
    out.parent.mkdir(parents=True, exist_ok=True)
    return figures.save(fig, out)


def default_root() -> Path:
    """The output root training writes to: paths.log_dir ($HPA_LOG_DIR or outputs)."""
    from hpa.cli import compose

    return Path(compose("train", []).paths.log_dir)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.runs",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        metavar="DIR",
        help="folders to search (default: paths.log_dir)",
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs whose setting matches (repeatable)",
    )
    parser.add_argument(
        "--sort",
        default="map",
        metavar="COLUMN",
        help="map (default), when, time, img/s, epoch, epochs, run, status or a config key",
    )
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw val/mAP per epoch of the listed runs"
    )
    return parser.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folders = args.folders or [default_root()]
    where = ", ".join(str(f) for f in folders)
    if not args.folders and not folders[0].exists():
        raise InputError(
            f"no training runs yet: the output root {folders[0]} (paths.log_dir: $HPA_LOG_DIR or "
            "outputs) does not exist; train with `python -m hpa.train`, or pass the folders to search"
        )
    runs = collect(folders)
    if not runs:
        raise InputError(
            f"no training runs under {where} (a run folder holds .hydra/overrides.yaml, "
            "metrics.json or csv/metrics.csv); `python -m hpa.train` writes one"
        )
    selected = apply_filters(runs, args.filter)
    if not selected:
        raise InputError(
            f"none of the {len(runs)} runs under {where} matches {' '.join('--filter ' + f for f in args.filter)}"
        )
    selected = sort_runs(selected, args.sort, args.reverse)
    print(render_markdown(selected, where) if args.markdown else render_text(selected, where))
    if args.plot:
        plot_history(selected, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
