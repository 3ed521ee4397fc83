"""The package's import graph, read with ast (nothing is imported): no cycles between modules
or between subpackages, the library never imports what runs it (apps, the CLI), and nothing
in src/parsenet imports the lab or the benchmarks of a source checkout. Imports inside
functions count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "parsenet"
# What runs the library; no library layer may import these.
RUNNERS = ("parsenet.apps", "parsenet.cli", "parsenet.commands")
LIBRARY = ("parsenet.layers", "parsenet.backbones", "parsenet.models", "parsenet.data",
           "parsenet.engine")
# Layers that take plain keyword arguments; parsenet.recipe turns a Config into them.
CONFIG_FREE = ("parsenet.layers", "parsenet.backbones", "parsenet.models", "parsenet.data")


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``from pkg import name`` counts as
    ``pkg.name`` when that is a module, else as ``pkg``)."""
    files = {_module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in _imported_names(path, module):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between ``parsenet.<subpackage>`` (a top-level module stands alone)."""
    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(top(module), set()).update(top(t) for t in targets if top(t) != top(module))
    return out


GRAPH = import_graph()


def test_the_graph_sees_the_package() -> None:
    assert "parsenet.models" in GRAPH["parsenet.engine.checkpoint"]  # from parsenet.models import
    assert "parsenet.engine.checkpoint" in GRAPH["parsenet.apps.tasks"]
    assert "parsenet.models.builders" in GRAPH["parsenet.models.weights"]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(GRAPH) == []


def test_no_two_subpackages_import_each_other() -> None:
    assert cycles(subpackage_graph(GRAPH)) == []


@pytest.mark.parametrize("layer", LIBRARY)
def test_the_library_never_imports_what_runs_it(layer: str) -> None:
    upward = sorted((m, t) for m, targets in GRAPH.items()
                    if m == layer or m.startswith(layer + ".")
                    for t in targets if t.startswith(RUNNERS))
    assert upward == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_reachable_follows_imports_through_other_modules() -> None:
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a") == {"b", "c"}


@pytest.mark.parametrize("layer", CONFIG_FREE)
def test_models_and_data_never_need_the_config(layer: str) -> None:
    needing = sorted(m for m in GRAPH if m == layer or m.startswith(layer + ".")
                     if {"parsenet.config", "parsenet.recipe"} & reachable(GRAPH, m))
    assert needing == []


def test_only_the_cli_imports_the_commands_and_nothing_imports_the_cli() -> None:
    users = {t: sorted(m for m, targets in GRAPH.items() if t in targets)
             for t in ("parsenet.cli", "parsenet.commands")}
    assert users == {"parsenet.cli": [], "parsenet.commands": ["parsenet.cli"]}


def test_an_app_imports_no_other_app() -> None:
    """serve, demo and study each stand on the library and the apps' shared helpers."""
    apps = {"parsenet.apps.serve", "parsenet.apps.demo", "parsenet.apps.study"}

    def app_of(module: str) -> str | None:
        return next((a for a in apps if module == a or module.startswith(a + ".")), None)

    crossing = sorted((m, t) for m, targets in GRAPH.items() for t in targets
                      if app_of(m) and app_of(t) and app_of(m) != app_of(t))
    assert crossing == []


def test_the_package_never_imports_a_checkout() -> None:
    outside = sorted((str(p.relative_to(SRC)), name) for p in SRC.rglob("*.py")
                     for name in _imported_names(p, _module_name(p))
                     if name.split(".")[0] in ("lab", "benchmarks", "tests", "tools"))
    assert outside == []
