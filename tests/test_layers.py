"""The package's layers, read from its source: arrows point inward (cli -> service -> adapters -> core), the core
imports no I/O module, and no two modules import each other at load time (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "reconciler"
LAYERS = ["core", "adapters", "service", "cli"]  # each may import only from those before it (and itself)
SHARED = {"reconciler", "reconciler.errors", "reconciler.redact"}  # the error hierarchy and the redactor: every layer
IO_MODULES = {"os", "subprocess", "socket", "shutil", "tempfile", "fcntl", "signal", "threading", "httpx",
              "kubernetes", "urllib.request", "http.client"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, *, load_time_only: bool = False) -> set[str]:
    """Every module this one imports: absolute names, relative ones resolved, lazy ones included unless asked."""
    tree = ast.parse(path.read_text("utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if load_time_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return out


MODULES = _modules()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_imports_point_inward(module):
    mine = LAYERS.index(_layer(module))
    wrong = sorted(target for target in _imports(module, MODULES[module]) if target.startswith("reconciler.")
                   and _layer(target) and LAYERS.index(_layer(target)) > mine)
    assert not wrong, f"{module} ({LAYERS[mine]}) imports outward: {wrong}"


def test_the_core_imports_no_io():
    found = {module: sorted(t for t in _imports(module, path) if t in IO_MODULES or t.split(".")[0] in IO_MODULES)
             for module, path in MODULES.items() if _layer(module) == "core"}
    assert {m: io for m, io in found.items() if io} == {}
    assert len(found) >= 15  # the core is really being read


def test_the_shared_modules_import_no_layer():
    for module in SHARED - {"reconciler"}:
        assert not [t for t in _imports(module, MODULES[module]) if _layer(t)], module


def test_no_import_cycle_at_load_time():
    graph = {m: {t for t in _imports(m, p, load_time_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    for m in graph:  # a package's __init__ is loaded with its modules: not an edge of its own
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for t in sorted(graph[m]):
            assert seen.get(t) != 1, "import cycle: " + " -> ".join(path[path.index(t):] + [t]) if t in path else t
            if t not in seen:
                visit(t, path + [t])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
    assert len(seen) == len(MODULES)


def test_each_kind_is_one_module_of_the_core():
    kinds = sorted(m.rpartition(".")[2] for m in MODULES if m.startswith("reconciler.core.kinds."))
    assert kinds == ["keys", "teams", "users"]
