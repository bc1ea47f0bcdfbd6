"""``bneck run``: extract -> train classifiers -> fine-tune the best Keras head -> ensemble -> report.

``run`` only composes: each stage checks its own options, decides its own reuse and
says why it ran (the feature cache for extraction, ``training.reuse`` for each
classifier, ``finetuning.reuse`` for the fine-tuned model), exactly as when it is
called alone. A second run that changes one classifier's option re-trains only that
classifier and runs no extraction.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from bneck.core.advice import advice_for, config_words
from bneck.core.atomic import atomic_open
from bneck.core.errors import BneckError
from bneck.core.folders import MARKER, claim_folder, remove_owned
from bneck.core.private import releases_claims
from bneck.features import extract
from bneck.pipeline.finetuning.stage import finetune
from bneck.pipeline.runner.checks import check_before_work, check_not_moved
from bneck.pipeline.runner.config import TABLES, absolute_paths, load_config, to_toml
from bneck.pipeline.runner.gain import paired_gain, run_test_truth, winner_versus_runner_up
from bneck.pipeline.training.classifiers import is_keras
from bneck.pipeline.training.leaderboard import Leaderboard, Result, write_leaderboard
from bneck.pipeline.training.stage import train

log = logging.getLogger(__name__)


@dataclass
class ExtractStage:
    """What extraction did: seconds, images through the network, per-split counts, the extractor."""

    seconds: float
    forward_images: int
    model_built: bool
    splits: dict  # split -> images, reused, computed, quarantined [(path, reason)]
    classes: list
    extractor: dict
    extractor_key: str
    runtime: str = ""  # who computed the rows this run, and why
    runtime_why: str = ""


@dataclass
class RunStages:
    """Every stage of a run: its outcome and its time."""

    extract: ExtractStage
    train: list[Result] = field(default_factory=list)
    train_seconds: float = 0.0
    finetune: Result | None = None  # the fine-tuned model, when there is one
    finetune_tta: Result | None = None  # the same scored with test-time augmentation (--tta)
    finetune_head: str = ""
    finetune_skipped: str = ""  # why there is none
    finetune_kept_head: bool = False  # it ran, and no epoch beat the head: no second, identical row
    ensemble: Result | None = None  # the ensemble selected over the run's models, when it combines two or more
    ensemble_note: str = ""  # why there is none (disabled, or selection kept one model alone)
    ensemble_seconds: float = 0.0
    ensemble_members: dict = field(default_factory=dict)  # name -> weight
    ensemble_why: str = ""  # why it beat the best single model on validation
    report_seconds: float = 0.0

    def to_json(self) -> dict:
        """Return the stages as ``run.json`` records them."""

        def model(r: Result) -> dict:
            out = {"folder": r.folder, "reused": r.reused, "why": r.why, "seconds": r.fit_seconds, "metrics": r.metrics}
            if r.gain:
                out["versus"] = {"model": r.versus, "test": r.gain.to_json()}
            elif r.gain_note:
                out["versus"] = {"none": r.gain_note}
            return out

        finetuned = (
            {**model(self.finetune), "head": self.finetune_head}
            if self.finetune
            else {"skipped": self.finetune_skipped}
        )
        if self.finetune_tta:
            finetuned["tta"] = model(self.finetune_tta)
        ensemble = (
            {**model(self.ensemble), "members": self.ensemble_members}
            if self.ensemble
            else {"none": self.ensemble_note, "seconds": self.ensemble_seconds}
        )
        return json.loads(
            json.dumps(
                {
                    "extract": asdict(self.extract),
                    "train": {r.name: model(r) for r in self.train},
                    "train_seconds": self.train_seconds,
                    "finetune": finetuned,
                    "ensemble": ensemble,
                    "report": {"seconds": self.report_seconds},
                },
                default=str,
            )
        )


@dataclass
class RunResult:
    """What ``run`` did: the folder, the config, the leaderboard (best first), each stage, the report."""

    folder: str
    config: dict
    stages: RunStages
    leaderboard: list[Result] = field(default_factory=list)
    report: str | None = None
    winner: str = ""  # the first model against the runner-up, paired on the test images


@releases_claims
def run(
    config: str | None = None, *, overrides: Sequence[str] = (), verbose: bool = True, base: dict | None = None, **flags
) -> RunResult:
    """Run the whole experiment from a TOML config (or only flags); returns the RunResult.

    ``flags`` override top-level keys (data, out, seed); ``overrides`` are
    ``stage.key=value`` strings; ``base`` (a config dict) sits under the file.
    Raises ConfigError (and the stages' BneckErrors), before anything is written when
    the config or the data cannot work.
    """
    with advice_for(stage_words()):  # the checks of every stage, before any work
        cfg = absolute_paths(load_config(config, overrides, base, **flags))
        check_not_moved(config, cfg, flags.get("out") is not None)
        check_before_work(cfg)
    new_folder = not os.path.lexists(cfg["out"])
    out = claim_folder(cfg["out"], "run", inputs=[cfg["data"]])
    say = log.info if verbose else (lambda text: None)

    say("== extract")
    with advice_for(stage_words("extract")), _removed_if_refused(out, new_folder):
        stages = RunStages(_extract(cfg, out, verbose))
    _write_resolved_config(out, cfg)  # after the first stage: a refused run leaves an earlier run's config as it was
    say("== train")
    start = time.perf_counter()
    with advice_for(stage_words("train")):
        board = _train_classifiers(cfg, out, verbose)
    stages.train, stages.train_seconds = list(board.results), time.perf_counter() - start
    truth = run_test_truth(out)  # the run's test images
    verified: dict = {}  # each model folder, verified once
    with advice_for(stage_words("finetune")):
        _finetune_best(cfg, out, stages, say, verbose, truth, verified)
    finetuned = [r for r in (stages.finetune, stages.finetune_tta) if r]
    singles = sorted(stages.train + finetuned, key=validation_rank)
    with advice_for(stage_words("ensemble")):
        _ensemble_of(cfg, out, stages, say, singles, truth, verified)
    ensemble = [stages.ensemble] if stages.ensemble else []  # first among equals: its validation log loss is lower
    leaderboard = sorted(ensemble + singles, key=validation_rank)
    write_leaderboard(os.path.join(out, "leaderboard.csv"), leaderboard)
    result = RunResult(out, cfg, stages, leaderboard, winner=winner_versus_runner_up(leaderboard, truth, verified))

    say("== report")
    from bneck.pipeline.runner.report import write_report

    start = time.perf_counter()
    result.report = write_report(result, cfg["report"]["worst"])
    stages.report_seconds = time.perf_counter() - start
    _write_run_json(out, cfg, stages, leaderboard)
    return result


def validation_rank(r: Result) -> tuple[float, float]:
    """Validation accuracy first, then validation log loss: the order ensemble selection uses too, so
    models that tie on accuracy are ranked the same way everywhere."""
    loss = (r.metrics.get("validation") or {}).get("loss") if isinstance(r.metrics, dict) else None
    return -(r.accuracy("validation") or 0.0), loss if isinstance(loss, (int, float)) and loss == loss else float("inf")


def stage_words(stage: str | None = None):
    """How a flag is said under ``bneck run``: its key in ``stage``'s config table (None: in the first
    table that has it, for the checks of every stage made before any work)."""
    if stage is not None:
        return config_words(stage, TABLES[stage].options)
    tables = [config_words(name, table.options) for name, table in TABLES.items()]
    return lambda name, value: next((said for words in tables if (said := words(name, value))), None)


@contextmanager
def _removed_if_refused(out: str, new_folder: bool):
    """Remove the run folder this run created when the first stage is refused before writing anything
    into it (a refused run leaves no folder behind); any other folder is left as it is."""
    try:
        yield
    except BneckError:
        if new_folder and _holds_nothing_made(out):
            remove_owned(out, "run")
        raise


def _holds_nothing_made(out: str) -> bool:
    """Whether the run folder holds only its marker and folders holding nothing but theirs (what a refused
    first stage leaves: ``features/``, claimed before the weights failed to load)."""
    if not os.path.isdir(out) or os.path.islink(out):
        return False
    for name in os.listdir(out):
        path = os.path.join(out, name)
        empty_folder = os.path.isdir(path) and not os.path.islink(path) and set(os.listdir(path)) <= {MARKER}
        if name != MARKER and not empty_folder:
            return False
    return True


def _write_resolved_config(out: str, cfg: dict) -> None:
    """Write the resolved configuration into the run folder as ``config.toml``."""
    with atomic_open(os.path.join(out, "config.toml"), encoding="utf-8") as handle:
        handle.write("# bneck run: the resolved configuration of this run (rerun with `bneck run THIS_FILE`)\n")
        handle.write(to_toml(cfg))


def _train_classifiers(cfg: dict, out: str, verbose: bool) -> Leaderboard:
    """Train the configured classifiers on the run's features into ``OUT/models``; returns the Leaderboard."""
    train_cfg = cfg["train"]
    return train(
        os.path.join(out, "features"),
        train_cfg["classifiers"],
        os.path.join(out, "models"),
        verbose=verbose,
        seed=cfg["seed"],
        overrides={n: train_cfg[n] for n in train_cfg["classifiers"] if n in train_cfg},
        **{k: v for k, v in train_cfg.items() if k != "classifiers" and not isinstance(v, dict)},
    )


