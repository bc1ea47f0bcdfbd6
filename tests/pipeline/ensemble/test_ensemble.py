"""``bneck ensemble`` end to end on generated images and the tiny backbone: the folder it writes, and
``predict``, ``evaluate`` and ``export`` taking it like any model, each checked against a computation
made here from the members themselves."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bneck import ArtifactError, ensemble, evaluate, export, extract, finetune, predict, train
from bneck.core.errors import FeatureFileError
from bneck.pipeline.cli import main
from bneck.pipeline.ensemble.build import write_ensemble
from bneck.pipeline.ensemble.members import EnsembleError, read_candidates
from bneck.pipeline.ensemble.selection import Round, Selection
from bneck.pipeline.export.fold import FoldError
from tests.generated import make_images

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny):
    """Features of 10 generated images per class and split; dense, logreg and knn on them; dense fine-tuned."""
    root = tmp_path_factory.mktemp("ensemble")
    data = make_images(root / "data", 10)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(root / "features", ["dense", "logreg", "knn"], root / "models", epochs=4, verbose=False)
    finetune(str(root / "models" / "dense"), None, str(root / "finetuned"), epochs=1, views=2, verbose=False)
    return root


def _probabilities(folder: Path) -> dict:
    """{(split, path): probabilities} read from a folder's predictions.csv."""
    rows = csv.DictReader(open(folder / "predictions.csv"))
    return {(r["split"], r["path"]): np.array([float(r["cats"]), float(r["dogs"])]) for r in rows}


def _hand_made(run: Path, out: Path, weights: dict) -> Path:
    """An ensemble of the given members and weights (a selection made by hand, written as bneck writes)."""
    folders = {"dense": run / "models/dense", "logreg": run / "models/logreg", "knn": run / "models/knn"}
    folders["fine-tuned dense"] = run / "finetuned"
    names = list(weights)
    candidates = read_candidates([str(folders[n]) for n in names], names)
    total = sum(weights.values())
    rounds = [Round(names[0], 0.5, 1.0)] * total
    write_ensemble(str(out), candidates, Selection(dict(weights), rounds, total), 25)
    return out


def test_the_folder_is_the_weighted_mean_of_its_members_pinned_by_their_manifests(run, tmp_path):
    members = [run / "models/dense", run / "models/logreg", run / "models/knn", run / "finetuned"]
    result = ensemble([str(m) for m in members], str(tmp_path / "ens"), verbose=False)
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert manifest["kind"] == "ensemble" and manifest["kept_round"] == sum(result.selection.weights.values())
    assert [c["name"] for c in manifest["candidates"]] == ["dense", "logreg", "knn", "fine-tuned dense"]
    mine = _probabilities(tmp_path / "ens")
    expected = {}
    for ref in manifest["members"]:
        folder = (tmp_path / "ens" / ref["folder"]).resolve()
        assert ref["manifest_sha256"] == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
        for key, p in _probabilities(folder).items():
            expected[key] = expected.get(key, 0) + ref["weight"] * p
    total = sum(ref["weight"] for ref in manifest["members"])
    assert set(mine) == set(expected) and any(split == "test" for split, _ in mine)
    for key, p in mine.items():
        assert np.allclose(p, expected[key] / total, atol=2e-6), key
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    for split in ("validation", "test"):
        rows = [r for r in csv.DictReader(open(tmp_path / "ens" / "predictions.csv")) if r["split"] == split]
        assert metrics[split]["accuracy"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in rows]))
    singles = [json.loads((m / "metrics.json").read_text())["validation"]["accuracy"] for m in members]
    assert metrics["validation"]["accuracy"] >= max(singles)  # by construction


