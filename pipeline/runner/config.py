"""``bneck run``'s configuration: TOML in, every key checked against the stages' tables, written back.

A config names the data and the run folder at the top level and has one table per
stage: ``[extract]`` takes every option of ``bneck extract`` (``bneck.features.extraction.options``),
``[train]`` every option of ``bneck train`` plus ``classifiers`` (``[train.NAME]``
overrides them for one classifier), ``[finetune]`` every option of ``bneck finetune``
plus ``enabled``, ``[ensemble]`` those of ``bneck ensemble`` plus ``enabled``, ``[report]``
its own. An unknown key, a value of the wrong type or out of range is a ConfigError
naming the key, what is allowed and what was received, at load time, before anything
runs. Relative paths in a file are relative to that file; the resolved config written
into the run folder holds absolute ones, so ``bneck run RUN/config.toml`` works from
any folder.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence

import tomllib

from bneck.core.errors import ConfigError
from bneck.core.files import open_regular, read_whole
from bneck.core.options import Option, OptionTable
from bneck.features.backbones.model_file import is_model_file
from bneck.features.extraction.options import EXTRACT
from bneck.pipeline.ensemble.options import RUN_ENSEMBLE
from bneck.pipeline.finetuning.options import FINETUNE
from bneck.pipeline.training.options import CLASSIFIERS, TRAIN, check_override

TOP = OptionTable(
    "run",
    [
        Option("data", str, None, "the image folder (required)"),
        Option("out", str, "runs/run", "the run folder"),
        Option("seed", int, 0, "one seed for training and fine-tuning", low=0, high=2**32 - 1),
    ],
)


def _once_each(names: list) -> list:
    if len(set(names)) != len(names) or not names:
        raise ConfigError(
            f"config key train.classifiers must list one or more classifiers, each once. "
            f"Received: classifiers={names!r}."
        )
    return names


RUN_TRAIN = OptionTable(
    "train",
    [
        Option(
            "classifiers",
            list,
            ["gap-dense", "logreg", "svm", "knn"],
            "the classifiers to train",
            item=str,
            choices=CLASSIFIERS,
            check_value=_once_each,
        ),
        *[o for n, o in TRAIN.options.items() if n != "seed"],
    ],
)
RUN_FINETUNE = OptionTable(
    "finetune",
    [
        Option("enabled", bool, True, "fine-tune a Keras head trained in this run"),
        Option(
            "head",
            str,
            "auto",
            "the head to fine-tune: `auto` (gap-dense when trained: the head made for "
            "fine-tuning, else the best Keras head on validation), `dense` or `gap-dense`",
            choices=("auto", "dense", "gap-dense"),
        ),
        *[o for n, o in FINETUNE.options.items() if n not in ("seed", "cache_dir")],
    ],
)
REPORT = OptionTable("report", [Option("worst", int, 16, "misclassified test images shown", low=0, high=10_000)])
TABLES = {"extract": EXTRACT, "train": RUN_TRAIN, "finetune": RUN_FINETUNE, "ensemble": RUN_ENSEMBLE, "report": REPORT}
# Keys holding paths: relative ones in a config file are relative to that file.
PATHS = {
    ("data",),
    ("out",),
    ("extract", "cache_dir"),
    ("extract", "weights"),
    ("extract", "backbone"),  # only when it names a model file
    ("finetune", "weights"),
}


def _defaults() -> dict:
    return {**TOP.defaults(), **{stage: table.defaults() for stage, table in TABLES.items()}}


DEFAULTS: dict = _defaults()


def load_config(path: str | None, overrides: Sequence[str] = (), base: dict | None = None, **flags) -> dict:
    """Return the resolved config: defaults <- ``base`` <- file <- ``--set`` overrides <- flags.

    Flags that are None are ignored. Raises ConfigError naming the offending key.
    """
    user: dict = copy.deepcopy(base or {})
    if path:
        _deep_update(user, _resolve_paths(_read(path), os.path.dirname(os.path.abspath(path))))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise ConfigError(
                f"--set takes KEY=VALUE with a dotted key and a value, e.g. finetune.epochs=5 (a value left out is "
                f"not an empty one: to unset a key, leave --set out). Received: {item!r}."
            )
        _assign(user, key.strip().split("."), _parse_value(text.strip()))
    for key, value in flags.items():
        if value is not None:
            user[key] = value
    resolved = _check(user)
    _check_encodable(resolved)
    if not resolved["data"]:
        raise ConfigError(
            'the config needs `data = "DATA_DIR"` (or --data DATA_DIR): the image '
            "folder with train/ and validation/ (test/ optional), or one folder per class."
        )
    return resolved


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of settings; a megabyte is far more than any


def _read(path: str) -> dict:
    """The config file as a table: a regular UTF-8 TOML file of at most a megabyte (never a FIFO that
    would block, or a nesting deep enough to exhaust the parser), else one ConfigError paragraph."""
    try:
        with open_regular(path) as handle:
            text = read_whole(handle, path, MAX_CONFIG_BYTES).decode("utf-8")
        return tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not a config file: TOML is UTF-8 text, and byte {exc.start} is not UTF-8. "
            "Save it as UTF-8 (`bneck init` writes a valid one)."
        ) from None
    except RecursionError:
        raise ConfigError(f"{path} nests tables or arrays too deeply to be a config file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from None


def absolute_paths(config: dict) -> dict:
    """Return ``config`` with its relative paths made absolute (from the current folder)."""
    return _resolve_paths(copy.deepcopy(config), os.getcwd())


def _resolve_paths(config: dict, folder: str) -> dict:
    """Make the path keys of a config file absolute, relative to the file's folder."""
    for keys in PATHS:
        table = config
        for key in keys[:-1]:
            table = table.get(key) if isinstance(table.get(key), dict) else {}
        value = table.get(keys[-1])
        if isinstance(value, str) and value and not _names_no_file(keys[-1], value):
            table[keys[-1]] = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
    return config


