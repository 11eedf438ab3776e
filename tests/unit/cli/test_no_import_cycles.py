"""No import cycles among the project's modules in services/ and in shared/.

Every module under services/ and shared/ is parsed with :mod:`ast` (nothing is imported) and
every import statement counts, at module level or inside a function. An edge goes from a module
to each project module (services.*, shared.*, plugins.*) it imports: ``import a.b.c`` and
``from a.b import c`` name the module ``a.b.c`` (or the package ``a.b`` when ``c`` is a name in
it), and also the packages ``a`` and ``a.b`` whose ``__init__`` the import runs, unless the
importer lives inside them (its own packages are already being imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROJECT = ("services", "shared", "plugins")
SCANNED = ("services", "shared")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every module of the project."""
    found = {}
    for top in PROJECT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest prefix of ``name`` that is a project module (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path, is_package: bool, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importer's package, one level up per extra dot
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        for name in names:
            if name.split(".")[0] not in PROJECT:
                continue
            target = _known(name, modules)
            if target is None:
                continue
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):  # the packages the import runs, then the module
                step = ".".join(parts[:depth])
                if step in modules and step != module and not module.startswith(step + "."):
                    targets.add(step)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, is_package, modules)
            for name, (path, is_package) in modules.items() if name.split(".")[0] in SCANNED}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component has one


@pytest.mark.parametrize("package", SCANNED)
def test_no_import_cycle(package: str) -> None:
    found = [cycle for cycle in cycles(import_graph()) if any(m.split(".")[0] == package for m in cycle)]
    assert not found, f"import cycles involving {package}/:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_sees_imports_and_cycles() -> None:
    graph = import_graph()
    assert "services.distributed_cli" in graph["services.cli"]
    assert "services.planner" in graph["services.distributed_cli"]  # imported inside a function
    assert "shared.document" in graph["services.job_input"]  # a package, by `from shared.document import ...`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
