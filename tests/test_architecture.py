"""The shape of the code: packages import each other one way, and files are written one way."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hpa"


def unit_of(module: str) -> str:
    """`hpa.data.images` -> `data` (a subpackage); `hpa.errors` -> `errors` (a top-level module)."""
    return module.split(".")[1]


def import_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> files, counting every import, also those inside functions."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if len(parts) < 2:
            continue
        source = parts[1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                names = [".".join([*base, node.module or ""])]
            else:
                continue
            for name in names:
                if name.startswith("hpa.") and unit_of(name) != source:
                    files = graph.setdefault(source, {}).setdefault(unit_of(name), set())
                    files.add(str(path.relative_to(SRC)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_one_that_imports_it_back():
    graph = import_graph()
    found = cycles(graph)
    detail = [
        f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})"
        for component in found
        for a in component
        for b in component
        if b in graph.get(a, {})
    ]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b": {"x"}}, "b": {"c": {"y"}}, "c": {"a": {"z"}}, "d": {"a": {"w"}}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": {"x"}}, "b": {}}) == []


def test_files_are_replaced_only_through_fsio():
    """One way to write a file atomically: no module makes its own temp names by hand."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "fsio.py":
            continue
        text = path.read_text()
        for needle in (".tmp-{os.getpid()}", '.tmp"'):
            if needle in text:
                offenders.append(f"{path.relative_to(SRC)}: {needle}")
    assert not offenders, offenders


MOVES = {"rename", "renames", "replace", "move"}
# Modules that rename files themselves, each with its reason: every other module calls
# hpa.fsio (atomic_path, atomic_dir, move_into_place), so a rename is flushed and atomic.
RENAMERS = {"fsio.py": "the one implementation of atomic writes and moves"}


def renames(source: str) -> list[str]:
    """Each call in `source` that moves a file or folder: os.rename/replace/renames, shutil.move,
    Path.rename/replace, however imported or aliased, and a path's own .rename(x)/.replace(x)
    (one argument, which str.replace never takes)."""
    tree = ast.parse(source)
    movers = {"os", "shutil", "Path"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            movers |= {a.asname for a in node.names if a.asname and a.name in ("os", "shutil")}
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil", "pathlib"):
            movers |= {a.asname or a.name for a in node.names if a.name == "Path"}
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in MOVES]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            on_module = isinstance(receiver, ast.Name) and receiver.id in movers
            one_target = len(node.args) == 1 and not node.keywords
            if node.func.attr in MOVES and (on_module or one_target):
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


def test_only_fsio_renames_files():
    offenders = [
        f"{path.relative_to(SRC)} {call}"
        for path in sorted(SRC.rglob("*.py"))
        if str(path.relative_to(SRC)) not in RENAMERS
        for call in renames(path.read_text())
    ]
    assert not offenders, "rename through hpa.fsio (move_into_place):\n" + "\n".join(offenders)


def test_the_rename_finder_finds_every_spelling():
    source = """
import os as o
import shutil
from os import replace
from pathlib import Path as P
o.rename(a, b)
os.replace(a, b)
shutil.move(a, b)
P.rename(a, b)
(folder / name).rename(aside / name)
tmp.replace(path)
text.replace("'", "x")
frame.rename(columns={"a": "b"})
"""
    found = renames(source)
    assert [f.split(":")[0] for f in found] == [f"line {n}" for n in (4, 6, 7, 8, 9, 10, 11)], found
