"""``bneck train --engine ray``: the scikit-learn searches' candidates as Ray tasks on a real multi-node
cluster (``tests.conftest.nodes``), with the results of a local run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from bneck.features import extract, read_features
from tests.conftest import MOBILENET, RAY_NOTES, copy_subset

pytestmark = pytest.mark.extra("ray")


class NotesWhereItFits(LogisticRegression):
    """scikit-learn's LogisticRegression that writes the Ray node (or "here") each fit ran on into
    ``notes`` (a parameter: clones carry it to joblib's and Ray's workers, whatever their environment)."""

    def __init__(self, notes="", C=1.0, max_iter=3000):
        super().__init__(C=C, max_iter=max_iter)
        self.notes = notes

    def fit(self, X, y, sample_weight=None):
        import ray

        in_a_ray_worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        where = ray.get_runtime_context().get_node_id() if in_a_ray_worker else "here"
        with open(os.path.join(self.notes, f"{where}-{os.getpid()}-{time.time_ns()}"), "w"):
            pass
        return super().fit(X, y, sample_weight)


@pytest.fixture
def noting(nodes, monkeypatch):
    from bneck.pipeline.training.classifiers.registry import Classifier, register_classifier, unregister_classifier

    notes = Path(RAY_NOTES["BNECK_TEST_NOTES"])
    for old in notes.iterdir():
        old.unlink()
    monkeypatch.setenv("BNECK_TEST_NOTES", str(notes))  # the driver's; Ray's workers have it from the cluster's
    register_classifier(
        Classifier(
            name="noting-logreg",
            kind="sklearn",
            description="logistic regression that notes where it fits (test only)",
            factory=lambda seed, counts: NotesWhereItFits(notes=str(notes), max_iter=3000),
            grid={"clf__C": [0.01, 0.1, 1.0]},
            skops_types=(f"{NotesWhereItFits.__module__}.{NotesWhereItFits.__qualname__}",),
        )
    )
    yield notes
    unregister_classifier("noting-logreg")


@pytest.mark.parametrize("search", ["validation", "kfold"])
def test_train_runs_its_search_candidates_on_the_cluster_with_the_results_of_a_local_run(
    nodes, tmp_path, noting, search
):
    from bneck.pipeline import train
    from bneck.pipeline.artifacts import load_classifier
    from bneck.pipeline.predict import classifier_proba

    data = copy_subset(tmp_path / "data", 6)
    extract(data, tmp_path / "features", cache_dir=tmp_path / "cache", verbose=False, **MOBILENET)
    kwargs = dict(search=search, folds=3, verbose=False)
    local = train(tmp_path / "features", ["logreg", "noting-logreg"], tmp_path / "local", **kwargs)
    here = {p.name for p in noting.iterdir()}
    on_ray = train(tmp_path / "features", ["logreg", "noting-logreg"], tmp_path / "ray", engine="ray", **kwargs)
    fits = [name.split("-")[0] for name in {p.name for p in noting.iterdir()} - here]
    assert {name.split("-")[0] for name in here} == {"here"}
    candidates = 3 * (3 if search == "kfold" else 1)
    assert len(fits) >= candidates and fits.count("here") == 1  # the refit of the best, on the driver
    # every candidate ran as a Ray task, and the pool's actors (one per CPU, each holding one) are on every
    # node: Ray packs actors that hold no CPU on one node
    assert len(set(fits) - {"here"}) == len(nodes.list_all_nodes()) == 3, fits
    x = read_features(str(tmp_path / "features" / "test.h5")).features
    for a, b in zip(local.results, on_ray.results):
        assert a.name == b.name
        ma, mb = (load_classifier(r.folder) for r in (a, b))
        assert ma.manifest.search == mb.manifest.search and ma.manifest.search["best_params"]
        np.testing.assert_array_equal(classifier_proba(ma, x), classifier_proba(mb, x))
