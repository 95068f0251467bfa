"""The package's shape: no import cycle, layers that do not reach up, modules of a readable size.

The import graph is read from the source (``ast``): every ``import`` / ``from ... import`` of a
``polythrottle`` module, at module level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "polythrottle"
MAX_LINES = 420
"""No module over ~400 lines (#16); a little slack for docstrings."""

LAYERS: dict[str, tuple[str, ...]] = {
    # package prefix: what it must not import (the layer it sits under knows nothing of them)
    "polythrottle.optim": ("polythrottle.devices", "polythrottle.measure", "polythrottle.clocks", "polythrottle.energy",
                           "polythrottle.daemon", "polythrottle.cli", "polythrottle.history", "polythrottle.tuning",
                           "polythrottle.workloads", "polythrottle.boards", "polythrottle.twin"),
    "polythrottle.devices": ("polythrottle.optim", "polythrottle.tuning", "polythrottle.daemon", "polythrottle.cli",
                             "polythrottle.history"),
    "polythrottle.clocks": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.energy": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.measure": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.workloads": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.boards": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.twin": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.history": ("polythrottle.devices", "polythrottle.optim", "polythrottle.daemon", "polythrottle.cli",
                             "polythrottle.tuning"),
    "polythrottle.tuning": ("polythrottle.daemon", "polythrottle.cli"),
    "polythrottle.daemon": ("polythrottle.cli",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``polythrottle`` modules ``path`` imports (a ``from pkg import name`` of a submodule counts as it)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("polythrottle")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("polythrottle"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    found = cycles(_without_package_faces(graph()))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def _without_package_faces(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges into a package's ``__init__`` from its own submodules are dropped: a submodule importing a
    sibling through the package name is the same dependency as importing the sibling."""
    out = {}
    for name, deps in g.items():
        out[name] = {d for d in deps if not name.startswith(d + ".")}
    return out


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_do_not_reach_up(layer: str) -> None:
    g = graph()
    bad = sorted(f"{m} -> {d}" for m, deps in g.items() if m == layer or m.startswith(layer + ".")
                 for d in deps if any(d == f or d.startswith(f + ".") for f in LAYERS[layer]))
    assert not bad, f"{layer} must not import: " + ", ".join(bad)


def test_no_module_is_too_long() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{k} ({v})" for k, v in sorted(long.items()))
