"""Self-contained HTML reports: one per training run (report.html in the run folder) and one per
benchmark (report.html beside benchmark.json).

Every picture is embedded as a data: URI and the page has no script, so it opens from a file
in any browser and in Kaggle's output viewer, with no network and no server. Its size does not
grow with the run: a fixed number of small thumbnails per class, never the originals.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpa.errors import InputError
from hpa.fsio import atomic_path, write_text
from hpa.labels import CLASS_NAMES
from hpa.viz import draw, figures

REPORT = "report.html"
REPORT_DATA = "report_data.npz"  # what a run's report is drawn from, to redraw it on demand
THUMB = 96  # px, the side of a validation thumbnail
PER_CLASS = 4  # thumbnails per class and kind (confidently wrong, unsure right)
THRESHOLD = 0.5  # a probability at or above it calls the class

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fff;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{padding:2px 8px;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}img.plot{max-width:100%}
.row{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 10px}
.pair{display:flex;flex-wrap:wrap;gap:36px}h3{font-size:1em;margin:.8em 0 .2em}
figure{margin:0;width:104px;font-size:.7em}figure img{width:96px;height:96px;display:block}
.wrong figcaption{color:#b00}.unsure figcaption{color:#555}p.note{color:#555;font-size:.9em}
"""


def _img(data: bytes, alt: str, kind: str = "png", css: str = "plot") -> str:
    src = f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<img class="{css}" alt="{html.escape(alt)}" src="{src}">'


def _num(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt) if isinstance(value, (int, float)) else html.escape(str(value))


def _cell(key: str, value: Any, fmt: str = ".4f", attrs: str = "") -> str:
    """A table cell carrying the exact value (data-value) beside the rounded one it shows."""
    exact = html.escape(json.dumps(value))
    key = html.escape(key)
    return f'<td class="n"{attrs} data-key="{key}" data-value="{exact}">{_num(value, fmt)}</td>'


def page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ---- a training run --------------------------------------------------------------------------


@dataclass
class RunData:
    """A run's final validation: probabilities and targets (N x K, dataset order), what each row
    is (ID, and cell for cell-level runs), and thumbnails of the rows the report shows."""

    probs: np.ndarray
    targets: np.ndarray
    keys: dict[str, list]
    thumbs: dict[int, np.ndarray]


def examples(
    probs: np.ndarray, targets: np.ndarray, k: int = PER_CLASS
) -> dict[int, dict[str, list[int]]]:
    """Per class: the rows the model gets most confidently wrong (a false call or a miss, the
    furthest from the truth first) and least confidently right (the closest to the threshold)."""
    out = {}
    for c in range(probs.shape[1]):
        p, y = probs[:, c].astype(np.float64), targets[:, c] > 0.5
        off = np.where(y, 1.0 - p, p)  # distance from the truth
        wrong = np.where(y, p < THRESHOLD, p >= THRESHOLD)
        order = np.argsort(-off, kind="stable")
        out[c] = {
            "wrong": [int(i) for i in order[wrong[order]][:k]],
            "unsure": [int(i) for i in order[~wrong[order]][:k]],
        }
    return out


def collect(
    probs: np.ndarray,
    targets: np.ndarray,
    keys: Mapping[str, Sequence],
    picture: Callable[[int], np.ndarray] | None,
) -> RunData:
    """RunData with thumbnails of the example rows only: `picture(row)` -> H x W x 3 RGB
    (None: no thumbnails). Probabilities are kept as float32, exactly what report_data.npz
    stores, so a report redrawn from the run folder picks the same rows and numbers."""
    probs = np.asarray(probs, dtype=np.float32)
    if picture is None:
        return RunData(probs, np.asarray(targets), {k: list(v) for k, v in keys.items()}, {})
    rows = sorted(
        {i for kinds in examples(probs, targets).values() for v in kinds.values() for i in v}
    )
    thumbs = {i: draw.thumbnail(picture(i), THUMB) for i in rows}
    return RunData(probs, np.asarray(targets), {k: list(v) for k, v in keys.items()}, thumbs)


