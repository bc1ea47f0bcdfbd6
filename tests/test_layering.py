"""The house rule: pipeline imports features, never the reverse; modules stay small."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_features_never_imports_pipeline():
    offenders = [p.name for p in (ROOT / "features").glob("*.py") if "pipeline" in _imports(p)]
    assert offenders == []


def test_modules_stay_small():
    big = [(p.name, n) for pkg in ("features", "pipeline") for p in (ROOT / pkg).glob("*.py")
           if (n := len(p.read_text().splitlines())) > 400]
    assert big == []
