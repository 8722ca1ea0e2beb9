"""Layering of the package: no import cycles, and the attribution engine free of Lightning, Hydra and the layers
built on it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "faig_lightning"
ENGINE_MAY_NOT_IMPORT = ("faig_lightning.callbacks", "faig_lightning.sweeps", "faig_lightning.train",
                         "faig_lightning.module", "faig_lightning.cli", "faig_lightning.attribute",
                         "faig_lightning.loggers", "faig_lightning.config")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere: at import time, inside functions (deferred for start-up) and
    under ``if TYPE_CHECKING`` (a cycle hidden there is still a cycle of the design)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` needs the submodule only; ``from pkg import name`` needs pkg itself
            edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {e for e in edges if e in known and e != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: module_imports(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_import_is_an_edge(tmp_path):
    pkg = tmp_path / "faig_lightning"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom faig_lightning.c import x\nimport os\n"
                                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    import faig_lightning.d\ndef f():\n    from ..e import y\n")
    known = {"faig_lightning.sub", "faig_lightning.sub.b", "faig_lightning.c", "faig_lightning.d", "faig_lightning.e"}
    assert module_imports("faig_lightning.sub.a", pkg / "sub" / "a.py", known) == known - {"faig_lightning.sub"}


def test_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and any(graph.values())  # the walk sees the package and its imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_engine_imports_no_layer_above_it():
    graph = import_graph()
    wrong = {(m, e) for m, edges in graph.items() if m.startswith("faig_lightning.attribution") for e in edges
             if e.startswith(ENGINE_MAY_NOT_IMPORT)}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("package", ["faig_lightning.attribution"])
def test_engine_modules_import_without_lightning_or_hydra(package):
    """Every module of the engine, each imported for real (a lazy package alone imports nothing)."""
    code = ("import importlib, pkgutil, sys, json\n"
            f"import {package} as p\n"
            "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'): importlib.import_module(m.name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    top = set(json.loads(out.strip().splitlines()[-1]))
    assert "torch" in top  # the modules were imported
    assert not top & {"pytorch_lightning", "lightning", "hydra", "omegaconf"}, top
