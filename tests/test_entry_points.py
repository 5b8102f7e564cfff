"""Every command reads the same way: `--help` works, bad input exits 2, and each `python -m hpa.X`
the README or the manual (docs/) shows is also a console script `hpa-X` of the installed package."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from procs import child_env

ROOT = Path(__file__).resolve().parents[1]
ENV = child_env()


def readme_commands() -> set[str]:
    """Every `python -m hpa.X` the README or a page of the manual tells a user to run."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    return set(re.findall(r"python -m hpa\.([a-z_]+)", text))


def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_readme_command_is_a_console_script_of_the_same_module():
    scripts = console_scripts()
    for command in sorted(readme_commands()):
        name = f"hpa-{command}"
        assert name in scripts, f"{name} missing from [project.scripts]"
        module, _, function = scripts[name].partition(":")
        assert module in (f"hpa.{command}", f"hpa.{command}.__main__"), scripts[name]
        assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("command", sorted(readme_commands()))
def test_help_works_on_every_command(command):
    done = subprocess.run(
        [sys.executable, "-m", f"hpa.{command}", "--help"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.lower()
    assert "usage" in out or "powered by hydra" in out, done.stdout[:500]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", sorted(readme_commands()))
def test_help_into_a_closed_pipe_ends_quietly(command):
    """`python -m hpa.X --help | head -1`: the reader is gone before the help is written. The
    command stops as a Unix tool does (0, or 141 as if killed by SIGPIPE), without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"hpa.{command}", "--help"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader went away before the first write
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode in (0, 141), err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]


@pytest.mark.parametrize("command", sorted(readme_commands() - {"doctor"}))
def test_bad_input_exits_2_on_every_command(command):
    """An argument no command accepts: one line, exit 2 (the doctor only reports: exit 0/1)."""
    done = subprocess.run(
        [sys.executable, "-m", f"hpa.{command}", "no_such_key_anywhere=1"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, (command, done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
