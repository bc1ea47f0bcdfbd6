"""--engine ray (extract and train) pointed at an address nothing answers at: refused in seconds, before
work, with bneck's paragraph (issue 28's attack: `train --engine ray --address 127.0.0.1:1` waited for
minutes on Ray's own retries)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bneck.core.errors import ConfigError
from bneck.features import extract
from tests.conftest import ROOT
from tests.generated import make_images

pytestmark = pytest.mark.extra("ray")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "nohost.invalid:6379", "127.0.0.1:99999"])
def test_an_address_nothing_answers_at_is_refused_in_seconds_before_work(tiny, tmp_path, address):
    from bneck.pipeline import train

    data = make_images(tmp_path / "data", 6)
    extract(data, tmp_path / "features", cache_dir=tmp_path / "c", verbose=False, **tiny)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="cannot join the Ray cluster at --address") as err:
        train(tmp_path / "features", ["logreg"], tmp_path / "m", search="validation", engine="ray", address=address)
    assert "RAY_AUTH_MODE" in str(err.value) and not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="cannot join the Ray cluster at --address"):
        extract(data, tmp_path / "ray", cache_dir=tmp_path / "c2", engine="ray", address=address, verbose=False, **tiny)
    assert not (tmp_path / "ray").exists() and time.monotonic() - start < 60
    cli = subprocess.run(
        [sys.executable, "-m", "bneck", "train", str(tmp_path / "features"), "--classifier", "logreg", "--search",
         "validation", "--engine", "ray", "--address", address, "--out", str(tmp_path / "m2")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 2 and "cannot join the Ray cluster" in cli.stderr and "Traceback" not in cli.stderr
