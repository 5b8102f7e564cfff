"""The manual (docs/, mkdocs.yml): the Layout page matches the tree, the README stays short and
its links resolve, the option reference is generated from the configs, and the strict build fails
on what it promises to catch. `make docs` builds the real site with --strict (part of make test)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from procs import child_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250
# A Layout line: `- \`hpa.data.cache\` — what it does.`
LAYOUT_ENTRY = re.compile(r"^- `((?:hpa|hydra_plugins)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`", re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_modules() -> set[str]:
    """Every module under src/hpa and src/hydra_plugins, as dotted names (a package by its name)."""
    names = set()
    for top in ("hpa", "hydra_plugins"):
        for path in (ROOT / "src" / top).rglob("*.py"):
            parts = path.relative_to(ROOT / "src").with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join(parts))
    return names


def layout_modules(text: str) -> list[str]:
    return LAYOUT_ENTRY.findall(text)


def test_layout_names_every_module_of_the_tree_and_no_other():
    named = layout_modules((DOCS / "layout.md").read_text())
    tree = tree_modules()
    assert len(tree) > 50  # the walk found the package
    missing = sorted(tree - set(named))
    assert not missing, f"docs/layout.md lacks a line for: {', '.join(missing)}"
    unknown = sorted(set(named) - tree)
    assert not unknown, f"docs/layout.md names modules that do not exist: {', '.join(unknown)}"
    twice = sorted({n for n in named if named.count(n) > 1})
    assert not twice, f"docs/layout.md names these twice: {', '.join(twice)}"


def test_layout_check_sees_a_missing_and_a_stale_line():
    """The parser the check relies on: a module without its line, or a line without its module,
    shows up in the two differences (so the check above cannot pass by reading nothing)."""
    text = (DOCS / "layout.md").read_text()
    named = set(layout_modules(text))
    assert "hpa.fsio" in named and "hydra_plugins.hpa_ray_launcher.ray_launcher" in named
    dropped = text.replace("- `hpa.fsio` —", "- hpa.fsio —")
    assert tree_modules() - set(layout_modules(dropped)) == {"hpa.fsio"}
    stale = text + "\n- `hpa.no_such_module` — gone.\n"
    assert set(layout_modules(stale)) - tree_modules() == {"hpa.no_such_module"}


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


def github_anchor(heading: str) -> str:
    """The id GitHub (and mkdocs' toc) gives a heading: lower case, punctuation out, spaces -> -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


def broken_links(markdown: Path) -> list[str]:
    broken = []
    for target in LINK.findall(markdown.read_text()):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def test_every_relative_link_in_the_readme_resolves():
    links = LINK.findall(README.read_text())
    assert any(link.startswith("docs/") for link in links)
    assert broken_links(README) == []


def test_the_link_check_sees_a_missing_page_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Its `section`\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#its-section) [gone](docs/gone.md) [bad](docs/page.md#nope) "
        "[web](https://example.org/x.md)\n"
    )
    assert broken_links(readme) == [
        "docs/gone.md (no such file)",
        "docs/page.md#nope (no heading #nope in page.md)",
    ]


# --- the generated option reference ----------------------------------------------------------


@pytest.fixture
def config_copy(tmp_path) -> Path:
    """A checkout with only the configs: src/hpa/configs copied under tmp_path."""
    shutil.copytree(ROOT / "src" / "hpa" / "configs", tmp_path / "src" / "hpa" / "configs")
    return tmp_path


def test_a_key_added_to_a_config_appears_in_its_generated_page(config_copy):
    hooks = load_hooks()
    predict = config_copy / "src" / "hpa" / "configs" / "predict.yaml"
    before = hooks.reference_pages(config_copy)["reference/predict.md"]
    assert "brand_new_key" not in before
    predict.write_text(
        predict.read_text() + "# what the new key does, as its comment says\nbrand_new_key: 7\n"
    )
    after = hooks.reference_pages(config_copy)["reference/predict.md"]
    assert "brand_new_key: 7" in after
    assert "# what the new key does, as its comment says" in after


def test_a_new_command_config_and_group_option_get_pages_and_nav_entries(config_copy):
    hooks = load_hooks()
    configs = config_copy / "src" / "hpa" / "configs"
    (configs / "newcmd.yaml").write_text(
        "# python -m hpa.newcmd x=1\n# Does a new thing.\ndefaults:\n  - data: demo\n  - _self_\nx: 1\n"
    )
    (configs / "data" / "tiny.yaml").write_text("# A tiny data option.\nimage_size: 8\n")
    pages = hooks.reference_pages(config_copy)
    page = pages["reference/newcmd.md"]
    assert page.startswith("# hpa.newcmd\n")
    assert "Does a new thing." in page and "x: 1" in page
    assert "[`data`](groups.md#data): default `demo`" in page
    groups = pages["reference/groups.md"]
    assert "### data=tiny {#data-tiny}" in groups and "image_size: 8" in groups
    assert {"hpa.newcmd": "reference/newcmd.md"} in hooks.reference_nav(config_copy)


