"""``bneck run``: extract -> train classifiers -> fine-tune the best Keras head -> report.

Every stage reuses what it can: extraction through the content-keyed feature cache,
each classifier when its folder was trained with the same options on the same
feature files (by sha256), the fine-tuned model when it was made from the same head
(by its manifest's sha256) with the same settings. A second run that changes one
classifier's option re-trains only that classifier and runs no extraction.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from features.atomic import atomic_open
from features.outputs import claim_folder
from features import extract
from features.hashing import sha256_file

from ..artifacts import ArtifactError, check_model
from .config import absolute_paths, classifier_options, load_config, to_toml
from ..training.heads import HEADS
from ..training.stage import HEAD_OPTIONS, SKLEARN_OPTIONS, train


@dataclass
class RunResult:
    """What ``run`` did: the folder, the leaderboard rows and per-stage time and cache use."""

    folder: str
    config: dict
    leaderboard: list[dict] = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    report: Optional[str] = None


def run(config: Optional[str] = None, *, overrides: Sequence[str] = (), verbose: bool = True,
        base: Optional[dict] = None, **flags) -> RunResult:
    """Run the whole experiment from a TOML config (or only flags); returns the RunResult.

    ``flags`` override top-level keys (data, out, seed); ``overrides`` are
    ``stage.key=value`` strings; ``base`` (a config dict) sits under the file.
    Raises ConfigError (and the stages' BneckErrors).
    """
    cfg = absolute_paths(load_config(config, overrides, base, **flags))
    _check_before_work(cfg)
    out = claim_folder(cfg["out"], "run", inputs=[cfg["data"]])
    with atomic_open(os.path.join(out, "config.toml")) as handle:
        handle.write("# bneck run: the resolved configuration of this run (rerun with `bneck run THIS_FILE`)\n")
        handle.write(to_toml(cfg))
    result = RunResult(out, cfg)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if verbose else (lambda text: None)

    say("== extract")
    start = time.perf_counter()
    ex = cfg["extract"]
    report = extract(cfg["data"], os.path.join(out, "features"), verbose=verbose,
                     **{k: v for k, v in ex.items()})
    result.stages["extract"] = {
        "seconds": time.perf_counter() - start, "forward_images": report.forward_images,
        "model_built": report.model_built,
        "splits": {s.split: {"images": s.images, "reused": s.reused, "computed": s.computed,
                             "quarantined": s.quarantine} for s in report.splits},
        "classes": _class_names(report), "extractor": report.spec.describe(),
        "extractor_key": report.spec.key}
    if verbose:
        print(report.summary(), file=sys.stderr)

    say("== train")
    features_dir = os.path.join(out, "features")
    models = os.path.join(out, "models")
    trained = {}
    feature_shas = {name: sha256_file(os.path.join(features_dir, name))
                    for name in os.listdir(features_dir) if name.endswith(".h5")}
    for name in cfg["train"]["classifiers"]:
        opts = {**classifier_options(cfg["train"], name), "seed": cfg["seed"]}
        start = time.perf_counter()
        folder = os.path.join(models, name)
        reused = _classifier_is_current(folder, name, opts, feature_shas)
        if not reused:
            say(f"training {name}")
            train(features_dir, [name], models, verbose=verbose, **opts)
        trained[name] = {"folder": folder, "reused": reused, "seconds": time.perf_counter() - start,
                         "metrics": _read_json(os.path.join(folder, "metrics.json"))}
    result.stages["train"] = trained
    rows = [_row(name, t["folder"], t["metrics"], "classifier") for name, t in trained.items()]

    ft_cfg = cfg["finetune"]
    keras_heads = [n for n in trained if n in HEADS]
    if ft_cfg["enabled"] and keras_heads:
        best = max(keras_heads, key=lambda n: trained[n]["metrics"]["validation"]["accuracy"])
        say(f"== fine-tune ({best} head)")
        result.stages["finetune"] = _finetune_stage(cfg, trained[best]["folder"], out, verbose)
        result.stages["finetune"]["head"] = best
        rows.append(_row(f"fine-tuned {best}", result.stages["finetune"]["folder"],
                         result.stages["finetune"]["metrics"], "fine-tuned"))
    else:
        result.stages["finetune"] = {"skipped": "disabled in the config" if not ft_cfg["enabled"]
                                     else "no Keras head (dense, gap-dense) among the classifiers"}
    rows.sort(key=lambda r: -(r["val_accuracy"] or 0.0))
    result.leaderboard = rows
    _write_leaderboard(out, rows)

    say("== report")
    start = time.perf_counter()
    from .report import write_report

    result.report = write_report(result, cfg["report"]["worst"])
    result.stages["report"] = {"seconds": time.perf_counter() - start}
    with atomic_open(os.path.join(out, "run.json")) as handle:
        json.dump({"config": cfg, "stages": _jsonable(result.stages), "leaderboard": rows}, handle, indent=1)
    return result


def _check_before_work(cfg: dict) -> None:
    """Refuse, before a byte is written, what the data cannot support: look at the images the run would
    read (discovery only) and check the classifiers' options against their counts."""
    from features.dataset import discover
    from features.errors import DatasetError

    from ..training.stage import check_counts

    from features.cache import resolve_cache_dir

    ex = cfg["extract"]
    resolve_cache_dir(ex["cache_dir"], inputs=[cfg["data"], cfg["out"]])
    dataset = discover(cfg["data"], splits=ex["splits"], split=ex["split"], seed=ex["seed"], exclude=ex["exclude"],
                       follow_links=ex["follow_links"])
    if "train" not in dataset.splits or "validation" not in dataset.splits:
        raise DatasetError(f"bneck run trains on the train split and ranks on validation, but {dataset.root} gives "
                           f"{', '.join(dataset.splits)}. Add the missing split(s), or use --split for one folder "
                           "per class.")
    for name in cfg["train"]["classifiers"]:
        opts = {**classifier_options(cfg["train"], name), "seed": cfg["seed"]}
        check_counts([name], opts, dataset.class_names, [r.label for r in dataset.splits["train"]],
                     [r.label for r in dataset.splits["validation"]], dataset.root)


def _class_names(report) -> list[str]:
    from features import read_summary

    return list(read_summary(report.splits[0].file)["class_names"])


def _read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _intact_manifest(folder: str) -> Optional[dict]:
    """Return the folder's manifest if it matches and its model would load safely, else None."""
    try:
        return check_model(folder)
    except ArtifactError:
        return None


def _classifier_is_current(folder: str, name: str, opts: dict, feature_shas: dict) -> bool:
    """True when ``folder`` holds ``name`` trained with ``opts`` on feature files with these sha256s.

    ``feature_shas`` maps the file names in the features folder (``train.h5``...) to sha256.
    """
    manifest = _intact_manifest(folder)
    if manifest is None:
        return False
    keys = HEAD_OPTIONS if name in HEADS else SKLEARN_OPTIONS
    wanted = _jsonable({k: opts[k] for k in keys})
    if manifest.get("classifier") != name or manifest.get("config") != wanted:
        return False
    return all(feature_shas.get(f"{split}.h5") == entry.get("sha256")
               for split, entry in manifest.get("feature_files", {}).items())


def _finetune_stage(cfg: dict, head_dir: str, out: str, verbose: bool) -> dict:
    from ..finetuning.stage import finetune

    folder = os.path.join(out, "finetuned")
    settings = {k: v for k, v in cfg["finetune"].items() if k != "enabled"}
    settings.update(seed=cfg["seed"], cache_dir=cfg["extract"]["cache_dir"])
    start = time.perf_counter()
    if _finetuned_is_current(folder, head_dir, cfg["data"], settings):
        return {"folder": folder, "reused": True, "seconds": time.perf_counter() - start,
                "metrics": _read_json(os.path.join(folder, "metrics.json"))}
    result = finetune(head_dir, cfg["data"], folder, verbose=verbose, **settings)
    return {"folder": folder, "reused": False, "seconds": time.perf_counter() - start,
            "metrics": result.metrics}


def _finetuned_is_current(folder: str, head_dir: str, data: str, settings: dict) -> bool:
    """True when ``folder`` was fine-tuned from this head (by its manifest's sha256), data and settings."""
    manifest = _intact_manifest(folder)
    if manifest is None:
        return False
    from ..finetuning.options import FINETUNE, fingerprint

    head = sha256_file(os.path.join(head_dir, "manifest.json"))
    return (manifest.get("head", {}).get("manifest_sha256") == head
            and manifest.get("data") == os.path.abspath(os.path.expanduser(data))
            and manifest.get("requested") == _jsonable(fingerprint(FINETUNE.check(settings))))


def _row(name: str, folder: str, metrics: dict, kind: str) -> dict:
    def acc(split):
        return metrics.get(split, {}).get("accuracy")
    return {"model": name, "kind": kind, "val_accuracy": acc("validation"),
            "test_accuracy": acc("test"), "fit_seconds": metrics.get("fit_seconds"), "folder": folder}


def _write_leaderboard(out: str, rows: list[dict]) -> None:
    import csv

    with atomic_open(os.path.join(out, "leaderboard.csv"), newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "model", "val_accuracy", "test_accuracy", "fit_seconds", "folder"])
        for rank, r in enumerate(rows, 1):
            writer.writerow([rank, r["model"], _fmt(r["val_accuracy"]), _fmt(r["test_accuracy"]),
                             _fmt(r["fit_seconds"], 2), r["folder"]])


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"
