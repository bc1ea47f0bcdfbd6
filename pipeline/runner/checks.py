"""What ``bneck run`` refuses before a byte is written: a cache folder it may not use, data the stages
cannot read, and classifier options the data's counts cannot support."""

from __future__ import annotations

import os

from bneck.core.errors import DatasetError
from bneck.features.cache.rows import resolve_cache_dir
from bneck.features.images.dataset import discover
from bneck.pipeline.training.checks import check_counts
from bneck.pipeline.training.options import classifier_config


def check_before_work(cfg: dict) -> None:
    """Look at the images the run would read (discovery only) and check every classifier's options
    against their counts. Raises ConfigError or DatasetError."""
    ex, train = cfg["extract"], cfg["train"]
    resolve_cache_dir(ex["cache_dir"], inputs=[cfg["data"], cfg["out"]])
    dataset = discover(
        cfg["data"],
        splits=ex["splits"],
        split=ex["split"],
        seed=ex["seed"],
        exclude=ex["exclude"],
        follow_links=ex["follow_links"],
    )
    if "train" not in dataset.splits or "validation" not in dataset.splits:
        raise DatasetError(
            f"bneck run trains on the train split and ranks on validation, but {dataset.root} gives "
            f"{', '.join(dataset.splits)}. Add the missing split(s), or use --split for one folder "
            "per class."
        )
    _check_finetune_plan(cfg)
    common = {k: v for k, v in train.items() if k != "classifiers" and not isinstance(v, dict)}
    names = train["classifiers"]
    for name in names:
        cfg_one = classifier_config(
            name, {**common, "seed": cfg["seed"]}, {n: train[n] for n in names if n in train}, names
        )
        check_counts(
            name,
            cfg_one,
            dataset.class_names,
            [r.label for r in dataset.splits["train"]],
            [r.label for r in dataset.splits["validation"]],
            dataset.root,
        )


def _known_extractor(cfg: dict, backbone, alpha, size) -> bool:
    """True when the cache already holds rows of the run's extractor."""
    from bneck.features.backbones.resolve import resolve_spec
    from bneck.features.cache.rows import resolve_cache_dir

    ex = cfg["extract"]
    spec = resolve_spec(
        ex["backbone"], ex["weights"], size, ex["layer"], ex["pool"], ex["dtype"], alpha, ex["preprocess"]
    )
    folder = os.path.join(resolve_cache_dir(ex["cache_dir"]), "features", spec.key)
    return os.path.isdir(folder) and any(n.startswith("rows-") for n in os.listdir(folder))


def _check_finetune_plan(cfg: dict) -> None:
    """Check, before any work, that the base can be cut at extract.layer (unless its rows are cached)
    and, when the run will fine-tune, that the cut base has the unfreeze point (the base's
    architecture only, random weights). Raises ConfigError naming the config keys."""
    from bneck.core.errors import ConfigError
    from bneck.features.backbones.feature_model import check_cut
    from bneck.features.backbones.model_file import backbone_from_options, with_graph
    from bneck.pipeline.finetuning.model import unfreeze_index
    from bneck.pipeline.finetuning.options import check_view_precision
    from bneck.pipeline.training.classifiers import is_keras

    ex, ft = cfg["extract"], cfg["finetune"]
    heads = [n for n in cfg["train"]["classifiers"] if is_keras(n)]
    if ft["enabled"] and ft["head"] != "auto" and ft["head"] not in heads:
        raise ConfigError(
            f"config key finetune.head = {ft['head']!r} names a head this run does not train: "
            f"train.classifiers is {cfg['train']['classifiers']!r}. Add {ft['head']!r} to "
            "train.classifiers, or set finetune.head to 'auto' (or one of the run's heads: "
            f"{', '.join(heads) or 'none'})."
        )
    finetuning = ft["enabled"] and bool(heads)
    if finetuning:
        check_view_precision(ft)
    backbone = backbone_from_options(ex["backbone"], ex["preprocess"])
    alpha = backbone.resolve_alpha(ex["alpha"])
    size = backbone.validate_size(backbone.default_size if ex["size"] is None else ex["size"])
    backbone = with_graph(backbone, size)
    if not finetuning and _known_extractor(cfg, backbone, alpha, size):
        return  # its rows are cached: layer and pool worked, and nothing else needs the base
    cut = check_cut(backbone, alpha, size, ex["layer"] or backbone.default_layer, ex["pool"])
    if not finetuning:
        return
    try:
        unfreeze_index(cut, backbone, ft["unfreeze_from"])
    except ConfigError as exc:
        raise ConfigError(
            f"config key finetune.unfreeze_from = {ft['unfreeze_from']!r} does not work with "
            f"extract.layer = {ex['layer'] or backbone.default_layer!r}: {exc} (Set finetune."
            "unfreeze_from to a layer at or below extract.layer, or finetune.enabled = false.)"
        ) from None


def check_not_moved(config: str | None, cfg: dict, out_given: bool) -> None:
    """Refuse a run folder's own saved config.toml run from where the folder was moved or copied to: its
    ``out`` names the old place, where the run would silently start again (ConfigError)."""
    from bneck.core.errors import ConfigError
    from bneck.core.folders import folder_kind

    if not config or out_given:
        return
    here = os.path.dirname(os.path.abspath(config))
    if folder_kind(here) == "run" and os.path.realpath(here) != os.path.realpath(cfg["out"]):
        raise ConfigError(
            f"{config} is the config a run saved in its folder, and that folder was made at {cfg['out']} but "
            f"now lies at {here} (moved or copied). Pass --out {here} to rerun it where it is (everything in it "
            f"is reused), or --out {cfg['out']} to write at the old place."
        )
