"""What a handed ensemble folder can do: its manifest names other folders, so every way of pointing it at
something else (another model, a changed or re-signed member, itself, a place outside any model, a
hostile member) and every malformed list of members must be refused by every command that loads
models, in one paragraph (exit 2, no traceback), with no code run and no loop followed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bneck import extract, train
from bneck.pipeline.ensemble.build import write_ensemble
from bneck.pipeline.ensemble.members import read_candidates
from bneck.pipeline.ensemble.selection import Round, Selection
from tests.generated import make_images
from tests.reliability.test_security_code import pickle_in_an_old_format_folder, resign

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("ensembles")
    data = make_images(root / "data", 4)
    extract(data, root / "features", cache_dir=root / "cache", verbose=False, **tiny)
    train(root / "features", ["dense", "logreg", "knn"], root / "models", epochs=2, verbose=False)
    return root


def _members(folder: Path) -> list:
    return json.loads((folder / "manifest.json").read_text())["members"]


def _set_members(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _member_field(index: int, **changes):
    def attack(root: Path, folder: Path, marker: str) -> None:
        _set_members(folder, lambda m: m["members"][index].update(changes))
        resign(folder)

    attack.__name__ = "member_" + "_".join(f"{k}_{v}" for k, v in changes.items())[:60]
    return attack


def redirected_to_another_model(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m["members"][0].update(folder=str(root / "models" / "knn")))
    resign(folder)


def member_changed_after(root: Path, folder: Path, marker: str) -> None:
    member = folder.parent / "logreg"
    shutil.copytree(root / "models" / "logreg", member)
    _set_members(folder, lambda m: m["members"][1].update(folder="../logreg"))
    resign(folder)
    (member / "predictions.csv").write_text("split,path,true,predicted,cats,dogs\n")


def member_changed_and_resigned(root: Path, folder: Path, marker: str) -> None:
    member_changed_after(root, folder, marker)
    resign(folder.parent / "logreg")


def member_is_the_ensemble_itself(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m["members"][0].update(folder="."))
    resign(folder)


def member_is_a_pickle(root: Path, folder: Path, marker: str) -> None:
    member = folder.parent / "old"
    shutil.copytree(root / "models" / "logreg", member)
    pickle_in_an_old_format_folder(member, marker)
    _set_members(folder, lambda m: m["members"][1].update(folder="../old"))
    resign(folder)


def members_duplicated(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m["members"].append(dict(m["members"][0])))
    resign(folder)


def the_model_file_renamed(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m.update(model_file="model.skops"))
    resign(folder)


def no_members(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m.update(members=[], kept_round=0))
    resign(folder)


def an_unknown_member_field(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m["members"][0].update(code="__import__('os')"))
    resign(folder)


def one_folder_under_many_names(root: Path, folder: Path, marker: str) -> None:
    """The same member listed 600 times, each under its own name: a load that would take hours."""

    def change(m):
        first = m["members"][0]
        m["members"] = [{**first, "name": f"m{i}", "weight": 1} for i in range(600)]
        m["rounds"] = [m["rounds"][0]] * 600
        m["kept_round"] = 600

    _set_members(folder, change)
    resign(folder)


def more_rounds_than_bneck_writes(root: Path, folder: Path, marker: str) -> None:
    _set_members(folder, lambda m: m.update(rounds=[m["rounds"][0]] * 1001))
    resign(folder)


def a_nested_config(root: Path, folder: Path, marker: str) -> None:
    deep: dict = {}
    for _ in range(50):
        deep = {"x": deep}
    _set_members(folder, lambda m: m["config"].update(nested=deep))
    resign(folder)


def predictions_changed_unsigned(root: Path, folder: Path, marker: str) -> None:
    path = folder / "predictions.csv"
    path.write_text(path.read_text().replace("cats", "dogs", 1))


ATTACKS = [
    redirected_to_another_model,
    member_changed_after,
    member_changed_and_resigned,
    member_is_the_ensemble_itself,
    member_is_a_pickle,
    members_duplicated,
    no_members,
    the_model_file_renamed,
    an_unknown_member_field,
    predictions_changed_unsigned,
    one_folder_under_many_names,
    more_rounds_than_bneck_writes,
    a_nested_config,
    _member_field(0, name="\x1b[2J\x1b[31mforged"),
    _member_field(1, folder="../../models/logreg\n/etc"),
    _member_field(0, folder="/proc/self"),
    _member_field(0, folder="../../../../../../../../etc"),
    _member_field(0, weight=0),
    _member_field(0, weight=-3),
    _member_field(0, weight=True),
    _member_field(0, weight=1.5),
    _member_field(0, weight=10**18),
    _member_field(0, kind="ensemble"),
    _member_field(0, kind="finetuned"),
    _member_field(0, manifest_sha256="0" * 64),
]


def _ensemble(made: Path, out: Path) -> Path:
    """dense (weight 1) and logreg (weight 2), written as bneck writes an ensemble."""
    candidates = read_candidates([str(made / "models" / "dense"), str(made / "models" / "logreg")])
    write_ensemble(str(out), candidates, Selection({"dense": 1, "logreg": 2}, [Round("dense", 0.5, 1.0)] * 3, 3), 3)
    return out


def test_the_untouched_ensemble_works_with_every_command(made, tmp_path, bneck):
    folder = _ensemble(made, tmp_path / "e" / "ens")
    for args in (
        ["evaluate", folder, made / "features" / "test.h5"],
        ["predict", folder, made / "data" / "test" / "cats"],
        ["export", folder, "--out", tmp_path / "x"],
    ):
        done = bneck(tmp_path, args)
        assert done.returncode == 0, (args[0], done.output)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
def test_a_hostile_ensemble_is_refused_by_every_command(made, tmp_path, bneck, attack):
    folder = _ensemble(made, tmp_path / "e" / "ens")
    marker = tmp_path / "pwned"
    attack(made, folder, str(marker))
    for args in (
        ["evaluate", folder, made / "features" / "test.h5"],
        ["predict", folder, made / "data" / "test" / "cats"],
        ["export", folder, "--out", tmp_path / "x"],
    ):
        done = bneck(tmp_path, args, offline=True)
        assert done.returncode == 2, (args[0], done.output)
        assert "Traceback" not in done.output and "RecursionError" not in done.output, (args[0], done.output)
        assert str(folder) in done.output, (args[0], done.output)
    assert not marker.exists() and not (tmp_path / "x").exists()  # no pickle ran, nothing exported
