"""Out-of-domain flags: the recorded calibration, checked against direct computations, and real images of
another domain flagged by `bneck predict` (MobileNet-0.25, real weights)."""

from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from bneck import train
from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.domain import DOMAIN_FILE, QUANTILE, calibrate, pooled, read_domain
from bneck.pipeline.reuse import records_its_domain
from tests.conftest import MOBILENET, SHARED


def _brute_force_scores(vectors, labels, n_classes):
    """Each vector's leave-one-out score, centroids recomputed without it from scratch."""
    out = []
    for i in range(len(vectors)):
        keep = np.arange(len(vectors)) != i
        best = -np.inf
        for c in range(n_classes):
            members = vectors[keep & (labels == c)]
            if len(members):
                centre = members.sum(axis=0)
                best = max(best, float(vectors[i] @ (centre / np.linalg.norm(centre))))
        out.append(1 - best)
    return np.array(out)


@pytest.mark.pure
@pytest.mark.parametrize("seed", range(6))
def test_the_threshold_is_the_quantile_of_leave_one_out_scores(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    labels = rng.integers(0, n_classes, size=int(rng.integers(20, 90)))
    maps = rng.normal(size=(len(labels), 3, 3, 8)) + 2 * rng.normal(size=(n_classes, 1, 1, 8))[labels]
    domain = calibrate(maps, labels, n_classes)
    expected = _brute_force_scores(pooled(maps), labels, n_classes)
    assert domain.threshold == pytest.approx(float(np.quantile(expected, QUANTILE, method="higher")), abs=1e-9)
    assert np.mean(expected > domain.threshold + 1e-9) <= 1 - QUANTILE
    vectors = pooled(rng.normal(size=(7, 8)))  # the score of any vector: 1 - its best cosine with a centroid
    direct = [1 - max(v @ c / np.linalg.norm(c) for c in domain.centroids) for v in vectors]
    assert np.allclose(domain.scores(vectors), direct)
    again = read_domain({DOMAIN_FILE: json.dumps(domain.to_json()).encode()})
    assert np.allclose(again.centroids, domain.centroids, atol=1e-6) and again.threshold == domain.threshold


@pytest.mark.pure
@pytest.mark.parametrize(
    "change", [{"centroids": [[float("nan"), 1.0]]}, {"centroids": []}, {"threshold": 3.0}, {"quantile": 0}]
)
def test_a_domain_record_bneck_could_not_have_written_is_refused(change):
    record = {"centroids": [[1.0, 0.0]], "threshold": 0.2, "quantile": 0.99, **change}
    with pytest.raises(ValueError):
        read_domain({DOMAIN_FILE: json.dumps(record).encode()})
    assert read_domain({}) is None and calibrate(np.ones((3, 4)), np.array([0, 1, 2]), 3) is None


@pytest.mark.pure
def test_a_folder_made_without_its_domain_is_made_again():
    old = SimpleNamespace(feature_files={"train": 1, "validation": 2}, artifacts={"model.skops": "x"})
    assert "records no domain" in records_its_domain(old)
    recorded = SimpleNamespace(feature_files={"train": 1, "validation": 2}, artifacts={DOMAIN_FILE: "y"})
    assert records_its_domain(recorded) is None
    assert records_its_domain(SimpleNamespace(images={"train": 5}, artifacts={})) is None  # nothing to calibrate on


@pytest.fixture(scope="module")
def logreg_and_images(features_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    train(str(features_dir), ["logreg"], str(root / "models"), verbose=False)
    images = root / "images"
    own = sorted((features_dir.parent / "data" / "test").glob("*/*.jpg"))[::4]  # 20 unseen cats and dogs
    foreign = [sorted(c.glob("*.jpg"))[0] for c in sorted((SHARED / "data" / "blood_cells_small").iterdir())]
    for i, path in enumerate(own + foreign):
        kind = "own" if i < len(own) else "foreign"
        (images / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, images / kind / f"{i:02d}_{path.name}")
    return root / "models" / "logreg", images


def test_predict_flags_blood_cells_through_a_cats_and_dogs_model(logreg_and_images, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    folder, images = logreg_and_images
    assert main(["predict", str(folder), str(images), "--json", "--csv", str(tmp_path / "p.csv")]) == 0
    said = json.loads(capsys.readouterr().out)
    rows = said["predictions"]
    foreign = np.array(["/foreign/" in r["path"] for r in rows])
    distance = np.array([r["domain_distance"] for r in rows])
    flagged = np.array([r["out_of_domain"] for r in rows])
    assert roc_auc_score(foreign, distance) >= 0.95 and flagged[foreign].all()
    assert flagged[~foreign].mean() <= 0.2 and said["summary"]["out_of_domain"] == int(flagged.sum())
    # the distance, computed independently: the images' features from `extract`, pooled, against domain.json
    extract(images, tmp_path / "f", cache_dir=tmp_path / "cache", verbose=False, split=[1, 0, 0], **MOBILENET)
    import h5py

    with h5py.File(tmp_path / "f" / "train.h5") as f:
        by_name = {p.decode().rsplit("/", 1)[-1]: x for p, x in zip(f["paths"][:], f["features"][:])}
    record = json.loads((folder / DOMAIN_FILE).read_text())
    centroids = np.array(record["centroids"])
    for r in rows:
        v = by_name[r["path"].rsplit("/", 1)[-1]].reshape(-1, centroids.shape[1]).mean(axis=0)
        direct = 1 - max(v @ c / np.linalg.norm(v) / np.linalg.norm(c) for c in centroids)
        assert r["domain_distance"] == pytest.approx(direct, abs=2e-3)
        assert r["out_of_domain"] == (r["domain_distance"] > record["threshold"])
    table = list(csv.DictReader(open(tmp_path / "p.csv", newline="")))
    assert [t["out_of_domain"] for t in table] == [str(f).lower() for f in flagged]
    assert main(["predict", str(folder), str(images / "foreign")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all("[OUT OF DOMAIN" in line for line in lines[:-1]) and "8 out of domain" in lines[-1]


@pytest.mark.parametrize(
    "record",
    [
        '{"centroids": [[NaN]], "threshold": 0.1, "quantile": 0.99, "validation_images": 9}',
        "[1, 2]",
        "{",
        "[" * 100000 + "]" * 100000,  # nested past Python's recursion limit
        '{"centroids": [[1.0, 0.0]], "threshold": 0.1, "quantile": 0.99, "validation_images": 9}',  # 2 wide
        '{"centroids": [[0.0, 0.0]], "threshold": 0.1, "quantile": 0.99, "validation_images": 9}',
        '{"centroids": [[1.0]], "threshold": 0.1, "quantile": 0.99, "validation_images": Infinity}',
        '{"centroids": [[1.0], [1.0], [1.0]], "threshold": 0.1, "quantile": 0.99, "validation_images": 9}',
    ],
)
def test_a_re_signed_domain_record_bneck_could_not_write_is_refused_in_one_paragraph(
    logreg_and_images, tmp_path, capsys, record
):
    from tests.reliability.test_security_code import resign

    folder, images = logreg_and_images
    forged = tmp_path / "logreg"
    shutil.copytree(folder, forged)
    (forged / DOMAIN_FILE).write_text(record)
    resign(forged)
    assert main(["predict", str(forged), str(images / "own")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"{forged}/{DOMAIN_FILE} cannot be read as bneck's domain record" in err or "not the record of this" in err
