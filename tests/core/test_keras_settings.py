"""Keras' global settings never change bneck's numbers (issue 27): a keras.json saying float16 made rows
in float16 that were cached under the float32 key; channels_first read as a bad weights file; a
KERAS_BACKEND of jax was a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bneck.features import extract, read_features
from tests.conftest import ROOT

EXTRACT = """
import sys, json
from bneck.features import extract
extract(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], verbose=False, **json.loads(sys.argv[4]))
"""

SETTINGS = {
    "float16": ({"floatx": "float16"}, {}),
    "channels-first": ({"image_data_format": "channels_first"}, {}),
    "jax-in-keras-json": ({"backend": "jax"}, {}),
    "jax-in-env": ({}, {"KERAS_BACKEND": "jax"}),
    "all": ({"floatx": "float16", "image_data_format": "channels_first", "backend": "jax"}, {"KERAS_BACKEND": "jax"}),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_keras_settings_never_change_the_rows(tmp_path, tiny, tiny_data, setting):
    keras_json, env = SETTINGS[setting]
    home = tmp_path / "keras-home"
    home.mkdir()
    (home / "keras.json").write_text(
        json.dumps({"floatx": "float32", "image_data_format": "channels_last", **keras_json})
    )
    extract(str(tiny_data), str(tmp_path / "ref"), cache_dir=str(tmp_path / "c1"), verbose=False, **tiny)
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT, str(tiny_data), str(tmp_path / "odd"), str(tmp_path / "c2"), json.dumps(tiny)],
        env=dict(os.environ, PYTHONPATH=str(ROOT), KERAS_HOME=str(home), **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if setting != "jax-in-keras-json":  # the variable bneck sets wins over keras.json: nothing to set back
        assert "bneck computes features in float32, channels last" in done.stderr
    for split in ("train", "validation", "test"):
        ref, odd = (read_features(str(tmp_path / d / f"{split}.h5")) for d in ("ref", "odd"))
        assert odd.features.dtype == np.float32 and odd.paths == ref.paths
        np.testing.assert_allclose(odd.features, ref.features, rtol=1e-5, atol=1e-6)
