"""``cache verify --recompute`` on fine-tuning views stored at every precision: rounded views pass (they
differ from the network by their rounding), a forged view row does not."""

from __future__ import annotations

import hashlib
import os
import time

import h5py
import numpy as np
import pytest

from bneck.features import get_backbone
from bneck.features.backbones.feature_model import build_base, cut_model
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.cache.maintenance import list_entries
from bneck.features.cache.rows import chunk_files, write_rows_file
from bneck.features.cache.verify import recompute_sample
from bneck.features.images.decode import decode_image
from bneck.features.views.rows import VIEW_PRECISIONS, TrunkViews
from tests.conftest import MOBILENET, copy_subset

AUGMENT = {"rotation": 20, "shift": 0.1, "shear": 0.1, "zoom": 0.1, "flip": True}
LAYER = "conv_pw_5_relu"


@pytest.fixture(scope="module")
def views_cache(tmp_path_factory):
    """A cache holding views 0 and 1 of 4 real images at every view precision; (cache, data folder)."""
    root = tmp_path_factory.mktemp("verify_views")
    data = copy_subset(root / "data", 2, splits=("train",))
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    shas = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
    images = np.stack([decode_image(p, 224) for p in paths])
    backbone, spec = get_backbone("mobilenet"), resolve_spec(**MOBILENET)
    trunk = cut_model(build_base(backbone, spec), backbone, LAYER, "none")
    for precision in VIEW_PRECISIONS:
        views = TrunkViews(
            trunk, backbone.preprocess_fn(), spec, LAYER, "none", AUGMENT, 0, str(root / "cache"), verbose=False,
            precision=precision,
        )  # fmt: skip
        views.rows(images, shas, [0, 1])
    return root / "cache", data


def test_views_stored_at_every_precision_pass_recomputing(views_cache):
    cache, data = views_cache
    checks = recompute_sample(str(cache), [str(data)], n=4)
    assert len(checks) == 2 * len(VIEW_PRECISIONS)  # views 0 and 1 at each precision
    for check in checks:
        assert not check.skipped and check.checked == 4 and not check.differing, check
    dtype_of = {e.key: e.meta["dtype"] for e in list_entries(str(cache))}
    worst = dict.fromkeys(VIEW_PRECISIONS, 0.0)
    for check in checks:
        worst[dtype_of[check.key]] = max(worst[dtype_of[check.key]], check.worst)
    # each differs from the network by its rounding, and no more
    assert worst["float32"] < 1e-4 < worst["bfloat16"] <= 2.0**-8 + 1e-4 < worst["e8m5"] <= 2.0**-6 + 1e-4


def test_a_forged_e8m5_view_row_is_found(views_cache, tmp_path):
    import shutil

    cache, data = tmp_path / "cache", views_cache[1]
    shutil.copytree(views_cache[0], cache)
    (entry,) = [e for e in list_entries(str(cache)) if e.meta["dtype"] == "e8m5" and e.meta.get("augmentation")]
    (chunk,) = chunk_files(entry.folder)
    with h5py.File(chunk, "r") as f:
        shas = [s.decode() for s in f["sha256"][()]]
        rows = f["features"][()]
    rows[2] *= 1.03  # 3 %: more than the tolerance and e8m5's rounding (0.5 % + 1.6 %) together
    os.remove(chunk)
    write_rows_file(os.path.join(entry.folder, f"rows-{time.time_ns()}-forged.h5"), entry.key, shas, rows, shuffle=True)
    checks = recompute_sample(str(cache), [str(data)], n=4)
    flagged = [c for c in checks if c.differing]
    assert len(flagged) == 1 and flagged[0].differing == [shas[2]] and flagged[0].key == entry.key
