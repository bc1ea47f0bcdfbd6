"""Data health from cached features: planted duplicates, near duplicates and a mislabelled image are found."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from bneck.features import extract
from bneck.pipeline.runner.health import (
    LABEL_ISSUE_BELOW,
    data_health,
    exact_duplicates,
    label_errors,
    listed_as_label_issues,
    near_duplicates,
    out_of_fold_proba,
    write_label_issues,
)
from tests.conftest import DATA, MOBILENET, copy_subset


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    data = copy_subset(root / "data", 60)
    cat = sorted((data / "train" / "cats").glob("*.jpg"))[0]
    shutil.copy(cat, data / "test" / "cats" / "copy_of_a_training_cat.jpg")  # exact, across splits
    img = Image.open(cat).convert("RGB")  # re-encoded and a little smaller: a near duplicate
    img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(
        data / "validation" / "cats" / "reencoded.jpg", quality=80
    )
    dogs = sorted(DATA.glob("train/dogs/*.jpg"))[500:506]  # six real dogs filed under cats
    for i, dog in enumerate(dogs):
        shutil.copy(dog, data / "train" / "cats" / f"mislabelled_{i}.jpg")
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, pool="avg", **MOBILENET)
    return root / "features"


def test_the_planted_problems_are_found(planted):
    health = data_health(str(planted))
    assert health.note == "" and health.checked == 60 * 6 + 2 + 6
    across = [g for g in health.exact if g["across"]]
    assert len(across) == 1 and {s for s, _ in across[0]["items"]} == {"train", "test"}
    near = {frozenset(p for _, p in pair["items"]) for pair in health.near}
    assert any(any(p.endswith("reencoded.jpg") for p in pair) for pair in near)
    flagged = [p for g in health.label_errors for _, p in g["items"]]
    # the dogs filed under cats lead the list (the least likely in their folder is one of them), and at least
    # half of what is listed was planted (the rule is set for precision; a small real set: MobileNet-0.25
    # tells 83 % of these cats and dogs apart out of fold, and 6 of 126 training images were planted)
    planted_flags = [p.rsplit("/", 1)[-1].startswith("mislabelled_") for p in flagged]
    assert planted_flags[0] and sum(planted_flags) >= 2 and np.mean(planted_flags) >= 0.5


def test_near_duplicates_follow_the_cosine_threshold_and_skip_exact_copies():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    x[1] = x[0] + 0.01 * rng.normal(size=16)  # cosine ~0.9999 with 0
    x[2] = x[0]  # an exact copy (same sha): not reported as a near duplicate
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [("train", f"{i}.jpg") for i in range(5)]
    found, total, across = near_duplicates(x, names, ["a", "b", "a", "c", "d"])
    assert total == len(found) and across == 0
    pairs = [tuple(p for _, p in f["items"]) for f in found]
    assert ("0.jpg", "1.jpg") in pairs and ("1.jpg", "2.jpg") in pairs and ("0.jpg", "2.jpg") not in pairs
    expected = {(i, j) for i in range(5) for j in range(i + 1, 5) if x[i] @ x[j] >= 0.98 and (i, j) != (0, 2)}
    assert {(int(a[0]), int(b[0])) for a, b in pairs} == expected


def test_exact_duplicates_group_by_content_across_splits_first():
    items = [
        ("train", "a.jpg", "h1"),
        ("test", "b.jpg", "h1"),
        ("train", "c.jpg", "h2"),
        ("train", "d.jpg", "h2"),
        ("validation", "e.jpg", "h3"),
    ]
    groups = exact_duplicates(items)
    assert [g["across"] for g in groups] == [True, False]
    assert groups[0]["items"] == [("train", "a.jpg"), ("test", "b.jpg")]


def test_label_errors_need_two_images_per_class():
    x = np.eye(3, dtype=np.float32)
    assert label_errors(x, np.array([0, 1, 1]), [("train", str(i)) for i in range(3)], ["a", "b"]) == []


@pytest.mark.pure
def test_images_filed_deep_inside_another_class_are_listed_and_no_clean_one(tmp_path):
    """Three well-separated classes; four images moved into a wrong folder are exactly what is listed."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16)) * 25
    labels = np.repeat(np.arange(3), 40)
    x = (centres[labels] + rng.normal(size=(120, 16))).astype(np.float32)
    moved = [3, 10, 45, 99]  # each into another (folder it came from, folder it went to) pair
    given = labels.copy()
    given[moved] = [1, 2, 2, 0]
    names = [("train", f"{['a', 'b', 'c'][g]}/{i}.jpg") for i, g in enumerate(given)]
    found = label_errors(x, given, names, ["a", "b", "c"])
    assert sorted(int(f["items"][0][1].split("/")[1][:-4]) for f in found) == moved
    for item, i in zip(found, [int(f["items"][0][1].split("/")[1][:-4]) for f in found]):
        assert item["given"] == "abc"[given[i]] and item["likely"] == "abc"[labels[i]]
        assert item["given_probability"] < LABEL_ISSUE_BELOW <= item["likely_probability"]
    write_label_issues(str(tmp_path / "issues.csv"), found)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "issues.csv", newline="")))
    assert [r["path"] for r in rows] == [f["items"][0][1] for f in found]
    assert [float(r["given_probability"]) for r in rows] == sorted(float(r["given_probability"]) for r in rows)


