"""The package's modules depend on each other one way: no import cycle, function-local and
``TYPE_CHECKING`` imports included (parsed with ``ast``, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import package_parent

PACKAGE = "sglang_roll_compat"


def _module_names(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import, modules: set[str]) -> set[str]:
    def known(name: str) -> str | None:
        while name and name not in modules:  # a name imported from a module: the module
            name = name.rpartition(".")[0]
        return name or None

    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE and (found := known(alias.name)):
                targets.add(found)
        return targets
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE:
        return targets
    for alias in node.names:  # "from . import launch": the submodule when there is one
        found = known(f"{source}.{alias.name}") if f"{source}.{alias.name}" in modules else known(source)
        if found:
            targets.add(found)
    return targets


def import_graph(root: Path) -> dict[str, set[str]]:
    files = _module_names(root)
    names = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):  # every import, at module level or inside a function
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _resolve(name, path.name == "__init__.py", node, names)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph(package_parent() / PACKAGE)
    assert f"{PACKAGE}.launch" in graph[f"{PACKAGE}.mpproxy"]  # the graph sees real edges
    assert f"{PACKAGE}.roll.planner" in graph[PACKAGE]  # TYPE_CHECKING imports too
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_launch_path_points_one_way() -> None:
    graph = import_graph(package_parent() / PACKAGE)
    order = ["childhooks", "signals", "launch", "mpproxy", "family"]  # each may use only those before it
    for i, name in enumerate(order):
        later = {f"{PACKAGE}.{n}" for n in order[i + 1 :]}
        assert not graph[f"{PACKAGE}.{name}"] & later, (name, graph[f"{PACKAGE}.{name}"] & later)


def test_control_the_checker_finds_a_function_local_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import thing\n")
    assert find_cycle(import_graph(pkg)) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.a"]
