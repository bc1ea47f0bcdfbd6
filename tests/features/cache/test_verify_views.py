"""``cache verify --recompute`` on fine-tuning views stored at every precision: rounded views pass (they
differ from the network by their rounding), a forged view row does not."""

from __future__ import annotations

import hashlib
import json
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
from bneck.features.cache.verify import recompute_sample, verify_cache
from bneck.features.featurefile.storage import round_rows
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
    # once each value's rounding is set aside, every precision is what the network computes
    assert all(w < 1e-4 for w in worst.values()), worst


def test_a_forged_e8m5_view_row_is_found(views_cache, tmp_path):
    import shutil

    cache, data = tmp_path / "cache", views_cache[1]
    shutil.copytree(views_cache[0], cache)
    (entry,) = [e for e in list_entries(str(cache)) if e.meta["dtype"] == "e8m5" and e.meta.get("augmentation")]
    (chunk,) = chunk_files(entry.folder)
    with h5py.File(chunk, "r") as f:
        shas = [s.decode() for s in f["sha256"][()]]
        rows = f["features"][()]
    rows[2] = round_rows(rows[2] * 1.03, "e8m5")  # 3 %, on the e8m5 grid: beyond its rounding (1.6 %) + 0.5 %
    os.remove(chunk)
    write_rows_file(os.path.join(entry.folder, f"rows-{time.time_ns()}-forged.h5"), entry.key, shas, rows, shuffle=True)
    checks = recompute_sample(str(cache), [str(data)], n=4)
    flagged = [c for c in checks if c.differing]
    assert len(flagged) == 1 and flagged[0].differing == [shas[2]] and flagged[0].key == entry.key


def _forge(entry, change) -> list[str]:
    """Rewrite ``entry``'s one chunk with ``change(rows)``, checksums valid; returns its image hashes."""
    (chunk,) = chunk_files(entry.folder)
    with h5py.File(chunk, "r") as f:
        shas = [s.decode() for s in f["sha256"][()]]
        rows = f["features"][()]
    os.remove(chunk)
    name = f"rows-{time.time_ns()}-forged.h5"
    write_rows_file(os.path.join(entry.folder, name), entry.key, shas, change(rows), shuffle=True)
    return shas


def _e8m5_view(cache):
    return next(e for e in list_entries(str(cache)) if e.meta["dtype"] == "e8m5" and e.meta.get("augmentation"))


def test_a_small_forgery_of_every_value_is_found_once_the_rounding_is_set_aside(views_cache, tmp_path):
    """The rounding an entry's dtype allows is each value's own (2**-6 of it for e8m5), not a share of the row's
    largest: 0.8 % of the row's largest added to every value (zeros included) is found."""
    import shutil

    cache, data = tmp_path / "cache", views_cache[1]
    shutil.copytree(views_cache[0], cache)
    entry = _e8m5_view(cache)
    _forge(entry, lambda rows: round_rows(rows + 0.008 * np.abs(rows).max(axis=(1, 2, 3), keepdims=True), "e8m5"))
    (check,) = [c for c in recompute_sample(str(cache), [str(data)], n=4) if c.key == entry.key]
    assert len(check.differing) == 4 and check.worst > 0.005


def test_rows_an_e8m5_entry_never_stores_are_a_damaged_chunk_everywhere(views_cache, tmp_path, capsys):
    """Unrounded values (valid checksums) in an e8m5 entry: `cache verify` names the chunk, reading views
    for a fine-tune is one paragraph (FeatureFileError), `--recompute` skips the entry saying why, and
    `cache gc` drops the chunk."""
    import shutil

    from bneck.features import FeatureFileError
    from bneck.pipeline.cli import main

    cache, data = tmp_path / "cache", views_cache[1]
    shutil.copytree(views_cache[0], cache)
    entry = _e8m5_view(cache)
    shas = _forge(entry, lambda rows: rows * np.float32(1.0001))  # off the e8m5 grid, every value
    checked, problems = verify_cache(str(cache))
    assert [p for p, why in problems if "not e8m5 numbers" in why] == chunk_files(entry.folder)
    spec = resolve_spec(**MOBILENET)
    views = TrunkViews(None, None, spec, LAYER, "none", AUGMENT, 0, str(cache), verbose=False, precision="e8m5")
    view = json.loads(entry.meta["augmentation"])["view"]
    with pytest.raises(FeatureFileError, match="is damaged .* not the rounded numbers its entry stores"):
        views.read(None, shas, view, lambda *_: None)
    (check,) = [c for c in recompute_sample(str(cache), [str(data)], n=4) if c.key == entry.key]
    assert check.skipped and "damaged" in check.skipped and "bneck cache gc" in check.skipped
    assert main(["cache", "gc", "--cache-dir", str(cache)]) == 0
    assert chunk_files(entry.folder) == [] and verify_cache(str(cache))[1] == []


@pytest.mark.parametrize("dtype", [["e8m5"], {"e8m5": 1}, 5, None])
def test_a_meta_json_dtype_of_any_json_type_is_no_traceback(views_cache, tmp_path, capsys, dtype):
    import shutil

    from bneck.pipeline.cli import main

    cache, data = tmp_path / "cache", views_cache[1]
    shutil.copytree(views_cache[0], cache)
    meta = os.path.join(_e8m5_view(cache).folder, "meta.json")
    record = json.loads(open(meta).read())
    record["dtype"] = dtype
    with open(meta, "w") as handle:
        json.dump(record, handle)
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert main(["cache", "verify", "--cache-dir", str(cache), "--recompute", "1", "--data", str(data)]) == 0
    assert main(["cache", "gc", "--cache-dir", str(cache)]) == 0
    assert "Traceback" not in capsys.readouterr().err