def test_predict_takes_an_ensemble_of_features_and_fine_tuned_members(run, tmp_path):
    """Features computed once for logreg, the fine-tuned member on the images: equal to the recorded
    probabilities (themselves the weighted mean of the members')."""
    folder = _hand_made(run, tmp_path / "ens", {"logreg": 2, "fine-tuned dense": 1})
    recorded = _probabilities(folder)
    images = sorted((run / "data" / "test").glob("*/*.jpg"))[::3]
    names, rows = predict(str(folder), [str(p) for p in images])
    assert names == ["cats", "dogs"] and len(rows) == len(images)
    for path, row in zip(images, rows):
        got = np.array([row["probabilities"]["cats"], row["probabilities"]["dogs"]])
        assert np.allclose(got, recorded[("test", str(path.relative_to(run / "data")))], atol=1e-5)
        assert row["seen_in"] == "test"
    # out of domain is judged by the heaviest member's domain, exactly as that member alone judges it
    for weights, heaviest in (
        ({"logreg": 2, "fine-tuned dense": 1}, "models/logreg"),
        ({"logreg": 1, "fine-tuned dense": 3}, "finetuned"),
    ):
        folder = _hand_made(run, tmp_path / f"ens-{heaviest[:3]}", weights)
        _, together = predict(str(folder), [str(p) for p in images])
        _, alone = predict(str(run / heaviest), [str(p) for p in images])
        assert [r["domain_distance"] for r in together] == [r["domain_distance"] for r in alone]
        assert [r["out_of_domain"] for r in together] == [r["out_of_domain"] for r in alone]


def test_evaluate_scores_an_ensemble_of_classifiers_and_refuses_one_that_takes_images(run, tmp_path):
    folder = _hand_made(run, tmp_path / "ens", {"dense": 1, "logreg": 3})
    recorded = json.loads((folder / "metrics.json").read_text())["test"]
    metrics = evaluate(str(folder), str(run / "features" / "test.h5"))
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"]) and metrics["n"] == recorded["n"]
    assert metrics["loss"] == pytest.approx(recorded["loss"], abs=1e-5)
    with_images = _hand_made(run, tmp_path / "ens2", {"dense": 1, "fine-tuned dense": 1})
    with pytest.raises(FeatureFileError, match="an ensemble with a fine-tuned member: it takes images"):
        evaluate(str(with_images), str(run / "features" / "test.h5"))


def test_export_is_one_graph_equal_to_predict(run, tmp_path):
    """A Keras head and a folded logreg over one base, a fine-tuned branch beside it: one model file,
    read back with plain Keras, equal to `bneck predict` within 1e-4."""
    import keras
    from PIL import Image

    folder = _hand_made(run, tmp_path / "ens", {"dense": 1, "logreg": 2, "fine-tuned dense": 1})
    metadata = export(str(folder), str(tmp_path / "x"), "keras", verbose=False)
    assert metadata["check"]["max_abs_difference"] <= 1e-4 and metadata["source"]["kind"] == "ensemble"
    model = keras.saving.load_model(str(tmp_path / "x" / "model.keras"), safe_mode=True)
    assert sum(1 for layer in model.layers if layer.name.startswith("member_") and "weight" not in layer.name) == 3
    images = sorted((run / "data" / "validation").glob("*/*.jpg"))[:6]
    size = metadata["input"]["shape"][1]
    batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in images])
    served = model.predict(batch, verbose=0)
    _, rows = predict(str(folder), [str(p) for p in images])
    ours = np.array([[r["probabilities"]["cats"], r["probabilities"]["dogs"]] for r in rows])
    assert np.abs(served - ours).max() <= 1e-4


def test_an_ensemble_with_members_that_are_not_layers_is_refused_naming_them(run, tmp_path):
    folder = _hand_made(run, tmp_path / "ens", {"logreg": 1, "knn": 1})
    with pytest.raises(FoldError, match=r"its member\(s\) knn are not expressible"):
        export(str(folder), str(tmp_path / "x"), "keras", verbose=False)
    assert not (tmp_path / "x").exists()