def test_every_config_file_is_in_the_generated_reference():
    hooks = load_hooks()
    pages = hooks.reference_pages(ROOT)
    text = "\n".join(pages.values())
    configs = ROOT / "src" / "hpa" / "configs"
    for path in configs.rglob("*.yaml"):
        assert f"`src/hpa/configs/{path.relative_to(configs).as_posix()}`" in text, path
        assert path.read_text().rstrip("\n") in text, path
    # The commands configured by flags: their --help, subcommands included.
    flags = pages["reference/flags.md"]
    for command in ("hpa.doctor", "hpa.runs", "hpa.kaggle push", "hpa.kaggle bundle"):
        assert f"{command} {{#" in flags, command
    # doctor's `--segmenter {hpacellseg}` is an option's choice, not a subcommand
    assert "### hpa.doctor" not in flags


def test_subcommands_are_the_positional_choices_not_an_options_choices():
    hooks = load_hooks()
    kaggle = (
        "usage: python -m hpa.kaggle [-h] {push,status,bundle} ...\n\n"
        "positional arguments:\n  {push,status,bundle}\n    push    upload\n\n"
        "options:\n  -h, --help  show this help message and exit\n"
    )
    doctor = (
        "usage: python -m hpa.doctor [-h] [--segmenter {hpacellseg}]\n\n"
        "options:\n  --segmenter {hpacellseg}\n"
    )
    assert hooks.subcommands(kaggle) == ["push", "status", "bundle"]
    assert hooks.subcommands(doctor) == []


def test_the_nav_entry_of_the_configuration_page_becomes_a_section():
    hooks = load_hooks()
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    section = hooks.reference_nav(ROOT)
    assert hooks.expand_nav(nav, section)
    found = [v for item in nav if isinstance(item, dict) for v in item.values()]
    reference = next(v for v in found if isinstance(v, list) and hooks.INDEX_PAGE in str(v))
    entries = next(v for item in reference for v in item.values() if v == section)
    assert entries[0] == "configuration.md"
    assert {"hpa.train": "reference/train.md"} in entries
    assert {"Config groups": "reference/groups.md"} in entries
    # Expanding again (mkdocs serve rebuilds with the same config) replaces the section.
    assert hooks.expand_nav(nav, section[:2])
    assert str(nav).count("configuration.md") == 1 and "reference/train.md" not in str(nav)


# --- mkdocs build --strict -------------------------------------------------------------------


def mkdocs_available() -> bool:
    return importlib.util.find_spec("mkdocs") is not None


def build_copy(tmp_path: Path, edit) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of a copy of the manual (configs only, no code: no flags page),
    after `edit(docs_dir)`."""
    root = tmp_path / "repo"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(
        ROOT / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "src" / "hpa" / "configs", root / "src" / "hpa" / "configs")
    edit(root / "docs")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=root,
        env=child_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


needs_mkdocs = pytest.mark.skipif(
    not mkdocs_available(), reason="mkdocs is in the dev group (make install)"
)


@needs_mkdocs
def test_strict_build_of_the_manual_passes_with_the_generated_reference(tmp_path):
    done = build_copy(tmp_path, lambda docs: None)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    site = tmp_path / "site"
    assert (site / "layout.html").exists()
    # The generated pages are in the site, with the configs' keys and comments.
    predict = (site / "reference" / "predict.html").read_text()
    assert "tta_scales" in predict and "Input scales, each combined with every transform" in predict
    assert (site / "reference" / "groups.html").exists()


@needs_mkdocs
def test_strict_build_fails_on_a_broken_link_a_missing_anchor_and_a_page_not_in_the_nav(tmp_path):
    def break_it(docs: Path) -> None:
        with open(docs / "training.md", "a") as f:
            f.write(
                "\nSee [a](gone.md), [b](sweeps.md#no-such-heading) and [c](#no-local-heading).\n"
            )
        (docs / "orphan.md").write_text("# Orphan\n")

    done = build_copy(tmp_path, break_it)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said[-3000:]
    assert "strict mode" in said, said[-3000:]
    for warning in ("gone.md", "no-such-heading", "no-local-heading", "orphan.md"):
        assert warning in said, (warning, said[-3000:])