def save_run_data(folder: Path, data: RunData) -> Path:
    rows = sorted(data.thumbs)
    arrays = {
        "probs": data.probs.astype(np.float32),
        "targets": data.targets.astype(np.uint8),
        "thumb_rows": np.array(rows, dtype=np.int64),
        "thumbs": np.stack([data.thumbs[i] for i in rows])
        if rows
        else np.zeros((0, THUMB, THUMB, 3), np.uint8),
    }
    for name, values in data.keys.items():
        arrays[f"key_{name}"] = np.asarray(values)
    path = folder / REPORT_DATA
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_run_data(folder: Path) -> RunData:
    path = folder / REPORT_DATA
    if not path.is_file():
        raise InputError(
            f"run={folder} has no {REPORT_DATA} (runs trained before reports were added, or "
            "with export=false, lack it); train the run again to get its report"
        )
    try:
        with np.load(path, allow_pickle=False) as saved:
            keys = {n[4:]: saved[n].tolist() for n in saved.files if n.startswith("key_")}
            thumbs = dict(zip(saved["thumb_rows"].tolist(), saved["thumbs"], strict=True))
            return RunData(saved["probs"].astype(np.float32), saved["targets"], keys, thumbs)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot read {path} ({err}); train the run again to rewrite it") from None


def learning_history(csv_path: Path) -> dict[str, list[tuple[float, float]]]:
    """Epoch-level curves of a run's CSV log (csv/metrics.csv): losses and validation scores,
    not the per-class APs or per-step values."""
    import pandas as pd

    if not csv_path.is_file():
        return {}
    frame = pd.read_csv(csv_path)
    if "epoch" not in frame:
        return {}
    history = {}
    for name in frame.columns:
        per_class = name.startswith("val/AP/") or name.endswith("_step")
        if name in ("epoch", "step") or per_class or not name.startswith(("train/", "val/")):
            continue
        values = frame[["epoch", name]].dropna().groupby("epoch")[name].last()
        if len(values):
            history[name.removesuffix("_epoch")] = [(float(e), float(v)) for e, v in values.items()]
    return history


def _caption(data: RunData, row: int, c: int) -> str:
    # the ID's start (enough to find it), then the other keys whole (a cell-level run's cell)
    key = " ".join(
        str(data.keys[n][row])[:18] if n == "ID" else f"{n} {data.keys[n][row]}" for n in data.keys
    )
    p = float(data.probs[row, c])
    truth = data.targets[row, c] > 0.5
    what = (
        ("missed" if p < THRESHOLD else "found")
        if truth
        else ("false" if p >= THRESHOLD else "absent")
    )
    true = ",".join(str(i) for i in np.flatnonzero(data.targets[row] > 0.5)) or "-"
    return f"{html.escape(key)}<br>p={p:.2f} {what}<br>true {true}"