def test_folders_that_cannot_be_combined_are_refused_before_anything_is_written(run, tmp_path, tiny):
    other = tmp_path / "other"
    data = make_images(other / "data", 10, offset=50)  # other images: other validation and test sets
    extract(data, other / "features", cache_dir=run / "cache", verbose=False, **tiny)
    train(other / "features", ["logreg"], other / "models", verbose=False)
    three = tmp_path / "three"
    make_images(three / "data", 4, classes=("cats", "dogs", "birds"))
    extract(three / "data", three / "features", cache_dir=run / "cache", verbose=False, **tiny)
    train(three / "features", ["logreg"], three / "models", verbose=False)
    made = ensemble([str(run / "models/dense"), str(run / "models/logreg")], str(tmp_path / "made"), verbose=False)
    shutil.copytree(run / "models/logreg", tmp_path / "copy")
    cases = [
        ([run / "models/dense", other / "models/logreg"], "validation predictions are not of the same images"),
        ([run / "models/dense", three / "models/logreg"], "its classes are"),
        ([run / "models/dense", Path(made.folder)], "never another ensemble"),
        ([run / "models/logreg", run / "models/logreg"], "holds the same model as"),
        ([run / "models/logreg", tmp_path / "copy"], "holds the same model as"),
        ([run / "models/logreg"], "two or more model folders"),
        ([run / "models/logreg", run / "models"], "is a bneck models folder, not a model folder"),
        ([run / "models/logreg", run / "features"], "is a bneck features folder"),
    ]
    for folders, message in cases:
        with pytest.raises(EnsembleError, match=message):
            ensemble([str(f) for f in folders], str(tmp_path / "never"), verbose=False)
        assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="max_size"):  # a ConfigError is a ValueError too
        ensemble([str(run / "models/dense"), str(run / "models/logreg")], str(tmp_path / "never"), max_size=0)


