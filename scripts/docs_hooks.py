"""mkdocs hooks (mkdocs.yml `hooks:`): the configuration reference, generated at build time.

Every command's config (`src/hpa/configs/*.yaml`) and every option of every config group
(`src/hpa/configs/<group>/*.yaml`) becomes a page under `reference/`, its YAML shown with its
comments, and the `--help` of the commands that take no YAML (doctor, kaggle, runs) one more. The
configs are the only source, so the reference cannot drift from them. The pages are added to the
navigation under the entry that points at `configuration.md`; `mkdocs build --strict` then checks
their links like any other page's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path("src") / "hpa" / "configs"
REFERENCE = "reference"
INDEX_PAGE = "configuration.md"
# Commands whose options are argparse flags, not a Hydra config: their --help is the reference.
ARGPARSE_COMMANDS = ("hpa.doctor", "hpa.kaggle", "hpa.runs")
USAGE = re.compile(r"python -m (hpa\.[a-z_]+)")


def command_configs(config_dir: Path) -> list[Path]:
    """The top-level YAML files: one per command (train, predict, ...)."""
    return sorted(config_dir.glob("*.yaml"))


def config_groups(config_dir: Path) -> dict[str, list[Path]]:
    """Group name (`data`, `hydra/launcher`, ...) -> its option files, sorted."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(config_dir.rglob("*.yaml")):
        if path.parent == config_dir:
            continue
        groups.setdefault(path.parent.relative_to(config_dir).as_posix(), []).append(path)
    return dict(sorted(groups.items()))


def header_comment(text: str) -> list[str]:
    """The comment lines a YAML file opens with, without their `#`."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        lines.append(body[1:] if body.startswith(" ") else body)
    return lines


def command_name(path: Path) -> str:
    """`hpa.predict` for predict.yaml: the `python -m hpa.X` its first comment line shows."""
    header = header_comment(path.read_text())
    found = USAGE.search(header[0]) if header else None
    return found.group(1) if found else f"hpa.{path.stem}"


def defaults_of(path: Path) -> list[Any]:
    data = yaml.safe_load(path.read_text())
    defaults = data.get("defaults") if isinstance(data, dict) else None
    return list(defaults or [])


def group_anchor(group: str, option: str | None = None) -> str:
    slug = group.replace("/", "-").replace("_", "-")
    return f"{slug}-{option.replace('_', '-')}" if option else slug


def page_name(path: Path) -> str:
    return f"{REFERENCE}/{path.stem}.md"


def yaml_block(text: str) -> list[str]:
    fence = "````" if "```" in text else "```"
    return [f"{fence}yaml", text.rstrip("\n"), fence]


def render_command(path: Path, config_dir: Path) -> str:
    name = command_name(path)
    text = path.read_text()
    rel = (CONFIGS / path.name).as_posix()
    out = [f"# {name}", ""]
    header = header_comment(text)
    if header:
        out += ["```text", *header, "```", ""]
    out += [
        f"Every key below can be set on the command line as `key=value` "
        f"(`python -m {name} KEY=VALUE ...`). Source: `{rel}`.",
        "",
    ]
    bases, groups = [], []
    for entry in defaults_of(path):
        if isinstance(entry, str) and entry != "_self_":
            bases.append(entry)
        elif isinstance(entry, dict):
            for group, option in entry.items():
                groups.append((str(group), option))
    for base in bases:
        base_path = config_dir / f"{base}.yaml"
        if base_path.exists():
            out += [
                f"It starts from [{command_name(base_path)}]({base}.md)'s config "
                "(its groups and keys apply here too) and changes what follows.",
                "",
            ]
    if groups:
        out += ["Config groups it composes (`GROUP=OPTION` picks another option):", ""]
        for group, option in groups:
            default = "none by default" if option is None else f"default `{option}`"
            out.append(f"- [`{group}`](groups.md#{group_anchor(group)}): {default}")
        out.append("")
    out += ["## The config", "", *yaml_block(text), ""]
    return "\n".join(out)


def render_groups(config_dir: Path) -> str:
    out = [
        "# Config groups",
        "",
        "A group is a folder of `src/hpa/configs/`; `GROUP=OPTION` on the command line picks one of "
        "its files (e.g. `data=cells`, `trainer=gpu`, `hydra/launcher=ray`), and any key inside it "
        "is then set as `GROUP.KEY=VALUE`. Files that start with `# @package _global_` (experiments, "
        "debug presets, searches) set keys anywhere in the config.",
        "",
    ]
    for group, files in config_groups(config_dir).items():
        out += [f"## {group} {{#{group_anchor(group)}}}", ""]
        out += ["Options: " + ", ".join(f"`{p.stem}`" for p in files) + ".", ""]
        for path in files:
            rel = (CONFIGS / group / path.name).as_posix()
            out += [f"### {group}={path.stem} {{#{group_anchor(group, path.stem)}}}", ""]
            out += [f"Source: `{rel}`.", "", *yaml_block(path.read_text()), ""]
    return "\n".join(out)


def help_text(args: list[str], root: Path) -> str:
    """What `python -m ARGS --help` prints, run from this checkout's src/ when there is one."""
    env = dict(os.environ, COLUMNS="100", NO_ALBUMENTATIONS_UPDATE="1")
    src = root / "src"
    if src.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"`python -m {' '.join(args)} --help` failed: {done.stderr[-1000:]}")
    return done.stdout.rstrip("\n")