def _write_run_json(out: str, cfg: dict, stages: RunStages, leaderboard: list[Result]) -> None:
    """Write ``run.json``: the config, every stage and the leaderboard."""
    with atomic_open(os.path.join(out, "run.json")) as handle:
        json.dump(
            {
                "config": cfg,
                "stages": stages.to_json(),
                "leaderboard": [
                    {
                        "model": r.name,
                        "kind": r.kind,
                        "val_accuracy": r.accuracy("validation"),
                        "test_accuracy": r.accuracy("test"),
                        "folder": r.folder,
                    }
                    for r in leaderboard
                ],
            },
            handle,
            indent=1,
        )


def _extract(cfg: dict, out: str, verbose: bool) -> ExtractStage:
    from bneck.features import read_summary

    start = time.perf_counter()
    report = extract(cfg["data"], os.path.join(out, "features"), verbose=verbose, **cfg["extract"])
    if verbose:
        log.info(report.summary())
    return ExtractStage(
        time.perf_counter() - start,
        report.forward_images,
        report.model_built,
        {
            s.split: {"images": s.images, "reused": s.reused, "computed": s.computed, "quarantined": s.quarantine}
            for s in report.splits
        },
        list(read_summary(report.splits[0].file)["class_names"]),
        report.spec.describe(),
        report.spec.key,
        report.runtime,
        report.runtime_why,
    )


