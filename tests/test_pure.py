"""The pure tests need neither ../shared nor an optional extra: run them where neither exists."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_pure_tests_pass_without_the_shared_data_and_the_rest_say_why_they_skip(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BNECK_SHARED")}
    env["BNECK_SHARED"] = str(tmp_path / "no-shared")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/core",
            "tests/test_generated.py",
            "tests/features/images",
            "tests/pipeline/training/test_classifiers.py",
            "tests/pipeline/test_manifests.py",
            "tests/pipeline/test_reuse.py",
            "tests/pipeline/runner/test_config.py",
            "tests/test_layering.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    passed = int(out.rsplit(" passed", 1)[0].rsplit(None, 1)[-1])
    assert passed >= 40 and " skipped" in out and "needs ../shared" in out
    ci = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "tests/test_layering.py"],
        cwd=ROOT,
        env={**env, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ci.returncode != 0 and "CI runs every test" in ci.stdout + ci.stderr  # never skipped into green