def run_report(folder: Path, metrics: Mapping[str, Any], data: RunData) -> str:
    """The run's page: its metrics, per-class AP, PR curves, confusion, calibration, learning
    curves and the validation examples it gets most wrong."""
    names = list(CLASS_NAMES[: data.probs.shape[1]])
    level = "cells" if "cell" in data.keys else "images"
    body = [f"<h1>Training run {html.escape(folder.name)}</h1>"]
    body.append(
        f'<p class="note">{html.escape(str(folder))}; {len(data.probs)} validation {level}</p>'
    )
    rows = []
    for key in ("val/mAP", "val/F1", "val/loss", "epoch", "epochs_run", "fold", "image_size"):
        if key in metrics:
            fmt = ".4f" if isinstance(metrics[key], float) else "d"
            rows.append(f"<tr><th>{key}</th>{_cell(key, metrics[key], fmt)}</tr>")
    rows.append(
        f"<tr><th>backbone</th><td>{html.escape(str(metrics.get('backbone', '-')))}</td></tr>"
    )
    timing = metrics.get("timing") or {}
    if timing.get("train_s") is not None:
        rows.append(
            f"<tr><th>train seconds</th>{_cell('timing/train_s', timing['train_s'], '.1f')}</tr>"
        )
    body += ["<h2>Metrics</h2>", "<table>", *rows, "</table>"]

    ap = metrics.get("val/AP_per_class") or {}
    table = ["<table><tr><th>class</th><th>AP</th><th>positives</th></tr>"]
    for i, name in enumerate(names):
        positives = int((data.targets[:, i] > 0.5).sum())
        table.append(
            f"<tr><td>{i} {html.escape(name)}</td>{_cell(f'AP/{name}', ap.get(name), '.4f')}"
            f'<td class="n">{positives}</td></tr>'
        )
    table.append("</table>")
    body += [
        "<h2>Per-class AP</h2>",
        _img(figures.png(figures.ap_bars(ap)), "per-class AP"),
        *table,
    ]
    body += ["<h2>Precision-recall curves</h2>"]
    body.append(_img(figures.png(figures.pr_curves(data.probs, data.targets, names)), "PR curves"))
    matrix = figures.confusion(data.probs, data.targets, THRESHOLD)
    body += [
        "<h2>Confusion between classes</h2>",
        f'<p class="note">Row: true class; column: share of its {level} called each class '
        f"(probability &ge; {THRESHOLD}). Off the diagonal: what a class is taken for.</p>",
        _img(figures.png(figures.confusion_figure(matrix, names, THRESHOLD)), "confusion"),
    ]
    curve = figures.calibration(data.probs, data.targets)
    body += [
        "<h2>Calibration</h2>",
        f"<table><tr><th>expected calibration error</th>{_cell('ece', round(curve['ece'], 6))}</tr></table>",
        _img(figures.png(figures.calibration_figure(curve)), "calibration"),
    ]
    history = learning_history(folder / "csv" / "metrics.csv")
    body.append("<h2>Learning curves</h2>")
    if history:
        body.append(_img(figures.png(figures.learning_figure(history)), "learning curves"))
    else:
        body.append(
            '<p class="note">no csv/metrics.csv in the run folder (logger=csv writes it)</p>'
        )
    body += [
        f"<h2>Validation {level} it gets wrong</h2>",
        f'<p class="note">Per class, up to {PER_CLASS} {level} the model gets most confidently '
        f"wrong (red: a false call or a miss) and {PER_CLASS} it gets right with the least "
        "confidence (grey: the closest to the threshold).</p>",
    ]
    for c, kinds in examples(data.probs, data.targets).items():
        if not kinds["wrong"] and not kinds["unsure"]:
            continue
        body.append(f"<h3>{c} {html.escape(names[c])}</h3>")
        groups = []
        for kind in ("wrong", "unsure"):
            figs = [
                f'<figure class="{kind}">'
                + _img(draw.encode_jpeg(data.thumbs[r]), f"{kind} {c}", "jpeg", "thumb")
                + f"<figcaption>{_caption(data, r, c)}</figcaption></figure>"
                for r in kinds[kind]
                if r in data.thumbs
            ]
            if figs:
                groups.append(f'<div class="row {kind}">{"".join(figs)}</div>')
        body.append(f'<div class="pair">{"".join(groups)}</div>')
    return page(f"hpa run {folder.name}", body)


def write_run_report(folder: Path, data: RunData | None = None) -> Path:
    """report.html of a finished run folder; `data` None: read from its report_data.npz."""
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(f"run={folder} has no metrics.json; point run= at a finished training run")
    metrics = json.loads(metrics_path.read_text())
    data = load_run_data(folder) if data is None else data
    return write_text(folder / REPORT, run_report(folder, metrics, data))


