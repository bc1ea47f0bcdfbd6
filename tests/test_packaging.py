"""One import name: the distribution installs nothing but ``bneck``, and a user's own ``features.py`` or
``pipeline/`` beside their notebook can never shadow it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pure

DECOY = "raise SystemExit('bneck imported the user\\'s own {name}')\n"


def _tracked_files() -> list[str]:
    """The files a clean checkout holds: git's list where there is one, else the three code folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if listed.returncode == 0 and listed.stdout:
        return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]
    code = [p for folder in ("bneck", "features", "pipeline") for p in (ROOT / folder).rglob("*.py")]
    code.append(ROOT / "features" / "backbones" / "catalog.json")
    return [str(p.relative_to(ROOT)) for p in code] + ["pyproject.toml", "setup.py", "README.md"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the clean checkout (no build isolation: nothing is downloaded)."""
    source = tmp_path_factory.mktemp("checkout")
    for name in _tracked_files():
        if name.startswith(("features/", "pipeline/", "bneck/")) or "/" not in name:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("bneck-*.whl")
    return found


def test_the_wheel_holds_only_bneck_and_its_dist_info(wheel):
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert tops == {"bneck", next(t for t in tops if t.endswith(".dist-info"))}
    assert {
        "bneck/__init__.py",
        "bneck/core/errors.py",
        "bneck/features/extraction/stage.py",
        "bneck/pipeline/cli/__init__.py",
        "bneck/pipeline/training/stage.py",
        "bneck/features/backbones/catalog.json",  # package data: every backbone comes from it
    } <= names
    # every module of the repository's code folders is in it, under bneck/
    for folder in ("features", "pipeline"):
        for path in (ROOT / folder).rglob("*.py"):
            assert f"bneck/{folder}/{path.relative_to(ROOT / folder).as_posix()}" in names


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


@pytest.fixture
def notebook_folder(tmp_path) -> Path:
    """A user's folder with their own ``features.py`` and ``pipeline/`` package, each failing on import."""
    folder = tmp_path / "notebook"
    (folder / "pipeline").mkdir(parents=True)
    (folder / "features.py").write_text(DECOY.format(name="features.py"))
    (folder / "pipeline" / "__init__.py").write_text(DECOY.format(name="pipeline package"))
    return folder


def _env(installed: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(installed), PYTHONNOUSERSITE="1")


def test_import_bneck_from_a_folder_with_a_users_features_and_pipeline(installed, notebook_folder):
    code = (
        "import sys, bneck, bneck.pipeline.cli, bneck.features.extraction.stage, bneck.pipeline.runner.compose;"
        "assert bneck.__file__.startswith(sys.argv[1]), bneck.__file__;"
        "assert callable(bneck.extract) and callable(bneck.train) and callable(bneck.export);"
        "assert {'convnexttiny', 'efficientnetv2b0', 'mobilenetv3small'} <= set(bneck.BACKBONES), bneck.BACKBONES;"
        "assert not {'features', 'pipeline'} & set(sys.modules), sorted(sys.modules);"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(installed)],
        cwd=notebook_folder,
        env=_env(installed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_the_bneck_command_runs_from_a_folder_with_a_users_features_and_pipeline(installed, notebook_folder):
    for command in ([sys.executable, "-m", "bneck", "--version"], [str(installed / "bin" / "bneck"), "backbones"]):
        done = subprocess.run(
            command, cwd=notebook_folder, env=_env(installed), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "imported the user" not in done.stdout + done.stderr


def test_the_public_api_is_one_name_and_its_errors_are_one_tree():
    import bneck

    for name in ("extract", "read_features", "train", "finetune", "run", "predict", "evaluate", "export"):
        assert callable(getattr(bneck, name)), name
    assert isinstance(bneck.__version__, str)
    for name in bneck.__all__:  # every public name resolves (the lazy table has no stale path)
        assert getattr(bneck, name) is not None, name
    errors = [
        getattr(bneck, n) for n in bneck.__all__ if n.endswith(("Error", "Mismatch", "Refused", "Model", "Diverged"))
    ]
    assert len(errors) >= 15 and all(issubclass(e, bneck.BneckError) for e in errors)
    assert issubclass(bneck.ConfigError, ValueError)
    with pytest.raises(ValueError):  # an API caller's `except ValueError` catches a bad option
        bneck.extract("/nonexistent", "/tmp/out", backbone="vgg1")
    with pytest.raises(AttributeError):
        bneck.no_such_name  # noqa: B018


def test_every_error_class_of_the_library_is_reachable_from_bneck():
    import ast

    import bneck

    defined = set()
    for folder in ("features", "pipeline"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith(("Error", "Mismatch", "Refused", "Model", "Diverged"))
                    for b in node.bases
                ):
                    defined.add(node.name)
    defined.discard("NotRegularFile")  # an OSError bneck raises and catches itself, never a user's
    assert defined <= set(bneck.__all__), sorted(defined - set(bneck.__all__))