def test_the_command_prints_the_weights_and_refuses_mistakes_in_one_paragraph(run, tmp_path, capsys):
    members = [str(run / "models/dense"), str(run / "models/logreg"), str(run / "finetuned")]
    assert main(["ensemble", *members, "--out", str(tmp_path / "ens"), "--max-size", "5"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert manifest["config"]["max_size"] == 5 and len(manifest["rounds"]) == 5
    for ref in manifest["members"]:
        assert f"{ref['name']}" in printed
    assert "model" in printed and "weight" in printed and str(tmp_path / "ens") in printed
    before = (tmp_path / "ens" / "manifest.json").stat().st_mtime_ns
    assert main(["ensemble", *members, "--out", str(tmp_path / "ens"), "--max-size", "5", "--quiet"]) == 0
    again = capsys.readouterr().out
    assert again.count("\n") == 1 and "unchanged" not in again  # --quiet: the one line that says what was chosen
    assert (tmp_path / "ens" / "manifest.json").stat().st_mtime_ns == before  # the same ensemble: kept as it is
    assert main(["ensemble", members[0], "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "two or more model folders" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["ensemble", *members, "--out", str(tmp_path / "x"), "--max-size", "0"]) == 2
    assert "--max-size" in capsys.readouterr().err


def test_a_moved_ensemble_says_where_its_members_were(run, tmp_path):
    folder = _hand_made(run, tmp_path / "ens", {"dense": 1, "logreg": 1})
    moved = tmp_path / "elsewhere" / "deeper" / "ens"
    moved.parent.mkdir(parents=True)
    shutil.move(str(folder), str(moved))
    with pytest.raises(ArtifactError, match=f"its member dense .* is not at .* was made \\(in {folder}\\)"):
        predict(str(moved), [str(next((run / "data" / "test").glob("*/*.jpg")))])


def _forged(source: Path, dest: Path, **manifest_changes) -> Path:
    """A copy of a model folder whose manifest says other things (bneck does not list the manifest among
    the files it hashes, so no re-signing is needed)."""
    shutil.copytree(source, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_names_never_collide_so_each_weight_goes_to_its_own_model(run, tmp_path):
    """Leaderboard names numbered apart ('logreg #1') can equal another model's own name: every name
    stays distinct, and the recorded probabilities are the weighted mean of the folders the manifest names."""
    knn_as_logreg = _forged(run / "models/knn", tmp_path / "a", classifier="logreg")
    dense_as_logreg_1 = _forged(run / "models/dense", tmp_path / "b", classifier="logreg #1")
    folders = [str(run / "models/logreg"), str(knn_as_logreg), str(dense_as_logreg_1)]
    names = [c.name for c in read_candidates(folders)]
    assert len(set(names)) == 3 and "logreg #1" in names, names
    write_ensemble(
        str(tmp_path / "ens"),
        read_candidates(folders),
        Selection(dict.fromkeys(names, 1), [Round(names[0], 0.5, 1.0)] * 3, 3),
        25,
    )
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    mine, expected = _probabilities(tmp_path / "ens"), {}
    for ref in manifest["members"]:
        for key, p in _probabilities((tmp_path / "ens" / ref["folder"]).resolve()).items():
            expected[key] = expected.get(key, 0) + p / 3
    assert all(np.allclose(p, expected[key], atol=2e-6) for key, p in mine.items())
    for bad in (["x"], ["a", "a", "b"], [1, 2, 3], ["a", "b", "\x1b[31mc"]):
        with pytest.raises(EnsembleError, match="names must give each"):
            ensemble(folders, str(tmp_path / "never"), names=bad, verbose=False)


def test_predictions_that_are_not_probabilities_or_disagree_with_their_metrics_are_not_selected_from(run, tmp_path):
    from tests.reliability.test_security_code import resign

    def forged(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(run / "models/logreg", folder)
        rows = list(csv.reader(open(folder / "predictions.csv")))
        rows[1:] = [change(r) for r in rows[1:]]
        with open(folder / "predictions.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        resign(folder)
        return folder

    huge = forged("huge", lambda r: r[:4] + (["1e308", "0"] if r[2] == "cats" else ["0", "1e308"]))
    flipped = forged("flipped", lambda r: r[:3] + [r[3], r[5], r[4]])  # every probability row reversed
    for folder, message in ((huge, "not probabilities"), (flipped, "where its manifest records")):
        with pytest.raises(EnsembleError, match=message):
            ensemble([str(run / "models/dense"), str(folder)], str(tmp_path / "never"), verbose=False)
        assert not (tmp_path / "never").exists()


def test_the_api_refuses_what_is_not_a_list_of_folders_and_an_out_that_is_not_a_path(run, tmp_path):
    from bneck import OutputError

    folders = [str(run / "models/dense"), str(run / "models/logreg")]
    for bad in (None, 5, [None, None], [], [b"/tmp/x", b"/tmp/y"]):
        with pytest.raises(EnsembleError, match="a list of model folder paths"):
            ensemble(bad, str(tmp_path / "never"), verbose=False)
    for out in (None, 3, "", "   "):
        with pytest.raises(OutputError, match="must name a folder"):
            ensemble(folders, out, verbose=False)
    copy = _forged(run / "models/logreg", tmp_path / "copy", created_utc="2001-01-01T00:00:00+00:00")
    with pytest.raises(EnsembleError, match="holds the same model as"):  # an edited manifest, the same model file
        ensemble([folders[1], str(copy)], str(tmp_path / "never"), verbose=False)


def test_an_ensemble_written_through_a_symbolic_link_loads_by_either_path(run, tmp_path):
    real = tmp_path / "deep" / "a" / "b"
    real.mkdir(parents=True)
    (tmp_path / "L").symlink_to(real)
    ensemble([str(run / "models/dense"), str(run / "models/logreg")], str(tmp_path / "L" / "ens"), verbose=False)
    image = str(next((run / "data" / "test").glob("*/*.jpg")))
    by_link = predict(str(tmp_path / "L" / "ens"), [image])[1][0]["probabilities"]
    by_real = predict(str(real / "ens"), [image])[1][0]["probabilities"]
    assert by_link == by_real


def test_a_folder_replaced_while_it_is_read_is_an_error_in_one_paragraph(run, tmp_path):
    """`bneck ensemble --out E` replaces E by renaming; a reader at that moment gets an ArtifactError."""
    import os
    import threading

    from bneck.pipeline.artifacts import read_verified

    for name in ("one", "two"):
        ensemble(
            [str(run / "models/dense"), str(run / ("models/logreg" if name == "one" else "models/knn"))],
            str(tmp_path / name),
            verbose=False,
        )
    stop, errors, refused = threading.Event(), [], []

    def swap():
        while not stop.is_set():
            os.replace(tmp_path / "one", tmp_path / "x")
            os.replace(tmp_path / "two", tmp_path / "one")
            os.replace(tmp_path / "x", tmp_path / "two")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(300):
            try:
                read_verified(str(tmp_path / "one"))
            except ArtifactError as exc:
                refused.append(exc)
            except OSError as exc:  # what it used to raise: a traceback for the user
                errors.append(exc)
    finally:
        stop.set()
        swapper.join()
    assert not errors, errors[:3]
    said = ("changed while it was read", "does not match", "model folder not found", "has no manifest.json")
    assert all(any(s in str(e) for s in said) for e in refused), refused[:3]
