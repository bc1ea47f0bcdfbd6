"""Plugins from other distributions: entry points in ``bneck.runtimes``, ``bneck.classifiers`` and
``bneck.export_formats`` are imported on the registries' first use, after the built-in entries, by
entry-point name; one that fails to import is one BneckWarning and bneck goes on.

The distributions are real ones, written by hand in ``tmp_path`` (a package beside its
``*.dist-info`` with METADATA and entry_points.txt), and found through PYTHONPATH by a fresh
Python process, as an installed plugin would be; nothing is trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bneck.core.errors import BneckWarning
from bneck.core.plugins import load_plugins, plugin_entry_points

pytestmark = pytest.mark.pure

BUILT_IN_FORMATS = ("keras", "savedmodel", "tflite", "onnx", "openvino")
PLUGIN_FORMATS = ("plugin-early", "plugin-keras")  # entry points "early" and "mykeras", by name

FORMATS = """
from bneck.pipeline.export.formats import keras
from bneck.pipeline.export.formats.registry import ExportFormat, register_format

PLUGIN_KERAS = register_format(ExportFormat("plugin-keras", "model.keras", keras.write, keras.runner))
"""
EARLY = """
from bneck.pipeline.export.formats import keras
from bneck.pipeline.export.formats.registry import ExportFormat, register_format

register_format(ExportFormat("plugin-early", "early.keras", keras.write, keras.runner))
"""
CLASSIFIERS = """
from sklearn.naive_bayes import GaussianNB

from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier

register_classifier(Classifier(name="plugin-bayes", kind="sklearn", description="Gaussian naive Bayes, a plugin",
                               factory=lambda seed, counts: GaussianNB()))
"""
RUNTIMES = """
from bneck.features.runtimes.registry import Runtime, register_runtime


def build(spec, context):
    raise NotImplementedError


register_runtime(Runtime(name="plugin-runtime", label="A plugin's runtime", build=build,
                         modules=("bneck_test_no_such_module",), install="pip install nothing"))
"""
ENTRY_POINTS = """[bneck.export_formats]
mykeras = bneck_test_plugin.formats
early = bneck_test_plugin.early

[bneck.classifiers]
bayes = bneck_test_plugin.classifiers

[bneck.runtimes]
runtime = bneck_test_plugin.runtimes
"""
# What a command sees: each registry's names, after the first lookup.
LISTING = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from bneck.pipeline.export.formats import get_format, keras, list_formats
    from bneck.pipeline.training.classifiers import list_classifiers
    from bneck.features.runtimes.registry import list_runtimes
    out = dict(formats=list_formats(), classifiers=[c.name for c in list_classifiers()],
               runtimes=[r["name"] for r in list_runtimes()])
    if "plugin-keras" in out["formats"]:
        out["reuses_keras"] = get_format("plugin-keras").write is keras.write
from bneck.core.errors import BneckWarning
out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, BneckWarning)]
print(json.dumps(out))
"""


def _distribution(root: Path, name: str, package: str, modules: dict, entry_points: str) -> Path:
    """Write the distribution ``name`` (its package and its dist-info) under ``root``; returns ``root``."""
    (root / package).mkdir(parents=True)
    for module, text in modules.items():
        (root / package / f"{module}.py").write_text(text)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> dict[str, Path]:
    """Two installs: a working plugin, and a plugin whose module raises on import."""
    good = _distribution(
        tmp_path_factory.mktemp("good"),
        "bneck-test-plugin",
        "bneck_test_plugin",
        {"__init__": "", "formats": FORMATS, "early": EARLY, "classifiers": CLASSIFIERS, "runtimes": RUNTIMES},
        ENTRY_POINTS,
    )
    broken = _distribution(
        tmp_path_factory.mktemp("broken"),
        "bneck-broken-plugin",
        "bneck_broken_plugin",
        {"__init__": 'raise RuntimeError("broken on purpose")\n'},
        "[bneck.export_formats]\nbroken = bneck_broken_plugin\n",
    )
    return dict(good=good, broken=broken)