def _head_to_finetune(heads: list[Result], choice: str) -> Result:
    """The head ``choice`` names; for ``auto``, gap-dense (made for fine-tuning: a pooled input and few
    weights, so the unfrozen top does the learning), else the best Keras head on validation."""
    by_name = {r.name: r for r in heads}
    if choice != "auto":
        return by_name[choice]
    return by_name.get("gap-dense") or max(heads, key=lambda r: r.accuracy("validation") or 0.0)


def _finetune_best(cfg: dict, out: str, stages: RunStages, say, verbose: bool, truth: dict, verified: dict) -> None:
    """Fine-tune the configured head (``finetune.head``), or record why not."""
    heads = [r for r in stages.train if is_keras(r.name)]
    if not cfg["finetune"]["enabled"] or not heads:
        stages.finetune_skipped = (
            "disabled in the config"
            if not cfg["finetune"]["enabled"]
            else "no Keras head (dense, gap-dense) among the classifiers"
        )
        return
    best = _head_to_finetune(heads, cfg["finetune"]["head"])
    say(f"== fine-tune ({best.name} head)")
    settings = {k: v for k, v in cfg["finetune"].items() if k not in ("enabled", "head")}
    done = finetune(
        best.folder,
        cfg["data"],
        os.path.join(out, "finetuned"),
        verbose=verbose,
        seed=cfg["seed"],
        cache_dir=cfg["extract"]["cache_dir"],
        **settings,
    )
    frozen = max(stages.train, key=lambda r: r.accuracy("validation") or 0.0)  # what you would pick unfine-tuned
    stages.finetune_head = best.name
    if done.metrics.get("kept_epoch") == 0:  # the folder holds the head itself: its row would repeat the head's
        stages.finetune_kept_head = True
        stages.finetune_skipped = (
            f"kept the {best.name} head: {done.seconds:.1f} s of fine-tuning{' (reused)' if done.reused else ''} "
            f"found no epoch better than it on validation, so there is no second, identical row "
            f"({done.folder} holds it as one model)"
        )
        say(f"fine-tune: {stages.finetune_skipped}")
        return
    rows = [(f"fine-tuned {best.name}", done.metrics, "predictions.csv")]
    if "tta" in done.metrics:
        rows.append((f"fine-tuned {best.name} + mirror TTA", done.metrics["tta"], "predictions_tta.csv"))
    results = []
    for name, metrics, predictions in rows:
        result = Result(name, done.folder, metrics, done.seconds, reused=done.reused, why=done.why, kind="fine-tuned")
        result.gain, result.gain_note = paired_gain(result, frozen, truth, predictions, verified)
        result.versus = frozen.name if result.gain else ""
        results.append(result)
        if result.gain:
            say(f"{name} against {frozen.name} (the best frozen model on validation), test: {result.gain.describe()}")
        else:
            say(f"{name}: no paired comparison with {frozen.name}: {result.gain_note}")
    stages.finetune = results[0]
    stages.finetune_tta = results[1] if len(results) > 1 else None


