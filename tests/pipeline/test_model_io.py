"""The fixed type lists of ``model_io`` cover every model bneck makes, and nothing else gets through."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest

from bneck.pipeline.model_io import UnsafeModel, check_keras, load_sklearn, save_sklearn
from bneck.pipeline.training.classifiers import ClassifierNames
from bneck.pipeline.training.heads import build_head
from bneck.pipeline.training.sklearn_models import StreamedLinear, build_sklearn

pytestmark = pytest.mark.pure


def _data(classes=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(120, 3, 3, 20)).astype(np.float32), rng.integers(0, classes, 120)


@pytest.mark.parametrize("name", list(ClassifierNames("sklearn")))
@pytest.mark.parametrize("reshape,pca", [("avg", None), ("flatten", 8)])
def test_every_sklearn_classifier_round_trips_through_skops(tmp_path, name, reshape, pca):
    x, y = _data()
    model = build_sklearn(name, reshape, pca, 0).fit(x, y)
    save_sklearn(model, str(tmp_path / "m.skops"))  # raises if it holds a type loading would refuse
    loaded = load_sklearn((tmp_path / "m.skops").read_bytes(), "m.skops")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize("name", ["logreg", "linear-svm", "mlp"])
def test_out_of_core_models_round_trip_through_skops(tmp_path, name):
    x, y = _data()
    model = StreamedLinear(name, passes=2).fit_blocks(lambda rng: iter([(x[:60], y[:60]), (x[60:], y[60:])]), range(3))
    save_sklearn(model, str(tmp_path / "m.skops"))
    loaded = load_sklearn((tmp_path / "m.skops").read_bytes(), "m.skops")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def _as_saved_by_0_2(data: bytes, module: str = "pipeline.training.sklearn_models") -> bytes:
    """Return skops ``data`` with bneck's own types named as bneck 0.2 wrote them (``module.Class``)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = members["schema.json"].decode()
    assert '"bneck.pipeline.training.sklearn_models"' in schema  # the model holds one of bneck's own types
    members["schema.json"] = schema.replace('"bneck.pipeline.training.sklearn_models"', json.dumps(module)).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, member in members.items():
            archive.writestr(name, member)
    return out.getvalue()


@pytest.mark.parametrize("name", ["logreg", "svm"])
def test_a_model_saved_by_the_previous_release_loads_without_importing_a_pipeline_package(tmp_path, name, monkeypatch):
    """bneck 0.2 wrote ``pipeline.training.sklearn_models.*`` into every skops file. Such a file loads as
    today's types, and a ``pipeline`` package a user keeps on sys.path is never imported for it."""
    import sys

    x, y = _data()
    model = build_sklearn(name, "flatten", 8, 0).fit(x, y)
    save_sklearn(model, str(tmp_path / "m.skops"))
    old = _as_saved_by_0_2((tmp_path / "m.skops").read_bytes())
    decoy = tmp_path / "user" / "pipeline" / "training"
    decoy.mkdir(parents=True)
    for folder in (decoy.parent, decoy):
        (folder / "__init__.py").write_text("raise SystemExit('the user pipeline package was imported')\n")
    (decoy / "sklearn_models.py").write_text("raise SystemExit('the user module was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    loaded = load_sklearn(old, "old.skops")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert "pipeline" not in sys.modules


def test_an_old_type_path_is_still_checked_against_the_trusted_list(tmp_path):
    """The alias moves a 0.2 path under ``bneck.``; it does not trust it: a type bneck never had is refused."""
    x, y = _data()
    save_sklearn(build_sklearn("logreg", "flatten", 8, 0).fit(x, y), str(tmp_path / "m.skops"))
    forged = _as_saved_by_0_2((tmp_path / "m.skops").read_bytes(), module="pipeline.training.evil")
    with pytest.raises(UnsafeModel, match="bneck.pipeline.training.evil"):
        load_sklearn(forged, "forged.skops")


def _archive(model) -> bytes:
    """Return the bytes of ``model`` saved as a .keras archive."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        with open(path, "rb") as handle:
            return handle.read()


def test_every_head_passes_the_keras_check():
    for kind in ("dense", "gap-dense"):
        for classes in (2, 5):
            check_keras(_archive(build_head(kind, (3, 3, 8), classes, 4, 0.5)), kind)


def test_a_zip_bomb_in_a_file_of_the_previous_release_is_refused_before_it_is_inflated(tmp_path):
    """The 0.2 alias reads every member to rewrite the archive: one that inflates a thousandfold is refused."""
    import io
    import zipfile

    x, y = _data()
    save_sklearn(build_sklearn("logreg", "flatten", 8, 0).fit(x, y), str(tmp_path / "m.skops"))
    old = _as_saved_by_0_2((tmp_path / "m.skops").read_bytes())
    out = io.BytesIO(old)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.npy", bytes(64 << 20))  # 64 MiB of zeros, about 64 KB stored
    assert len(out.getvalue()) < 1 << 20
    with pytest.raises(UnsafeModel, match="zip bomb"):
        load_sklearn(out.getvalue(), "bomb.skops")


def test_one_path_given_as_a_string_is_one_path(tmp_path):
    """``bneck.predict(model, "photos")`` classifies that folder: it never reads "/" as a folder of its own."""
    from bneck.pipeline.predict import _expand

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    assert _expand(str(tmp_path / "photos")) == [(str(tmp_path / "photos" / "a.jpg"), None)]
    assert _expand(tmp_path / "photos" / "a.jpg") == [(str(tmp_path / "photos" / "a.jpg"), None)]


@pytest.mark.parametrize("member", ["padding.npy", "schema.json"])
@pytest.mark.parametrize("saved_by", ["today", "0.2"])
def test_a_zip_bomb_in_any_skops_file_is_refused_before_it_is_inflated(tmp_path, member, saved_by):
    """Issue 27: a current skops file padded with spaces (1 MB on disk, 1 GiB inflated, re-signed) loaded
    at 2.28 GB; the zip guard now holds for every archive, of this release and the previous one."""
    import io
    import zipfile

    x, y = _data()
    save_sklearn(build_sklearn("logreg", "flatten", 8, 0).fit(x, y), str(tmp_path / "m.skops"))
    data = (tmp_path / "m.skops").read_bytes()
    data = _as_saved_by_0_2(data) if saved_by == "0.2" else data
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == member:
                body += b" " * (96 << 20)  # JSON and npy readers skip trailing spaces: ~96 KB stored
            archive.writestr(info.filename, body)
        if member not in source.namelist():
            archive.writestr(member, b" " * (96 << 20))
    assert len(out.getvalue()) < 1 << 20
    with pytest.raises(UnsafeModel, match="zip bomb|would inflate"):
        load_sklearn(out.getvalue(), "bomb.skops")