def _run(args: list[str], *paths: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLUMNS="250", TF_CPP_MIN_LOG_LEVEL="3")
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _listing(*paths: Path, cwd: Path) -> dict:
    done = _run(["-c", LISTING], *paths, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_plugin_is_listed_after_the_built_in_entries(plugins, tmp_path):
    seen = _listing(plugins["good"], cwd=tmp_path)
    assert seen["formats"] == [*BUILT_IN_FORMATS, *PLUGIN_FORMATS]
    assert seen["reuses_keras"] is True
    assert seen["classifiers"][-1] == "plugin-bayes" and seen["classifiers"].count("plugin-bayes") == 1
    assert seen["runtimes"][-1] == "plugin-runtime"  # listed, unavailable here (its module is missing)
    assert seen["warnings"] == []

    done = _run(["-m", "bneck", "export", "--help"], plugins["good"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"one of: {', '.join(BUILT_IN_FORMATS + PLUGIN_FORMATS)} (default: keras)" in " ".join(done.stdout.split())
    assert "bneck: warning" not in done.stderr


def test_a_plugin_that_fails_to_import_is_one_warning_and_bneck_goes_on(plugins, tmp_path):
    seen = _listing(plugins["good"], plugins["broken"], cwd=tmp_path)
    assert seen["formats"] == [*BUILT_IN_FORMATS, *PLUGIN_FORMATS]
    assert len(seen["warnings"]) == 1
    for said in ("'bneck-broken-plugin'", "'broken'", "bneck_broken_plugin", "RuntimeError: broken on purpose"):
        assert said in seen["warnings"][0]

    done = _run(["-m", "bneck", "export", "--help"], plugins["good"], plugins["broken"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plugin-keras" in done.stdout
    said = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert len(said) == 1 and said[0].startswith("bneck: warning: plugin 'broken' "), done.stderr
    assert "bneck-broken-plugin" in said[0] and "RuntimeError: broken on purpose" in said[0]


def test_without_the_plugin_only_the_built_in_entries_are_listed(tmp_path):
    seen = _listing(cwd=tmp_path)
    assert seen["formats"] == list(BUILT_IN_FORMATS)
    assert not [n for names in (seen["classifiers"], seen["runtimes"]) for n in names if n.startswith("plugin-")]


def test_load_plugins_imports_a_group_once_by_name_and_skips_a_failing_one(tmp_path, monkeypatch):
    """In this process, under a group of its own: sorted by entry-point name, each imported once."""
    group = "bneck_test.group"
    root = _distribution(
        tmp_path,
        "bneck-test-order",
        "bneck_test_order",
        {
            "__init__": "",
            "first": "ORDER = []\n",
            "second": "import bneck_test_order.first\nbneck_test_order.first.ORDER.append('second')\n",
            "bad": "1 / 0\n",
        },
        f"[{group}]\nzz = bneck_test_order.second\naa = bneck_test_order.first\nmm = bneck_test_order.bad\n",
    )
    monkeypatch.syspath_prepend(str(root))
    assert [ep.name for ep in plugin_entry_points(group)] == ["aa", "mm", "zz"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_plugins(group) == ("aa", "zz")
        assert load_plugins(group) == ()  # once per process
    assert [w.category for w in caught] == [BneckWarning]
    assert "'mm'" in str(caught[0].message) and "ZeroDivisionError" in str(caught[0].message)
    for module in ("bneck_test_order.first", "bneck_test_order.second", "bneck_test_order.bad", "bneck_test_order"):
        sys.modules.pop(module, None)


def test_a_plugin_that_exits_on_import_is_skipped_with_a_warning(tmp_path, monkeypatch):
    """``raise SystemExit`` in a plugin's module would end the bneck command silently; it is skipped instead."""
    group = "bneck_test.exits"
    root = _distribution(
        tmp_path,
        "bneck-test-exit",
        "bneck_test_exit",
        {"__init__": "", "quits": "raise SystemExit(3)\n"},
        f"[{group}]\nquits = bneck_test_exit.quits\n",
    )
    monkeypatch.syspath_prepend(str(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_plugins(group) == ()
    assert [w.category for w in caught] == [BneckWarning] and "SystemExit" in str(caught[0].message)
    for module in ("bneck_test_exit.quits", "bneck_test_exit"):
        sys.modules.pop(module, None)
