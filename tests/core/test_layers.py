"""The package's layering, checked from the source: nothing imports upward, no cycles.

Every import statement of every module counts, those inside functions too (a lazy import is
still a dependency). Layers, lowest first; a package may import its own modules and the
packages of lower layers only:

    errors <- util <- domain <- inventory, backend <- hosts, rootfs <- render <- images
      <- nesting <- converge <- create, handoff <- admin <- snapshots, machines <- cli <- __main__

backend is the only package that imports libvirt.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "virtmix"

LAYERS: list[set[str]] = [
    {"errors"},
    {"util"},
    {"domain"},  # pure: one row per setting and the XML element readers (inventory uses them)
    {"inventory", "backend"},
    {"hosts", "rootfs"},  # rootfs applies the inventory's rules (inventory.rules)
    {"render"},
    {"images"},
    {"nesting"},
    {"converge"},
    {"create", "handoff"},
    {"admin"},
    {"snapshots", "machines"},  # snapshots/backups, metrics/watch of what the verbs find
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[str]:
    """Every module name an import statement of this file names (absolute imports)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package uses absolute ones)"
            assert node.module is not None
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found = [s for s in subs if s in MODULES]
            names += found if len(found) == len(subs) else [node.module, *found]
    return names


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "virtmix" and len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES} - {None}
    assert packages <= set(RANK), f"add to LAYERS: {sorted(packages - set(RANK))}"


def test_nothing_imports_upward():
    wrong = []
    for module, path in MODULES.items():
        own = _package(module)
        if own is None:
            continue  # virtmix/__init__.py: a docstring and the version
        for name in _imports(path):
            other = _package(name)
            if other is None or other == own:
                continue
            if RANK[other] >= RANK[own]:
                wrong.append(f"{module} imports {name} ({own} may not import {other})")
    assert not wrong, "\n".join(wrong)


def test_only_the_backend_imports_libvirt():
    users = [m for m, p in MODULES.items()
             if any(n.split(".")[0] == "libvirt" for n in _imports(p))]
    assert users and all(_package(m) == "backend" for m in users), users


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_packages_or_modules():
    packages: dict[str, set[str]] = defaultdict(set)
    modules: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name in _imports(path):
            if name not in MODULES or name == module:
                continue
            if module.startswith(name + "."):
                continue  # a package's own __init__ runs before its modules anyway
            modules[module].add(name)
            mine, theirs = _package(module), _package(name)
            if mine and theirs and mine != theirs:
                packages[mine].add(theirs)
    assert _cycles(packages) == []
    assert _cycles(modules) == []


@pytest.mark.parametrize("source, found", [
    ("from virtmix.render.views import X", ["virtmix.render.views"]),
    ("from virtmix.images import keys", ["virtmix.images.keys"]),
    ("def f():\n    import libvirt", ["libvirt"]),
])
def test_the_import_reader_sees_lazy_and_submodule_imports(tmp_path, source, found):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(path) == found
