"""Config values of the wrong type or range, and overrides Hydra cannot parse: one line, exit 2.

`hpa.config_check.check_config` runs on every composed config (hpa.cli.compose); the train
entry point calls it itself. `hpa.cli.override_problem` names an unparsable override and how to
quote it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import hpa.train
from hpa.cli import compose, override_key, override_problem
from hpa.config_check import RULES, check_config
from hpa.errors import InputError
from procs import child_env

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "hpa" / "configs"
ENV = child_env()


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *named: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


# ---- the shipped configs pass ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [[]]
    + [[f"experiment={p.stem}"] for p in sorted((CONFIGS / "experiment").glob("*.yaml"))]
    + [[f"debug={p.stem}"] for p in sorted((CONFIGS / "debug").glob("*.yaml"))]
    + [["data=cells"], ["data=merged"], ["trainer=ddp_cpu"], ["trainer.max_epochs=-1"]]
    + [["model=mil", "data=bags"], ["hparams_search=demo_optuna"]],
    ids=lambda o: " ".join(o) or "defaults",
)
def test_every_shipped_train_config_passes(overrides):
    check_config(compose("train", ["paths.output_dir=x", *overrides]), "train")


@pytest.mark.parametrize("command", sorted(RULES))
def test_every_command_default_config_passes(command):
    cfg = compose(command, [])  # compose runs the check
    check_config(cfg, command)


# ---- the check itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.image_size=abc", ["data.image_size='abc'", "an integer >= 32"]),
        ("data.image_size=1.5", ["data.image_size=1.5", "integer"]),
        ("data.image_size=16", ["data.image_size=16", ">= 32"]),
        ("data.batch_size=0", ["data.batch_size=0", "an integer >= 1"]),
        ("data.batch_size=true", ["data.batch_size=true", "integer"]),  # a bool is no int
        ("data.num_workers=-1", ["data.num_workers=-1", ">= 0"]),
        ("trainer.max_epochs=abc", ["trainer.max_epochs='abc'", "(or -1)"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs=0", ">= 1 (or -1)"]),
        ("optimizer.lr=0", ["optimizer.lr=0", "a number > 0"]),
        ("optimizer.lr=fast", ["optimizer.lr='fast'", "a number > 0"]),
        ("optimizer.lr=nan", ["optimizer.lr=nan", "a number > 0"]),
        ("seed=abc", ["seed='abc'", "an integer"]),
        ("mix.prob=2", ["mix.prob=2", "[0, 1]"]),
        ("model.pretrained=yes", ["model.pretrained='yes'", "true or false"]),
        ("scheduler.min_lr_ratio=2", ["scheduler.min_lr_ratio=2", "[0, 1]"]),
    ],
)
def test_train_values_of_the_wrong_type_or_range_name_key_value_and_expectation(override, named):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(override)  # typed as Hydra types it
    cfg = compose("train", ["paths.output_dir=x"])
    OmegaConf.update(cfg, parsed.key_or_group, parsed.value())
    with pytest.raises(InputError) as info:
        check_config(cfg, "train")
    for text in named:
        assert text in str(info.value)
    # ... and the same through compose, which every compose-based command uses.
    with pytest.raises(InputError, match="config train: "):
        compose("train", ["paths.output_dir=x", override])


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.lr=1"],  # an int where a number is wanted
        ["trainer.max_epochs=-1"],
        ["data=cells", "data.cells_per_image=null"],
        ["data=cells", "data.cells_per_image=4"],
        ["seed=-3"],
    ],
)
def test_values_in_range_pass(overrides):
    compose("train", ["paths.output_dir=x", *overrides])


def test_a_key_only_some_configs_have_is_checked_where_present():
    with pytest.raises(InputError, match="data.cells_per_image=0"):
        compose("train", ["paths.output_dir=x", "data=cells", "data.cells_per_image=0"])


@pytest.mark.parametrize("tta", ["d4", "4", "[none,hflip]", "flips", "[rot180,transpose]"])
def test_predict_tta_choices_pass(tta):
    compose("predict", [f"tta={tta}"])


@pytest.mark.parametrize("tta", ["sideways", "9", "0", "[none,spin]", "[]", "true"])
def test_a_bad_predict_tta_is_named_when_composed(tta):
    """Checked with the config (hpa.kaggle push --predict-option relies on it), not only once
    prediction starts; the message lists what tta takes."""
    with pytest.raises(InputError, match=r"tta=.*d4, a count 1-8 or a list of none, hflip"):
        compose("predict", [f"tta={tta}"])


def test_missing_required_values_are_left_to_the_command():
    cfg = compose("predict", [])  # models, input_dir, sample_submission are ??? here
    assert OmegaConf.is_missing(cfg, "models")


# ---- through the commands, as the issue reported them ------------------------------------------


@pytest.mark.parametrize(
    "module, args, named",
    [
        ("hpa.predict", ["batch_size=abc"], ["batch_size='abc'", "an integer >= 1"]),
        ("hpa.evaluate", ["iou_threshold=abc"], ["iou_threshold='abc'", "(0.5, 1]"]),
        ("hpa.synthetic", ["n_images=abc"], ["n_images='abc'", "an integer >= 1"]),
        ("hpa.prepare", ["data.image_size=abc"], ["data.image_size='abc'", "integer"]),
        ("hpa.bench", ["loader", "data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_commands_exit_2_with_one_line_on_bad_values(module, args, named, tmp_path):
    assert_one_line_error(run_cli(module, *args, cwd=tmp_path), *named)
    assert list(tmp_path.iterdir()) == []  # nothing written


TRAIN_CHECKS = "check_config" in Path(hpa.train.__file__).read_text()


@pytest.mark.skipif(not TRAIN_CHECKS, reason="hpa.train does not call check_config yet")
@pytest.mark.parametrize(
    "override, named",
    [
        ("data.image_size=abc", ["data.image_size='abc'"]),
        ("trainer.max_epochs=abc", ["trainer.max_epochs='abc'"]),
        ("data.batch_size=0", ["data.batch_size=0"]),
    ],
)
def test_train_exits_2_with_one_line_on_bad_values(override, named, tmp_path):
    done = run_cli("hpa.train", override, f"paths.output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_error(done, *named)


# ---- overrides Hydra cannot parse --------------------------------------------------------------


@pytest.mark.parametrize(
    "arg", ["data.root=/tmp/data", 'data.root="/tmp/données"', "model=[a,b]", "~seed", "+x.y=1"]
)
def test_parsable_overrides_have_no_problem(arg):
    assert override_problem(arg) is None


@pytest.mark.parametrize(
    "arg, hint",
    [
        ("data.root=/tmp/données", "'data.root=\"/tmp/données\"'"),
        ("truth_dir=/data/été 2021", "'truth_dir=\"/data/été 2021\"'"),
        ("data.root=a[b", "'data.root=\"a[b\"'"),
        ('data.root=a"b[', "'data.root='\\''a\"b['\\'''"),  # double quote inside: single quotes
        ("bad key!=1", "Hydra's syntax is key=value"),
    ],
)
def test_unparsable_override_is_named_with_the_fix(arg, hint):
    problem = override_problem(arg)
    assert problem.startswith(f"cannot parse the override `{arg}`") and hint in problem


@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_every_command_reads_an_overrides_key_past_its_prefix(prefix):
    from hpa.benchmark import merge_overrides
    from hpa.predict import override_keys
    from hpa.runs import parse_filter
    from hpa.train import run_folder

    assert override_key(f"{prefix}data.root=/x=y") == "data.root"
    assert merge_overrides([f"{prefix}seed=1"], ["seed=2"]) == ["seed=2"]
    assert override_keys([f"{prefix}seed=1", "~tta"]) == {"seed"}
    assert parse_filter(f"{prefix}seed!=1") == ("seed", "1", False)
    assert run_folder([f"{prefix}hydra.run.dir=/runs/a"]) == Path("/runs/a")


def test_unicode_path_in_a_command_says_to_quote_it(tmp_path):
    done = run_cli("hpa.evaluate", "submission=x.csv", "truth_dir=/tmp/données", cwd=tmp_path)
    line = assert_one_line_error(done, "truth_dir=/tmp/données")
    assert "quoted" in line and "'truth_dir=\"/tmp/données\"'" in line
    quoted = run_cli("hpa.evaluate", "submission=x.csv", 'truth_dir="/tmp/données"', cwd=tmp_path)
    assert_one_line_error(quoted, "x.csv does not exist")  # parsed: on to the next check