# ---- a benchmark -----------------------------------------------------------------------------


def seed_results(folder: Path, name: str, seeds: Sequence[int | None]) -> list[dict[str, Any]]:
    """Each seed's own result.json (train and predict seconds, cell mAP) where it is on disk."""
    found = []
    for i, seed in enumerate(seeds):
        unit = name if i == 0 or seed is None else f"{name}-seed{seed}"
        path = folder / unit / "result.json"
        result = json.loads(path.read_text()).get("result") if path.is_file() else None
        found.append({"seed": seed, **(result or {})})
    return found


def benchmark_report(folder: Path) -> str:
    path = folder / "benchmark.json"
    if not path.is_file():
        raise InputError(
            f"benchmark={folder} has no benchmark.json; run `python -m hpa.benchmark out={folder}` first"
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"cannot parse {path}: {err}") from None
    if not isinstance(results, dict) or not results:
        raise InputError(f"{path} holds no variant; run the benchmark first")
    body = [
        f"<h1>Benchmark {html.escape(folder.name)}</h1>",
        f'<p class="note">{html.escape(str(path))}</p>',
    ]
    base = "baseline" if "baseline" in results else None
    body.append(_img(figures.png(figures.benchmark_figure(results, base)), "benchmark"))
    head = (
        "<tr><th>variant</th><th>stage</th><th>cell mAP</th><th>sd</th><th>vs baseline</th>"
        "<th>seed</th><th>seed mAP</th><th>train s</th><th>predict s</th><th>MB</th></tr>"
    )
    rows = [head]
    for name, r in results.items():
        seeds = seed_results(folder, name, r.get("seeds") or [None])
        per_seed = r.get("cell_mAP_per_seed") or []
        span = max(1, len(seeds))
        for i, s in enumerate(seeds):
            first = ""
            if i == 0:
                span_attr = f' rowspan="{span}"'
                vs = r.get("vs_baseline") or {}
                versus = f"{vs['mean']:+.4f} {vs['verdict']}" if vs else "-"
                first = (
                    f"<td{span_attr}>{html.escape(name)}</td>"
                    f"<td{span_attr}>{html.escape(str(r.get('stage', '-')))}</td>"
                    + _cell(f"{name}/cell_mAP", r.get("cell_mAP"), attrs=span_attr)
                    + _cell(f"{name}/cell_mAP_std", r.get("cell_mAP_std"), attrs=span_attr)
                    + f"<td{span_attr}>{html.escape(versus)}</td>"
                )
            score = per_seed[i] if i < len(per_seed) else s.get("cell_mAP")
            rows.append(
                f"<tr>{first}<td>{_num(s['seed'], 'd') if s['seed'] is not None else '-'}</td>"
                f"{_cell(f'{name}/seed{i}/cell_mAP', score)}"
                f"{_cell(f'{name}/seed{i}/train_s', s.get('train_s'), '.1f')}"
                f"{_cell(f'{name}/seed{i}/predict_s', s.get('predict_s'), '.1f')}"
                f"{_cell(f'{name}/submission_MB', s.get('submission_MB'), '.2f')}</tr>"
            )
    body += ["<h2>Variants</h2>", "<table>", *rows, "</table>"]
    body.append(
        '<p class="note">cell mAP on the held-out test set: mean and standard deviation over '
        "seeds, then each seed's run; stage: train (a learning idea) or predict (post-processing, "
        "TTA, ensembling of trained models); vs baseline: the mean of the per-seed differences, "
        "better or worse only when every seed agrees (at least 3 seeds); train and predict seconds are each stage's own wall time "
        "(hpa.train, hpa.predict), per seed where its result.json is on disk.</p>"
    )
    return page(f"hpa benchmark {folder.name}", body)


def write_benchmark_report(folder: Path) -> Path:
    return write_text(folder / REPORT, benchmark_report(folder))