def _names_no_file(key: str, value: str) -> bool:
    """Whether a path key's value is a name rather than a path ('imagenet', 'none', a backbone's name)."""
    if key == "backbone":
        return not is_model_file(value)
    return key == "weights" and value.lower() in ("imagenet", "none")


def _deep_update(target: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(table: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key} is not a table.")
    table[keys[-1]] = value


def _check(user: dict) -> dict:
    """Return the full config with every key of ``user`` checked against its table."""
    top = {k: v for k, v in user.items() if k not in TABLES}
    unknown = sorted(set(top) - set(TOP.options))
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r}; allowed at the top: {', '.join([*TOP.options, *TABLES])}."
        )
    resolved = {n: TOP[n].check(v, f"config key {n}") for n, v in {**TOP.defaults(), **top}.items()}
    for stage, table in TABLES.items():
        given = user.get(stage, {})
        if not isinstance(given, dict):
            raise ConfigError(f"config key {stage} must be a table. Received: {given!r}.")
        per_classifier = {k: given[k] for k in given if stage == "train" and k in CLASSIFIERS}
        plain = {k: v for k, v in given.items() if k not in per_classifier}
        for key in plain:
            if key not in table:
                extra = list(CLASSIFIERS) if stage == "train" else []
                raise ConfigError(
                    f"unknown config key '{stage}.{key}'; allowed here: {', '.join([*table.options, *extra])}."
                )
        resolved[stage] = {
            **table.defaults(),
            **{k: table[k].check(v, f"config key {stage}.{k}") for k, v in plain.items()},
        }
        for name, options in per_classifier.items():
            resolved[stage][name] = _classifier_table(name, options, resolved[stage]["classifiers"])
    return resolved


def _classifier_table(name: str, options, listed: list) -> dict:
    """Check a ``[train.NAME]`` table: options that classifier takes, and it must be listed."""
    if name not in listed:
        raise ConfigError(
            f"config table [train.{name}] configures {name}, which is not in train.classifiers ({', '.join(listed)})."
        )
    return check_override(name, options, f"train.{name}", "config key")


