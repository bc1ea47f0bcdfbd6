"""The classifier registry: a classifier registered from this file alone trains, saves, loads and is
listed like a built-in one; unknown and doubled names are refused."""

from __future__ import annotations

import csv
import json

import pytest
import skops.io as sio
from sklearn.neighbors import NearestCentroid

import bneck
from bneck.core.errors import ConfigError
from bneck.core.options import signature_matches
from bneck.pipeline.artifacts import ArtifactError
from bneck.pipeline.cli import main
from bneck.pipeline.model_io import trusted_sklearn_types
from bneck.pipeline.runner.config import RUN_TRAIN
from bneck.pipeline.training.classifiers import (
    Classifier,
    get_classifier,
    list_classifiers,
    register_classifier,
    unregister_classifier,
)
from bneck.pipeline.training.options import SKLEARN_OPTIONS, TRAIN, options_of
from bneck.pipeline.training.stage import train

NAME = "nearest-centroid"
BUILT_IN = [
    "dense",
    "gap-dense",
    "logreg",
    "linear-svm",
    "svm",
    "knn",
    "random-forest",
    "hist-gradient-boosting",
    "mlp",
]


class ProbaCentroid(NearestCentroid):
    """scikit-learn's NearestCentroid under a type of this test module: skops does not trust it by default,
    so only its registry entry's ``skops_types`` lets its saved model load."""


CENTROID_TYPE = f"{ProbaCentroid.__module__}.{ProbaCentroid.__qualname__}"


@pytest.fixture
def centroid():
    """Register the test-only classifier; afterwards the registry holds the built-in ones only."""
    entry = register_classifier(
        Classifier(
            name=NAME,
            kind="sklearn",
            description="nearest class centroid (test only)",
            factory=lambda seed, counts: ProbaCentroid(),
            grid={"clf__shrink_threshold": [None, 0.5]},
            skops_types=(CENTROID_TYPE,),
        )
    )
    yield entry
    if NAME in [e.name for e in list_classifiers()]:
        unregister_classifier(NAME)
    assert [e.name for e in list_classifiers()] == BUILT_IN


def test_a_registered_classifier_trains_saves_loads_and_ranks(features_dir, tmp_path, centroid):
    out = tmp_path / "models"
    board = bneck.train(features_dir, [NAME], out, verbose=False, search="validation")
    [result] = board.results
    assert (result.name, result.reused, result.streamed) == (NAME, False, False)
    with open(out / "leaderboard.csv") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["model"] == NAME and float(row["test_accuracy"]) == pytest.approx(result.accuracy("test"))
    folder = out / NAME
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["classifier"], manifest["kind"], manifest["model_file"]) == (NAME, "sklearn", "model.skops")
    assert set(manifest["config"]) == set(SKLEARN_OPTIONS)
    assert set(manifest["search"]["best_params"]) == {"clf__shrink_threshold"}  # the entry's grid was tuned
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.6  # real features: centroids tell cats from dogs
    # Its type is trusted through the registry, not by skops: loading goes through that list.
    data = (folder / "model.skops").read_bytes()
    assert CENTROID_TYPE in sio.get_untrusted_types(data=data) and CENTROID_TYPE in trusted_sklearn_types()
    scored = bneck.evaluate(str(folder), str(features_dir / "test.h5"))
    assert scored["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    unregister_classifier(NAME)
    assert CENTROID_TYPE not in trusted_sklearn_types()
    with pytest.raises(ArtifactError, match=CENTROID_TYPE.replace(".", r"\.")):
        bneck.evaluate(str(folder), str(features_dir / "test.h5"))


def test_a_registered_classifier_without_a_streamed_variant_refuses_max_memory(features_dir, tmp_path, centroid):
    with pytest.raises(ConfigError, match=f"classifier '{NAME}' needs its features in memory") as caught:
        train(features_dir, [NAME], tmp_path / "m", verbose=False, max_memory="10K")
    assert "use one of logreg, linear-svm, mlp, a Keras head (dense, gap-dense)" in str(caught.value)
    assert not (tmp_path / "m" / NAME).exists()


@pytest.mark.pure
def test_an_unknown_name_gets_the_closest_registered_one(centroid, tmp_path):
    with pytest.raises(ConfigError, match=f"Did you mean '{NAME}'") as caught:
        train(tmp_path / "nowhere", ["nearest-centroyd"], tmp_path / "m", verbose=False)
    assert "classifier must be one of" in str(caught.value) and f"'{NAME}'" in str(caught.value)
    with pytest.raises(ConfigError, match="Did you mean 'logreg'"):
        get_classifier("logreg2")


@pytest.mark.pure
def test_a_second_registration_of_a_name_is_refused(centroid):
    for name in (NAME, "logreg"):
        with pytest.raises(ConfigError, match=f"a classifier named '{name}' is already registered"):
            register_classifier(
                Classifier(name=name, kind="sklearn", description="again", factory=lambda seed, counts: ProbaCentroid())
            )
    assert get_classifier(NAME) is centroid and get_classifier("logreg").description.startswith("logistic")
    with pytest.raises(ConfigError, match="kind must be one of 'keras', 'sklearn'"):
        register_classifier(Classifier(name="odd", kind="xgboost", description="?"))


@pytest.mark.pure
def test_the_option_tables_and_the_command_line_list_a_registered_classifier(centroid, capsys):
    allowed = RUN_TRAIN["classifiers"]
    assert NAME in allowed.allowed() and allowed.check(["logreg", NAME]) == ["logreg", NAME]
    assert options_of(NAME) == SKLEARN_OPTIONS
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert NAME in capsys.readouterr().out.replace("\n", " ")
    unregister_classifier(NAME)
    with pytest.raises(ConfigError, match=f"'{NAME}' is not allowed"):
        allowed.check([NAME])


@pytest.mark.pure
def test_train_declares_every_train_option():
    assert signature_matches(train, TRAIN) == []
