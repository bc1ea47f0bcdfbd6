"""What ``bneck run`` refuses before a byte is written: a cache folder it may not use, data the stages
cannot read, and classifier options the data's counts cannot support."""
from __future__ import annotations

from features.cache import resolve_cache_dir
from features.dataset import discover
from features.errors import DatasetError

from ..training.checks import check_counts
from ..training.options import classifier_config


def check_before_work(cfg: dict) -> None:
    """Look at the images the run would read (discovery only) and check every classifier's options
    against their counts. Raises ConfigError or DatasetError."""
    ex, train = cfg["extract"], cfg["train"]
    resolve_cache_dir(ex["cache_dir"], inputs=[cfg["data"], cfg["out"]])
    dataset = discover(cfg["data"], splits=ex["splits"], split=ex["split"], seed=ex["seed"], exclude=ex["exclude"],
                       follow_links=ex["follow_links"])
    if "train" not in dataset.splits or "validation" not in dataset.splits:
        raise DatasetError(f"bneck run trains on the train split and ranks on validation, but {dataset.root} gives "
                           f"{', '.join(dataset.splits)}. Add the missing split(s), or use --split for one folder "
                           "per class.")
    common = {k: v for k, v in train.items() if k != "classifiers" and not isinstance(v, dict)}
    names = train["classifiers"]
    for name in names:
        cfg_one = classifier_config(name, {**common, "seed": cfg["seed"]}, {n: train[n] for n in names if n in train},
                                    names)
        check_counts(name, cfg_one, dataset.class_names, [r.label for r in dataset.splits["train"]],
                     [r.label for r in dataset.splits["validation"]], dataset.root)