def toml_value(value) -> str:
    """Return ``value`` (a string, number, bool or list of them) as a TOML value: strings as basic
    strings, every control character escaped, other characters as they are (the file is UTF-8)."""
    if isinstance(value, str):
        body = "".join(
            f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\\\" if c == "\\" else '\\"' if c == '"' else c
            for c in value
        )
        return f'"{body}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _check_encodable(value, key: str = "") -> None:
    """Refuse strings a UTF-8 TOML file cannot hold (a path with bytes that are not UTF-8)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_encodable(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_encodable(v, key)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                f"config key {key} holds {value.encode('utf-8', 'backslashreplace').decode()!r}, "
                "whose bytes are not UTF-8 text; a run's config.toml cannot record it. Rename "
                "the folder or file."
            ) from None


def to_toml(config: dict) -> str:
    """Return ``config`` as TOML (keys with value None are written as comments)."""
    lines: list[str] = []

    def emit(table: dict, prefix: str) -> None:
        for key, value in table.items():
            if not isinstance(value, dict):
                lines.append(f"# {key} = (default)" if value is None else f"{key} = {toml_value(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.extend(["", f"[{prefix}{key}]"])
                emit(value, f"{prefix}{key}.")

    emit(config, "")
    return "\n".join(lines) + "\n"


def starting_backbone(online: bool | None = None) -> tuple[dict, list[str]]:
    """The ``[extract]`` values ``bneck init`` writes, and the comment lines that say why.

    The default backbone when its ImageNet file is here or can be downloaded now (``online``
    None: try its host; ``$BNECK_OFFLINE`` set: offline); offline, the backbone whose file is here
    with the highest ImageNet top-1; none here: the default, with how to bring a file.
    """
    from bneck.features.backbones.registry import get_backbone
    from bneck.features.backbones.weights_store import can_download, find_imagenet, strongest_here

    default = get_backbone(EXTRACT.options["backbone"].default)
    file_name = default.weights_file(default.default_alpha, default.default_size) or ""
    if find_imagenet(file_name):
        return {}, [f"# backbone: {default.name} (the default); its ImageNet weights file is on this machine."]
    if online if online is not None else can_download(default.weights_url(file_name)):
        return {}, [f"# backbone: {default.name} (the default); its ImageNet weights are downloaded on first use."]
    best = strongest_here()
    if best is None:
        return {}, [
            f"# backbone: {default.name} (the default), but this machine is offline and holds no ImageNet weights",
            '# file: add one with `bneck weights add FILE`, or set weights = "none" (random) or a file path.',
        ]
    values = {"backbone": best.backbone.name, **({"alpha": best.alpha} if best.alpha else {}), "size": best.size}
    width = f", alpha {best.alpha}" if best.alpha else ""
    return values, [
        f"# backbone: {best.backbone.name}{width}, the strongest (ImageNet top-1 {best.top1:.1%}) whose ImageNet",
        "# weights file is on this machine (`bneck weights`): this machine is offline, so the default,",
        f"# {default.name}, whose weights are downloaded on first use, would stop the run.",
    ]


def config_template(data: str | None = None, out: str | None = None, extract: tuple[dict, list[str]] = ({}, [])) -> str:
    """Return a commented config: every key of every table with its default and what it does, the
    defaults active, the keys without a default commented out; ``extract`` holds values for
    ``[extract]`` and the comment lines saying why. ``load_config`` reads it back."""
    lines = [
        "# bneck run configuration (written by `bneck init`). Run it with: bneck run THIS_FILE",
        "# Every key is shown with its default; delete what you do not change. Relative paths are",
        "# relative to this file. Per-classifier settings go in [train.NAME] tables, e.g. [train.svm].",
        "",
    ]

    def emit(table: OptionTable, values: dict) -> None:
        for name, option in table.options.items():
            if not option.cli and name not in values:
                continue
            lines.append(f"# {option.help} ({option.allowed()})")
            value = values.get(name, option.default)
            lines.append(f"# {name} =" if value is None else f"{name} = {toml_value(value)}")

    emit(TOP, {"data": data, "out": out or TOP.options["out"].default})
    for stage, table in TABLES.items():
        lines.extend(["", f"[{stage}]"])
        if stage == "extract":
            lines.extend(extract[1])
        emit(table, extract[0] if stage == "extract" else {})
    return "\n".join(lines) + "\n"
