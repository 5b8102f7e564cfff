"""python -m hpa.benchmark out=DIR: every variant of configs/benchmark.yaml on one held-out set.

The data (a training set and a test set with its truth, from different seeds) is generated once
into DIR and reused. Each variant is trained with `python -m hpa.train`, predicted on the test set
with the true cell masks (`python -m hpa.predict segmenter=truth`, so segmentation is held
constant) and scored with `python -m hpa.evaluate`, each a subprocess run one at a time and logged
to DIR/<variant>/<stage>.log. DIR/benchmark.json holds {variant: {cell_mAP, AP_per_class,
train_s, predict_s}}, rewritten atomically after each variant; a variant whose result is there
with unchanged settings is skipped on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hpa.cli import compose, override_key
from hpa.errors import InputError, exit_on_input_error
from hpa.fidelity import agreement_table, benchmark_values, fidelity_table, inputs_table
from hpa.fsio import write_json
from hpa.labels import CLASS_NAMES, NUM_CLASSES
from hpa.signals import graceful_sigterm

SPEC_KEYS = {"train", "predict", "from", "models", "before"}
DATA_STAMP = ".hpa-benchmark-data.json"
RESULT = "result.json"
FIDELITY = "fidelity.json"  # hpa.fidelity: the benchmark against the real competition
# {out}, {variant_dir}, {train_data}, {test_data}, {variant:NAME}; never ${...} (Hydra's own).
PLACEHOLDER = re.compile(r"(?<!\$)\{(out|variant_dir|train_data|test_data|seed|variant:[\w.-]+)\}")
BASE_TRAIN = "{base_train}"  # a whole word of a before-command: base.train's overrides
VARIANT_REF = re.compile(r"(?<!\$)\{variant:([\w.-]+)\}")


class VariantFailed(Exception):
    """One stage of a variant exited non-zero; the others still run."""

    def __init__(self, name: str, stage: str, code: int, log: Path) -> None:
        self.name, self.stage, self.code, self.log = name, stage, code, log
        super().__init__(f"variant {name} failed: {stage} exited {code}; see {log}")


# ---- the variants --------------------------------------------------------------------------


def merge_overrides(*lists: Sequence[str]) -> list[str]:
    """Concatenate override lists; a later override of the same key replaces the earlier one."""
    merged: dict[str, str] = {}
    for overrides in lists:
        for o in overrides:
            merged.pop(override_key(o), None)
            merged[override_key(o)] = o
    return list(merged.values())


class Benchmark:
    """The composed benchmark config: paths, data options and the variant specs."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.train_data = self.out / "data" / "train"
        self.test_data = self.out / "test"
        specs = OmegaConf.to_container(cfg.specs, resolve=True) or {}
        if not isinstance(specs, dict):
            raise InputError("specs must map variant names to their settings; see benchmark.yaml")
        self.specs: dict[str, dict[str, Any]] = {}
        for name, spec in specs.items():
            spec = spec or {}
            where = f"benchmark.yaml specs.{name}"
            if not isinstance(spec, dict):
                raise InputError(f"{where}: give a mapping (train:, predict:, from:, ...)")
            unknown = sorted(set(spec) - SPEC_KEYS)
            if unknown:
                raise InputError(f"{where}: unknown key {unknown[0]}; use {sorted(SPEC_KEYS)}")
            for key in ("train", "predict", "models", "before"):
                if not isinstance(spec.get(key, []), list):
                    raise InputError(f"{where}.{key}: give a list")
            self.specs[str(name)] = spec
        self.check_references()
        # Every variant runs once per seed: `units` of one variant are its per-seed runs (the first
        # seed's keeps the variant's own folder, the others get <variant>-seed<S>).
        self.seeds = [int(s) for s in (cfg.get("seeds") or [])] or [None]
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds={self.seeds}: give distinct seeds")
        self.variants = dict(self.specs)
        self.units: dict[str, list[str]] = {name: [] for name in self.variants}
        self.unit_seed: dict[str, int | None] = {}
        expanded: dict[str, dict[str, Any]] = {}
        for seed in self.seeds:
            for name, spec in self.variants.items():
                unit = self.unit_name(name, seed)
                expanded[unit] = self.for_seed(spec, seed)
                self.units[name].append(unit)
                self.unit_seed[unit] = seed
        self.specs = expanded
        self.check_cycles()

    def seed_of(self, unit: str) -> int:
        seed = self.unit_seed.get(unit)
        if seed is None:
            raise InputError("benchmark.yaml: {seed} needs seeds: [S, ...] to be set")
        return seed

    def unit_name(self, name: str, seed: int | None) -> str:
        return name if seed is None or seed == self.seeds[0] else f"{name}-seed{seed}"

    def for_seed(self, spec: dict[str, Any], seed: int | None) -> dict[str, Any]:
        """A variant's spec for one seed: `seed=S` trained, and the variants it names (from:,
        models:, {variant:NAME}) taken at the same seed."""
        if seed is None:
            return spec

        def words(items: list[Any]) -> list[str]:
            return [
                VARIANT_REF.sub(lambda m: f"{{variant:{self.unit_name(m.group(1), seed)}}}", str(w))
                for w in items
            ]

        out: dict[str, Any] = {}
        if "train" in spec or not (spec.get("from") or spec.get("models")):
            out["train"] = [*words(spec.get("train", [])), f"seed={seed}"]
        if "predict" in spec:
            out["predict"] = words(spec["predict"])
        if spec.get("from"):
            out["from"] = self.unit_name(str(spec["from"]), seed)
        if spec.get("models"):
            out["models"] = [self.unit_name(str(m), seed) for m in spec["models"]]
        if spec.get("before"):
            out["before"] = [words(cmd) if isinstance(cmd, list) else cmd for cmd in spec["before"]]
        return out

    def check_references(self) -> None:
        for name in self.specs:
            for dep in self.model_sources(name):
                if dep not in self.specs:
                    raise InputError(
                        f"benchmark.yaml specs.{name}: variant {dep!r} is not defined; "
                        f"known: {', '.join(self.specs)}"
                    )
            for dep in self.placeholder_deps(name):
                if dep not in self.specs:
                    raise InputError(
                        f"benchmark.yaml specs.{name}: {{variant:{dep}}} names no variant; "
                        f"known: {', '.join(self.specs)}"
                    )

    # What a variant needs -------------------------------------------------------------------
    def trains(self, name: str) -> bool:
        spec = self.specs[name]
        return not spec.get("from") and (not spec.get("models") or name in spec["models"])

    def stage(self, name: str) -> str:
        """ "train" for a variant that trains a model of its own (a learning idea), "predict"
        for one that only predicts with others' models (post-processing, TTA, ensembling)."""
        return "train" if self.trains(name) else "predict"

    def model_sources(self, name: str) -> list[str]:
        """The variants whose trained models this one predicts with."""
        spec = self.specs[name]
        if spec.get("from"):
            return [str(spec["from"])] + [str(m) for m in spec.get("models", [])]
        if spec.get("models"):
            return [str(m) for m in spec["models"]]
        return [name]

    def placeholder_deps(self, name: str) -> list[str]:
        spec = self.specs[name]
        words = [str(w) for w in spec.get("train", []) + spec.get("predict", [])]
        words += [str(w) for cmd in spec.get("before", []) for w in cmd]
        return [
            m.group(1).split(":", 1)[1]
            for w in words
            for m in PLACEHOLDER.finditer(w)
            if m.group(1).startswith("variant:")
        ]

    def train_deps(self, name: str) -> list[str]:
        """Variants that must be trained before `name` can be (and be predicted)."""
        deps = [d for d in self.model_sources(name) if d != name]
        deps += [d for d in self.placeholder_deps(name) if d != name]
        return list(dict.fromkeys(deps))

    def check_cycles(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise InputError(
                    f"benchmark.yaml: variants depend on each other in a circle: "
                    f"{' -> '.join(path + [name])}"
                )
            state[name] = 1
            for dep in self.train_deps(name):
                visit(dep, path + [name])
            state[name] = 2

        for name in self.specs:
            visit(name, [])

    # Commands ---------------------------------------------------------------------------------
    def variant_dir(self, name: str) -> Path:
        return self.out / name

    def substitute(self, text: str, name: str) -> str:
        def repl(m: re.Match) -> str:
            key = m.group(1)
            if key.startswith("variant:"):
                return str(self.variant_dir(key.split(":", 1)[1]))
            return str(
                {
                    "out": self.out,
                    "variant_dir": self.variant_dir(name),
                    "train_data": self.train_data,
                    "test_data": self.test_data,
                    "seed": self.seed_of(name),
                }[key]
            )

        return PLACEHOLDER.sub(repl, str(text))

    def train_overrides(self, name: str) -> list[str]:
        spec = self.specs[name]
        merged = merge_overrides(list(self.cfg.base.train), [str(o) for o in spec.get("train", [])])
        merged = merge_overrides(merged, [f"paths.output_dir={self.variant_dir(name) / 'train'}"])
        return [self.substitute(o, name) for o in merged]

    def model_dirs(self, name: str) -> list[Path]:
        return [self.variant_dir(m) / "train" / "model" for m in self.model_sources(name)]

    def predict_overrides(self, name: str) -> list[str]:
        spec = self.specs[name]
        models = ",".join(str(m) for m in self.model_dirs(name))
        fixed = [
            f"models=[{models}]",
            f"input_dir={self.test_data / 'test'}",
            f"sample_submission={self.test_data / 'sample_submission.csv'}",
            f"submission={self.variant_dir(name) / 'submission.csv'}",
        ]
        merged = merge_overrides(
            list(self.cfg.base.predict), [str(o) for o in spec.get("predict", [])], fixed
        )
        return [self.substitute(o, name) for o in merged]

    def before_commands(self, name: str) -> list[list[str]]:
        commands = []
        for i, cmd in enumerate(self.specs[name].get("before", [])):
            if not isinstance(cmd, list) or not cmd:
                raise InputError(
                    f"benchmark.yaml specs.{name}.before[{i}]: give [python_module, arg, ...]"
                )
            words: list[str] = []
            for w in cmd:
                # {base_train} alone as a word: base.train's overrides, so a before-command that
                # trains (self-training's first round) stays in step with every variant's base.
                expanded = self.cfg.base.train if str(w) == BASE_TRAIN else [w]
                words += [self.substitute(str(x), name) for x in expanded]
            commands.append(words)
        return commands

    def fingerprint(self, name: str, stage: str = "all") -> str:
        """Changes whenever anything that decides the variant's result (or its models') does."""
        parts: dict[str, Any] = {"data": OmegaConf.to_container(self.cfg.data, resolve=True)}
        if self.trains(name):
            parts["before"] = self.before_commands(name)
            parts["train"] = self.train_overrides(name)
        parts["deps"] = {d: self.fingerprint(d, "train") for d in self.train_deps(name)}
        if stage == "all":
            parts["predict"] = self.predict_overrides(name)
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_overrides(self, names: Sequence[str]) -> None:
        """Compose every train and predict command now: a bad override stops in a second, with
        the variant named, not after the variants before it have trained."""
        for name in names:
            if self.trains(name):
                try:
                    compose("train", self.train_overrides(name))
                except InputError as err:
                    raise InputError(f"variant {name}, train: {err}") from None
            try:
                compose("predict", self.predict_overrides(name))
            except InputError as err:
                raise InputError(f"variant {name}, predict: {err}") from None


def selected(bench: Benchmark, variants: Any) -> list[str]:
    if variants is None:
        return list(bench.variants)
    names = [
        str(v)
        for v in (
            variants
            if OmegaConf.is_list(variants) or isinstance(variants, list)
            else str(variants).split(",")
        )
    ]
    unknown = [n for n in names if n not in bench.variants]
    if unknown:
        raise InputError(
            f"variants: {unknown[0]!r} is not a variant of benchmark.yaml; "
            f"known: {', '.join(bench.variants)}"
        )
    if not names:
        raise InputError("variants=[] selects nothing; name some, or leave variants unset")
    return list(dict.fromkeys(names))


# ---- data -----------------------------------------------------------------------------------


def ensure_data(bench: Benchmark, progress: bool) -> None:
    """Generate the training and the test set once; regenerate one whose options changed."""
    from hpa.synthetic.generator import SyntheticConfig, generate_atomically

    data = OmegaConf.to_container(bench.cfg.data, resolve=True)
    common = data.get("common") or {}
    for split, folder in (("train", bench.train_data), ("test", bench.test_data)):
        options = {**common, **(data.get(split) or {}), "split": split}
        options = {k: v for k, v in options.items() if v is not None}
        stamp = folder / DATA_STAMP
        if stamp.is_file() and json.loads(stamp.read_text()) == options:
            continue
        try:
            cfg = SyntheticConfig(**options)
        except TypeError as err:
            raise InputError(f"benchmark.yaml data.{split}: {err}") from None
        tqdm.write(f"benchmark: generating the {split} set ({cfg.n_images} images) into {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        generate_atomically(cfg, folder, progress=progress)  # only ever replaces a synthetic set
        write_json(stamp, options)


# ---- running --------------------------------------------------------------------------------


def run_stage(cmd: list[str], log: Path, name: str, stage: str, timeout_s: float) -> float:
    """Run one subprocess with its output in `log`; its wall time. SIGTERM reaching us (raised
    as hpa.signals.Terminated) is passed on to the child, which saves what it can."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    with open(log, "a") as fh:  # a rerun appends: what a stopped run logged stays
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM)
            code = _reap(child)
            fh.write(f"\nhpa.benchmark: stopped after timeout_s={timeout_s}\n")
        except BaseException:  # Terminated (SIGTERM), KeyboardInterrupt: stop the child too
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                _reap(child)
            raise
    if code != 0:
        raise VariantFailed(name, stage, code, log)
    return time.monotonic() - start


def _reap(child: subprocess.Popen, grace_s: float = 60.0) -> int:
    try:
        return child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def python_module(module: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def ensure_trained(bench: Benchmark, name: str, done: dict[str, Any]) -> float:
    """Train `name` (after what it depends on) unless its model is there with the same
    settings; the seconds its before-commands and training took (0 when reused)."""
    if name in done:
        if isinstance(done[name], VariantFailed):  # failed earlier in this run: not again
            raise done[name]
        return done[name]
    try:
        seconds = _train(bench, name, done)
    except VariantFailed as err:
        done[name] = err
        raise
    done[name] = seconds
    return seconds


def _train(bench: Benchmark, name: str, done: dict[str, Any]) -> float:
    for dep in bench.train_deps(name):
        ensure_trained(bench, dep, done)
    if not bench.trains(name):
        return 0.0
    vdir = bench.variant_dir(name)
    stamp = vdir / "train.json"
    fingerprint = bench.fingerprint(name, "train")
    if stamp.is_file() and (vdir / "train" / "model").is_dir():
        saved = json.loads(stamp.read_text())
        if saved.get("fingerprint") == fingerprint:
            return float(saved["train_s"])
    vdir.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for i, cmd in enumerate(bench.before_commands(name)):
        log = vdir / f"before{i}.log"
        seconds += run_stage(
            python_module(cmd[0], cmd[1:]),
            log,
            name,
            f"before[{i}] {cmd[0]}",
            float(bench.cfg.timeout_s),
        )
    overrides = bench.train_overrides(name)
    from hpa.train import holds_run

    started = vdir / "train.started.json"
    last = vdir / "train" / "checkpoints" / "last.ckpt"
    same = started.is_file() and json.loads(started.read_text()).get("fingerprint") == fingerprint
    if same and last.is_file():  # stopped (SIGTERM) with these settings: continue where it was
        overrides.append(f"ckpt_path={last}")
    elif holds_run(vdir / "train"):  # another run: moved aside by hpa.train, never deleted
        overrides.append("overwrite=true")
    write_json(started, {"fingerprint": fingerprint})
    seconds += run_stage(
        python_module("hpa.train", overrides),
        vdir / "train.log",
        name,
        "hpa.train",
        float(bench.cfg.timeout_s),
    )
    write_json(stamp, {"fingerprint": fingerprint, "train_s": seconds})
    return seconds


def run_variant(bench: Benchmark, name: str, done: dict[str, Any]) -> dict[str, Any]:
    vdir = bench.variant_dir(name)
    train_s = ensure_trained(bench, name, done)
    timeout = float(bench.cfg.timeout_s)
    predict_s = run_stage(
        python_module("hpa.predict", bench.predict_overrides(name)),
        vdir / "predict.log",
        name,
        "hpa.predict",
        timeout,
    )
    metrics = vdir / "metrics.json"
    run_stage(
        python_module(
            "hpa.evaluate",
            [
                f"submission={vdir / 'submission.csv'}",
                f"truth_dir={bench.test_data}",
                f"metrics={metrics}",
                "progress=false",
            ],
        ),
        vdir / "evaluate.log",
        name,
        "hpa.evaluate",
        timeout,
    )
    scored = json.loads(metrics.read_text())
    return {
        "cell_mAP": scored["mAP"],
        "AP_per_class": scored["AP_per_class"],
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
        # what min_confidence and the like save: the submission's size on disk
        "submission_MB": round((vdir / "submission.csv").stat().st_size / 1e6, 3),
    }


def finished(bench: Benchmark, name: str) -> dict[str, Any] | None:
    path = bench.variant_dir(name) / RESULT
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != bench.fingerprint(name):
        return None
    return saved["result"]


# ---- the table ------------------------------------------------------------------------------


def table(results: Mapping[str, dict[str, Any] | None], rare: Sequence[int], markdown: bool) -> str:
    """One row per variant: cell mAP (mean over seeds), its spread over seeds, the difference
    from `baseline` and its verdict, the rare classes' AP, train and predict seconds, the stage.
    The baseline first, then the learning ideas (stage train), then the predict-only ones."""
    head = ["variant", "cell mAP", "sd", "vs baseline (per seed)", "verdict"]
    head += [*[f"AP{c}" for c in rare], "train s", "predict s", "MB", "stage"]
    order = {"train": 1, "predict": 2}
    results = dict(
        sorted(
            results.items(),
            key=lambda item: (
                0 if item[0] == "baseline" else order.get((item[1] or {}).get("stage"), 3)
            ),
        )
    )
    base = (results.get("baseline") or {}).get("cell_mAP")
    base_seeds = (results.get("baseline") or {}).get("cell_mAP_per_seed") or []
    seeds = max((len(r["cell_mAP_per_seed"]) for r in results.values() if r), default=0)
    legend = (
        f"cell mAP on the held-out test set, mean over {seeds} training seed(s); sd: its standard "
        "deviation over seeds (one seed's noise); vs baseline: the difference of the means and "
        f"(per seed) of runs with the same seed; verdict: better or worse only when every seed's "
        f"difference agrees, over at least {MIN_SEEDS} seeds; stage: train (a learning idea) or "
        "predict (post-processing, TTA, ensembling of trained models); MB: the first seed's "
        "submission.csv; rare "
        "classes: " + ", ".join(f"AP{c} = {CLASS_NAMES[c]}" for c in rare)
    )

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = []
    for name, r in results.items():
        if r is None:
            rows.append([name, "failed", *["-"] * (len(head) - 2)])
            continue
        ap = r["AP_per_class"]
        score = r["cell_mAP"]
        delta = "-"
        if base is not None and score is not None and name != "baseline":
            # the same seed's runs differ by the idea alone: those differences are the signal
            paired = [a - b for a, b in zip(r["cell_mAP_per_seed"], base_seeds, strict=False)]
            delta = f"{score - base:+.4f}"
            if len(paired) > 1 and len(paired) == len(base_seeds):
                delta += " (" + "/".join(f"{d:+.3f}" for d in paired) + ")"
        rows.append(
            [
                name,
                num(score, ".4f"),
                num(r.get("cell_mAP_std"), ".4f"),
                delta,
                (r.get("vs_baseline") or {}).get("verdict", "-"),
                *[num(ap.get(CLASS_NAMES[c]), ".3f") for c in rare],
                num(r["train_s"], ".0f"),
                num(r["predict_s"], ".0f"),
                num(r.get("submission_MB"), ".2f"),
                r.get("stage", "-"),
            ]
        )
    if markdown:
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([*lines, "", legend])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([*(fmt.format(*row) for row in [head, *rows]), legend])


def check_rare(rare: Any) -> list[int]:
    values = list(rare or [])
    bad = [c for c in values if not isinstance(c, int) or not 0 <= c < NUM_CLASSES]
    if bad:
        raise InputError(f"rare_classes: {bad[0]!r} is not a class id 0-{NUM_CLASSES - 1}")
    return values


# ---- the command ----------------------------------------------------------------------------


def benchmark(cfg: DictConfig) -> tuple[dict[str, dict[str, Any] | None], list[VariantFailed]]:
    """Run the selected variants; their results (None: failed) and the failures."""
    if OmegaConf.is_missing(cfg, "out") or not cfg.out:
        raise InputError("out is not set; run `python -m hpa.benchmark out=DIR`")
    bench = Benchmark(cfg)
    names = selected(bench, cfg.variants)
    check_rare(cfg.rare_classes)
    bench.check_overrides(names)
    bench.out.mkdir(parents=True, exist_ok=True)
    ensure_data(bench, bool(cfg.progress))
    summary_path = bench.out / "benchmark.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    unit_results: dict[str, dict[str, Any] | None] = {}
    failures: list[VariantFailed] = []
    done: dict[str, Any] = {}  # unit -> train seconds, or its VariantFailed
    # Seed by seed: a first result for every variant comes before the second seeds.
    units = [bench.units[name][i] for i in range(len(bench.seeds)) for name in names]
    bar = tqdm(units, desc="benchmark", unit="run", disable=not cfg.progress)
    for unit in bar:
        bar.set_postfix_str(unit)
        result = finished(bench, unit)
        if result is not None:
            tqdm.write(f"benchmark: {unit} is done (unchanged), skipped")
        else:
            try:
                result = run_variant(bench, unit, done)
            except VariantFailed as err:
                tqdm.write(f"error: {err}")
                failures.append(err)
                result = None
            else:
                write_json(
                    bench.variant_dir(unit) / RESULT,
                    {"fingerprint": bench.fingerprint(unit), "result": result},
                )
                tqdm.write(f"benchmark: {unit}: cell mAP {result['cell_mAP']:.4f}")
        unit_results[unit] = result
        name = next(n for n in names if unit in bench.units[n])
        units_run = [u for u in bench.units[name] if u in unit_results]
        merged = aggregate(
            [unit_results[u] for u in units_run], [bench.unit_seed[u] for u in units_run]
        )
        if merged is None:
            summary.pop(name, None)
        else:
            merged["seeds"] = [bench.unit_seed[u] for u in units_run]
            merged["stage"] = bench.stage(name)
            summary[name] = merged
        add_verdicts(summary)
        write_json(summary_path, summary)  # atomic, after every run
    bar.close()
    results = {}
    for name in names:
        merged = aggregate(
            [unit_results.get(u) for u in bench.units[name]],
            [bench.unit_seed[u] for u in bench.units[name]],
        )
        if merged is not None:
            merged["stage"] = bench.stage(name)
        results[name] = merged
    add_verdicts(results)
    measured = benchmark_values(bench)
    tables = {
        "fidelity": fidelity_table(measured),
        "inputs": inputs_table(measured),
        "agreement": agreement_table(summary),
    }
    write_json(bench.out / FIDELITY, tables)
    return results, failures


# A variant is called better or worse than the baseline only when its paired difference (the
# same seed's runs differ by the idea alone) has the same sign on every seed, over at least
# MIN_SEEDS seeds; otherwise "unclear".
MIN_SEEDS = 3


def verdict(diffs: Sequence[float]) -> str:
    if len(diffs) < MIN_SEEDS:
        return f"unclear (under {MIN_SEEDS} seeds)"
    if all(d > 0 for d in diffs):
        return "better"
    if all(d < 0 for d in diffs):
        return "worse"
    return "unclear"


def add_verdicts(results: dict[str, dict[str, Any] | None]) -> None:
    """Each variant's `vs_baseline`: the paired difference per seed, their mean and the verdict."""
    base = (results.get("baseline") or {}).get("per_seed") or {}
    for name, r in results.items():
        if r is None or name == "baseline":
            continue
        paired = {
            seed: score - base[seed]
            for seed, score in (r.get("per_seed") or {}).items()
            if score is not None and base.get(seed) is not None
        }
        if not paired:
            r.pop("vs_baseline", None)
            continue
        r["vs_baseline"] = {
            "per_seed": paired,
            "mean": float(np.mean(list(paired.values()))),
            "verdict": verdict(list(paired.values())),
        }


def aggregate(
    results: Sequence[dict[str, Any] | None], seeds: Sequence[int | None]
) -> dict[str, Any] | None:
    """One variant's result over its seeds (`results[i]` is seed `seeds[i]`'s): means, and each
    seed's cell mAP (None if any of its runs failed)."""
    if not results or any(r is None for r in results):
        return None
    scores = [r["cell_mAP"] for r in results]
    known = [s for s in scores if s is not None]
    per_class = {}
    for cls in results[0]["AP_per_class"]:
        values = [r["AP_per_class"].get(cls) for r in results]
        per_class[cls] = None if any(v is None for v in values) else float(np.mean(values))
    return {
        "cell_mAP": float(np.mean(known)) if len(known) == len(scores) else None,
        "cell_mAP_per_seed": scores,
        "per_seed": {
            "default" if seed is None else str(seed): score
            for seed, score in zip(seeds, scores, strict=True)
        },
        "cell_mAP_std": float(np.std(known, ddof=1)) if len(known) > 1 else None,
        "AP_per_class": per_class,
        "train_s": round(float(np.mean([r["train_s"] for r in results])), 1),
        "predict_s": round(float(np.mean([r["predict_s"] for r in results])), 1),
        "submission_MB": results[0].get("submission_MB"),
    }


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = compose("benchmark", sys.argv[1:] if argv is None else argv)
    hint = "finished variants are kept; run the same command again to continue"
    with graceful_sigterm(hint):
        results, failures = benchmark(cfg)
    print(table(results, check_rare(cfg.rare_classes), bool(cfg.markdown)))
    print(f"wrote {Path(cfg.out) / 'benchmark.json'} and {Path(cfg.out) / FIDELITY}")
    if failures:
        failed = [name for name, result in results.items() if result is None]
        print(f"{len(failed)} variant(s) failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