def subcommands(help_output: str) -> list[str]:
    """The subcommands of an argparse parser: the `{a,b,c}` of its positional arguments (an
    option's choices, such as `--segmenter {hpacellseg}`, are not subcommands)."""
    positional = help_output.partition("positional arguments:")[2]
    found = re.search(r"^\s+\{([a-z0-9_,-]+)\}", positional, re.M)
    return found.group(1).split(",") if found else []


def has_flag_commands(root: Path) -> bool:
    """Whether this checkout has the flag commands' code (a docs-only copy has just the configs)."""
    src = root / "src"
    return all(
        (src / f"{m.replace('.', '/')}.py").exists() or (src / m.replace(".", "/")).is_dir()
        for m in ARGPARSE_COMMANDS
    )


def render_argparse(root: Path) -> str:
    out = [
        "# Commands with flags",
        "",
        "These commands take `--flags` (argparse) instead of `key=value` overrides; what follows is "
        "their `--help`, captured when this site was built.",
        "",
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        tops = {m: pool.submit(help_text, [m], root) for m in ARGPARSE_COMMANDS}
        tops = {m: future.result() for m, future in tops.items()}
        subs = [(m, sub) for m in ARGPARSE_COMMANDS for sub in subcommands(tops[m])]
        sub_help = {ms: pool.submit(help_text, list(ms), root) for ms in subs}
        sub_help = {ms: future.result() for ms, future in sub_help.items()}
    for module in ARGPARSE_COMMANDS:
        anchor = module.replace(".", "-")
        out += [f"## {module} {{#{anchor}}}", "", "```text", tops[module], "```", ""]
        for m, sub in subs:
            if m == module:
                out += [f"### {module} {sub} {{#{anchor}-{sub}}}", ""]
                out += ["```text", sub_help[(m, sub)], "```", ""]
    return "\n".join(out)


def reference_pages(root: Path) -> dict[str, str]:
    """Every generated page: path under docs/ -> Markdown."""
    config_dir = root / CONFIGS
    pages = {page_name(p): render_command(p, config_dir) for p in command_configs(config_dir)}
    pages[f"{REFERENCE}/groups.md"] = render_groups(config_dir)
    if has_flag_commands(root):
        pages[f"{REFERENCE}/flags.md"] = render_argparse(root)
    return pages


def reference_nav(root: Path) -> list[Any]:
    config_dir = root / CONFIGS
    nav: list[Any] = [INDEX_PAGE]
    nav += [{command_name(p): page_name(p)} for p in command_configs(config_dir)]
    if has_flag_commands(root):
        nav += [{", ".join(ARGPARSE_COMMANDS): f"{REFERENCE}/flags.md"}]
    nav += [{"Config groups": f"{REFERENCE}/groups.md"}]
    return nav


def expand_nav(nav: list[Any], section: list[Any]) -> bool:
    """Replace the nav entry `TITLE: configuration.md` by a section TITLE: [the index, pages]
    (or a section expanded before, when `mkdocs serve` rebuilds, by today's pages)."""
    for i, item in enumerate(nav):
        if isinstance(item, dict):
            for title, value in item.items():
                if value == INDEX_PAGE or (isinstance(value, list) and value[:1] == [INDEX_PAGE]):
                    nav[i] = {title: section}
                    return True
                if isinstance(value, list) and expand_nav(value, section):
                    return True
    return False


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


# --- mkdocs events ---------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    if not config["nav"] or not expand_nav(config["nav"], reference_nav(_root(config))):
        raise RuntimeError(f"mkdocs.yml: the nav needs an entry pointing at {INDEX_PAGE}")
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for src_uri, content in reference_pages(_root(config)).items():
        files.append(File.generated(config, src_uri, content=content))
    return files
