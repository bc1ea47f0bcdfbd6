"""Help that reads as finished: every command gets a description and an example, every argument a help line.

The commands' own modules say what each option does; this module adds what they
leave out, in one place, and ``tests/pipeline/cli/test_info.py`` checks nothing is left
without. A default shown in a table option's help ("(default 16)") is not repeated.
"""

from __future__ import annotations

import argparse

EXAMPLES = {
    "extract": "bneck extract data/cats_and_dogs_small --out features --backbone mobilenet --alpha 0.25",
    "train": "bneck train features --classifier gap-dense,logreg,svm --out models",
    "evaluate": "bneck evaluate models/logreg features/test.h5",
    "predict": "bneck predict runs/demo/finetuned photos/ --top-k 1",
    "convert": "bneck convert old_models/svm --trust-pickle",
    "finetune": "bneck finetune models/gap-dense --out finetuned --epochs 12",
    "run": "bneck run my_run.toml --set train.epochs=20",
    "demo": "bneck demo --data data/cats_and_dogs_small --out runs/demo --backbone mobilenet --alpha 0.25",
    "cache": "bneck cache ls",
    "cache ls": "bneck cache ls --all",
    "cache info": "bneck cache info features/train.h5",
    "cache gc": "bneck cache gc --older-than 30",
    "cache rm": "bneck cache rm 5daf1d21",
    "cache verify": "bneck cache verify --recompute 16 --data data",
    "export": "bneck export runs/demo/models/logreg --out deploy/cats --format onnx",
    "backbones": "bneck backbones",
    "layers": "bneck layers mobilenetv2 --alpha 0.5",
    "init": "bneck init my_run.toml --data data/flowers",
}
DESCRIPTIONS = {
    "evaluate": "Score a saved classifier on a feature file made by the same extractor: accuracy, loss, macro F1, "
    "per-class precision/recall/F1 and the confusion matrix.",
    "cache": "Look into, check and tidy the shared feature cache (rows stored by extractor key and image sha256).",
    "cache ls": "One line per cache entry: what it holds (features, an augmented view, empty), the extractor, "
    "rows, size and when it was last used.",
    "cache info": "Print the full record of a feature file or of a cache entry (by key or unique key prefix).",
    "cache gc": "Remove stale temporaries and damaged chunks, merge small chunks, and with --older-than remove "
    "entries unused for that many days.",
}
HELP = {
    "--quiet": "print only the results: no progress bars, no stage headings",
    "--out": "the output folder (new, or one this command wrote before)",
    "--seed": "seed for everything random (default: the config's, 0)",
    "--alpha": "width multiplier for mobilenet/mobilenetv2 (default: the backbone's)",
    "--size": "input size in pixels (default: the backbone's)",
    "--batch-size": "images per batch (default: %(default)s)",
    "--older-than": "also remove entries not used for this many days",
    "features_dir": "a folder written by `bneck extract` (train.h5, validation.h5, test.h5)",
    "model_dir": "a model folder written by `bneck train`, `bneck finetune` or `bneck run`",
    "feature_file": "a split file written by `bneck extract`, e.g. features/test.h5",
    "inputs": "image files, or folders read recursively",
    "config": "a TOML config (`bneck init` writes a commented one); without it, flags and --set only",
}


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks."""


def polish(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Fill in descriptions, examples and help lines the commands left out, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = f"{path} {name}".strip()
                sub.description = sub.description or DESCRIPTIONS.get(key) or _help_of(action, name)
                if key in EXAMPLES and (not sub.epilog or "bneck " not in sub.epilog):
                    sub.epilog = (sub.epilog + "\n\n" if sub.epilog else "") + f"example:\n  {EXAMPLES[key]}"
                sub.formatter_class = Formatter
                polish(sub, key)
        elif action.help is None:
            name = action.option_strings[-1] if action.option_strings else action.dest
            action.help = HELP.get(name) or HELP.get(action.dest)


def _help_of(action, name: str) -> str:
    for choice in action._choices_actions:
        if choice.dest == name:
            return choice.help
    return ""
