"""The house rules: pipeline imports features, never the reverse; no import circle anywhere, inside a
package or across; modules stay small; no module sets attributes on another module's private object."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> the installed package it becomes (pyproject.toml's package-dir)
FOLDERS = {"bneck": "bneck", "features": "bneck.features", "pipeline": "bneck.pipeline"}
PACKAGES = tuple(FOLDERS.values())


def _modules() -> dict[str, Path]:
    """Return {dotted module name: path} of every module of the installed packages."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Return the project modules ``name`` imports anywhere in its body (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name imported from a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_free(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges into a package's ``__init__`` from inside it (re-exports of the public
    API sit there and import the package's own modules by design)."""
    return {
        name: {t for t in targets if not (name.startswith(t + ".") and t in PACKAGES + ("bneck.pipeline.cli",))}
        for name, targets in graph.items()
    }


def test_the_import_graph_is_read_from_real_modules():
    graph = _graph()
    assert "bneck.features.runtimes.extractor" in graph["bneck.features.extraction.ray_engine"]
    assert "bneck.pipeline.training.stage" in graph["bneck.pipeline.runner.compose"]


def test_features_never_imports_pipeline():
    offenders = {
        name: sorted(t for t in targets if t.startswith("bneck.pipeline"))
        for name, targets in _graph().items()
        if name.startswith("bneck.features")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_shared_plumbing_imports_neither_stage():
    """bneck.core (errors, option tables, atomic writes, hashing, folders, progress) sits under both halves."""
    offenders = {
        name: sorted(t for t in targets if t.startswith(("bneck.features", "bneck.pipeline")))
        for name, targets in _graph().items()
        if name.startswith("bneck.core")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_folder_holds_more_than_15_modules():
    crowded = {}
    for folder in ("bneck", "features", "pipeline"):
        for path in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            modules = [m for m in path.glob("*.py") if m.name != "__init__.py"]
            if len(modules) > 15:
                crowded[str(path.relative_to(ROOT))] = len(modules)
    assert crowded == {}


def test_no_import_circle_anywhere():
    assert _cycles(_package_free(_graph())) == []


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_stay_small():
    big = [(str(p.relative_to(ROOT)), n) for p in _modules().values() if (n := len(p.read_text().splitlines())) > 400]
    assert big == []


def test_functions_stay_short():
    """A function that passes 60 lines is two steps: name them."""
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []


def test_no_module_sets_attributes_on_another_objects_private_parts():
    """``x._name = ...`` is only ever written by ``x``'s own class (``self``)."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr.startswith("_")
                    and not target.attr.startswith("__")
                    and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))
                ):
                    offenders.append(f"{name}:{node.lineno} {ast.unparse(target)}")
    assert offenders == []