@pytest.mark.pure
def test_the_listing_rule_is_the_own_class_probability_under_the_threshold_least_likely_first():
    rng = np.random.default_rng(2)
    for _ in range(20):
        proba = rng.dirichlet(np.full(4, 0.3), size=200)
        labels = rng.integers(0, 4, size=200)
        own = proba[np.arange(200), labels]
        expected = [i for i in np.argsort(own, kind="stable") if own[i] < LABEL_ISSUE_BELOW]
        assert listed_as_label_issues(proba, labels) == [int(i) for i in expected]


@pytest.mark.pure
def test_out_of_fold_probabilities_come_from_models_that_never_saw_the_image():
    """Probabilities per image that sum to one, high for the own class of separated points; None when a
    class has a single image (no fold could hold it out)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (30, 4)), rng.normal(8, 1, (30, 4))]).astype(np.float32)
    labels = np.repeat([0, 1], 30)
    proba = out_of_fold_proba(x, labels, 2)
    assert proba.shape == (60, 2) and np.allclose(proba.sum(axis=1), 1)
    assert (proba[np.arange(60), labels] > 0.5).all()
    assert out_of_fold_proba(x[:3], np.array([0, 1, 1]), 2) is None


@pytest.mark.pure
def test_names_a_spreadsheet_would_run_as_formulas_are_written_as_text(tmp_path):
    import csv

    found = [
        {
            "items": [("train", f"{name}/x.jpg")],
            "given": name,
            "likely": "+dogs",
            "likely_probability": 0.9,
            "given_probability": 0.01,
        }
        for name in ('=HYPERLINK("http://evil","x")', "@SUM(1+1)", "-2+3", "\t=1", "cats")
    ]
    write_label_issues(str(tmp_path / "issues.csv"), found)
    rows = list(csv.DictReader(open(tmp_path / "issues.csv", newline="")))
    for row, item in zip(rows, found):
        for column, value in (("given_class", item["given"]), ("likely_class", item["likely"])):
            assert row[column] == (value if value == "cats" else "'" + value)


def test_near_duplicate_pairs_are_counted_not_all_listed_so_memory_stays_bounded():
    """2,000 pixel-identical images made 1,999,000 pairs held as Python objects (1.94 GB); 10,000 would need
    25 GB. The pairs are counted exactly (against an independent count) and only the most similar listed."""
    import tracemalloc

    rng = np.random.default_rng(1)
    n = 3000
    x = np.repeat(rng.normal(size=(1, 8)).astype(np.float32), n, axis=0)
    x[::3] += 0.001 * rng.normal(size=(len(x[::3]), 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [("train" if i < 2000 else "test", f"{i}.jpg") for i in range(n)]
    shas = [f"h{i}" for i in range(n)]
    tracemalloc.start()
    found, total, across = near_duplicates(x, names, shas, keep=50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sims = x @ x.T
    upper = np.triu(sims >= 0.98, k=1)
    assert total == int(upper.sum()) and across == int(upper[:2000, 2000:].sum())
    assert len(found) == 50 and total > 4_000_000 and peak < 200 << 20
    values = [float(f["caption"].split()[1]) for f in found]
    assert values == sorted(values, reverse=True) and min(values) >= np.sort(sims[upper])[-50] - 1e-3
