"""Imports run one way, and no module of ours imports itself back around a cycle.

The layers (docs: DESIGN.md, "Layout"): ``capture`` and ``encoders`` import nothing of ours;
``policies`` imports ``capture`` and ``policies`` only; ``agent`` may import all four.

The graph is read from the source, not from ``sys.modules``: every ``import x`` and ``from x
import y`` statement in every ``.py`` file of the four packages, at module level or inside a
function alike (a late import is still a dependency). A package's ``__init__`` is a module of its
own (``agent.desktops``): ``from agent.desktops import Desktop`` is an edge to it, ``from
agent.cli import util`` an edge to ``agent.cli.util``. The parent packages Python runs on the way
(``import a.b.c`` runs ``a`` and ``a.b`` first) are not counted as edges: every submodule would
otherwise sit on a cycle with an ``__init__`` that re-exports from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("capture", "encoders", "policies", "agent")
# What each top-level package may import of ours, besides itself.
ALLOWED = {"capture": set(), "encoders": set(), "policies": {"capture"}, "agent": {"capture", "encoders", "policies"}}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of ours (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``agent.loop.Agent`` ->
    ``agent.loop``), or None for a name that is not ours."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(imported module of ours, line, the name as written) for every import statement in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one, else a name of pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = _known(name, modules)
            if target is not None and target != module:
                out.append((target, node.lineno, name))
    return out


def _graph() -> tuple[dict[str, Path], dict[str, dict[str, tuple[int, str]]]]:
    """Modules, and module -> {imported module: (first line importing it, the name written there)}."""
    modules = _modules()
    graph: dict[str, dict[str, tuple[int, str]]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for target, line, written in _imports(module, path, modules):
            edges.setdefault(target, (line, written))
    return modules, graph


def _where(modules: dict[str, Path], module: str, line: int) -> str:
    return f"{modules[module].relative_to(ROOT)}:{line}"


def upward_imports() -> list[str]:
    """One line per import that breaks the layers, as ``file:line: a imports b``."""
    modules, graph = _graph()
    bad = []
    for module, edges in graph.items():
        top = module.split(".")[0]
        for target, (line, written) in sorted(edges.items()):
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{_where(modules, module, line)}: {module} imports {written}")
    return bad


def cycles(graph: dict[str, dict] | None = None) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan) of ``graph`` (default: ours),
    each as one cycle through its first module: ``[a, b, ..., a]``."""
    if graph is None:
        graph = _graph()[1]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(comp, graph) for comp in sorted(components)]


def _cycle_through(comp: list[str], graph: dict[str, dict[str, tuple[int, str]]]) -> list[str]:
    """A shortest path from ``comp[0]`` back to itself inside the component (breadth first)."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp  # not reached: a component of two or more always holds a cycle


def _describe(cycle: list[str]) -> str:
    modules, graph = _graph()
    hops = [f"{a} -> {b} ({_where(modules, a, graph[a][b][0])})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n    ".join(hops)


def test_the_graph_sees_late_and_relative_imports():
    """The walk finds function-level imports and resolves ``from pkg import submodule``."""
    modules, graph = _graph()
    assert "agent.loop" in modules and "agent.desktops" in modules
    assert "agent.desktops" in graph["agent.loop"]  # from agent.desktops import ... (module level)
    # agent.sessions.demos imports the loop inside record_demo only
    assert "agent.loop" in graph["agent.sessions.demos"]
    assert "agent.cli.util" in graph["agent.cli.commands.demos"]  # from agent.cli import util


def test_the_cycle_finder():
    g = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"d": 1}, "f": {"g": 1}, "g": {"f": 1}}
    assert cycles(g) == [["a", "b", "c", "a"], ["f", "g", "f"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_imports_run_one_way():
    bad = upward_imports()
    assert not bad, (f"{len(bad)} import(s) against the layers (capture, encoders: nothing of ours; "
                     "policies: capture and policies; agent: all):\n  " + "\n  ".join(bad))


def test_no_import_cycles():
    found = cycles()
    assert not found, f"{len(found)} import cycle(s) among our modules:\n  " + "\n  ".join(
        " -> ".join(c) + "\n    " + _describe(c) for c in found)