def _ensemble_of(cfg: dict, out: str, stages: RunStages, say, singles: list[Result], truth: dict, verified: dict):
    """Select an ensemble over the run's models (classifiers and the fine-tuned model) into OUT/ensemble and
    pair it with the best single model on test; or record why there is none (and leave no stale folder)."""
    from bneck.core.folders import folder_kind, remove_owned
    from bneck.pipeline.ensemble.build import make_ensemble, summary, why_kept

    settings, folder = cfg["ensemble"], os.path.join(out, "ensemble")
    candidates = stages.train + ([stages.finetune] if stages.finetune else [])  # TTA: the same folder, not a model
    made = None
    if settings["enabled"] and len(candidates) >= 2:
        say("== ensemble")
        made = make_ensemble(
            [r.folder for r in candidates],
            folder,
            max_size=settings["max_size"],
            names=[r.name for r in candidates],
            write_single=False,
            verbose=False,
        )
        stages.ensemble_seconds = made.seconds
        say(summary(made))
    if made is None or made.selection.single:
        stages.ensemble_note = (
            "disabled in the config"
            if not settings["enabled"]
            else f"the run has {len(candidates)} model(s) to combine; an ensemble needs two"
            if made is None
            else f"{why_kept(made)}, so there is no second, identical row"
        )
        if folder_kind(folder) == "ensemble":  # one from an earlier run of this folder would be stale
            remove_owned(folder, "ensemble")
            stages.ensemble_note += f"; the earlier run's {folder} was removed (it no longer describes this run)"
        return
    stages.ensemble_members = dict(made.members)
    stages.ensemble_why = why_kept(made)
    result = Result(
        "ensemble",
        made.folder,
        made.metrics,
        made.seconds,
        reused=made.reused,
        why="unchanged" if made.reused else f"selected {made.describe()}",
        kind="ensemble",
    )
    best = singles[0]  # the best single model on validation: what you would pick without the ensemble
    result.gain, result.gain_note = paired_gain(result, best, truth, "predictions.csv", verified)
    result.versus = best.name if result.gain else ""
    stages.ensemble = result
    if result.gain:
        say(f"ensemble against {best.name} (the best single model on validation), test: {result.gain.describe()}")
