"""``bneck run``'s TOML config: built from the stages' option tables, checked at load time (pure)."""

from __future__ import annotations

import pytest

from bneck.core.errors import ConfigError
from bneck.features.extraction.options import EXTRACT
from bneck.pipeline.finetuning.options import FINETUNE
from bneck.pipeline.runner import demo as demo_module
from bneck.pipeline.runner.config import DEFAULTS, load_config, to_toml
from bneck.pipeline.training.options import TRAIN
from tests.conftest import ROOT

pytestmark = pytest.mark.pure


def test_every_option_of_every_stage_is_a_config_key():
    assert set(EXTRACT.options) <= set(DEFAULTS["extract"])
    assert set(TRAIN.options) - {"seed"} <= set(DEFAULTS["train"])  # one seed per run, at the top
    assert set(FINETUNE.options) - {"seed", "cache_dir"} <= set(DEFAULTS["finetune"])
    for table, stage in ((EXTRACT, "extract"), (TRAIN, "train"), (FINETUNE, "finetune")):
        for name, option in table.options.items():
            if name in DEFAULTS[stage]:
                assert DEFAULTS[stage][name] == option.default, (stage, name)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (['extract.backbon="vgg16"'], "unknown config key 'extract.backbon'; allowed here: backbone"),
        (
            ['finetune.epochs="ten"'],
            "config key finetune.epochs must be an integer >= 1 and <= 10000. Received: epochs='ten' (str)",
        ),
        (
            ["finetune.lr=true"],
            "config key finetune.lr must be a finite number > 0 and <= 10. Received: lr=True (bool)",
        ),
        (["finetune.lr=inf"], "config key finetune.lr must be a finite number > 0 and <= 10. Received: lr=inf"),
        (['train.classifiers=["dense", "tree"]'], "'tree' is not allowed"),
        (["train.mlp.pca=4"], "[train.mlp] configures mlp, which is not in train.classifiers"),
        (['train.classifiers=["svm"]', "train.svm.epochs=4"], "unknown config key 'train.svm.epochs'; svm takes: "),
        (['train.classifiers=["svm"]', "train.svm.pca=-1"], "config key train.svm.pca must be"),
        (['train.classifiers=["svm"]', "train.svm=3"], "config key train.svm must be a table"),
        (["extract.seed=-1"], "config key extract.seed must be an integer >= 0"),
        (["finetune"], "--set takes KEY=VALUE"),
        (["extract.weights="], "a value left out is not an empty one"),
        (["train.classifiers=logreg"], 'a list is written ["logreg"]'),
        (["train.classifiers=[logreg]"], 'a list is written ["logreg"]'),
        (['data=""'], "the config needs `data"),
        (["extract=3"], "config key extract must be a table"),
        (['colour="red"'], "unknown config key 'colour'"),
    ],
)
def test_mistakes_are_refused_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, ['data="somewhere"'] + overrides)
    assert message in str(caught.value)


def test_per_classifier_tables_and_the_saved_config_reload_to_the_same(tmp_path):
    cfg = load_config(
        None,
        ['train.classifiers=["dense", "svm"]', "train.svm.pca=8", "train.dense.lr=0.01", "finetune.enabled=false"],
        data=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
    )
    assert cfg["train"]["svm"] == {"pca": 8} and cfg["train"]["dense"] == {"lr": 0.01}
    saved = tmp_path / "config.toml"
    saved.write_text(to_toml(cfg))
    assert load_config(str(saved)) == cfg


def test_paths_in_a_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "exp.toml"
    path.write_text(
        'data = "../data"\nout = "~/runs/x"\n[extract]\ncache_dir = "c"\nweights = "imagenet"\n'
        '[finetune]\nweights = "w/mobilenet.h5"\n'
    )
    cfg = load_config(str(path))
    assert cfg["data"] == str(tmp_path / "data") and cfg["extract"]["cache_dir"] == str(tmp_path / "configs" / "c")
    assert cfg["extract"]["weights"] == "imagenet"  # a name, not a path
    assert cfg["finetune"]["weights"] == str(tmp_path / "configs" / "w" / "mobilenet.h5")
    assert cfg["out"].startswith("/") and "~" not in cfg["out"]


def test_unreadable_config_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[extract\nbackbone = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(str(bad))


def test_documented_example_config_is_valid_and_matches_the_demo():
    cfg = load_config(str(ROOT / "scripts" / "configs" / "reference.toml"), data="somewhere")
    demo_cfg = load_config(None, base=demo_module.REFERENCE, data="somewhere")
    for key in ("backbone", "size", "weights"):
        assert cfg["extract"][key] == demo_cfg["extract"][key]
    # the same leaderboard; the reference fine-tunes its own dense head, the demo the one made for fine-tuning
    assert cfg["train"]["classifiers"] == ["dense", *demo_cfg["train"]["classifiers"][1:]]
    assert demo_cfg["train"]["classifiers"][0] == "gap-dense"
    assert cfg["finetune"]["lr"] == 1e-4 and cfg["finetune"]["momentum"] == 0.9  # the reference recipe
    assert (cfg["finetune"]["optimizer"], cfg["finetune"]["unfreeze_from"]) == ("sgd", "last-block")
