"""``bneck run``'s configuration: TOML in, every key checked, the resolved config written back.

A config names the data and the run folder at the top level and has one table per
stage. Every key has a default here; an unknown key or a value of the wrong type is
a ConfigError naming the key, the allowed keys or type, and what was received.
``--set stage.key=value`` overrides (the value parsed as TOML, else taken as text).
"""
from __future__ import annotations

import copy
import json
import tomllib
from typing import Optional, Sequence

from features.errors import ConfigError

from .finetune_model import AUGMENT_DEFAULTS
from .train import CLASSIFIERS, DEFAULTS as TRAIN_DEFAULTS

DEFAULTS: dict = {
    "data": None,        # DATA_DIR (required)
    "out": "runs/run",   # the run folder
    "seed": 0,
    "extract": {"backbone": "vgg16", "alpha": None, "size": None, "weights": "imagenet",
                "layer": None, "pool": "none", "dtype": "float32", "batch_size": 32,
                "cache_dir": None},
    "train": {"classifiers": ["dense", "logreg", "svm", "knn"],
              **{k: v for k, v in TRAIN_DEFAULTS.items() if k != "seed"}},
    "finetune": {"enabled": True, "epochs": 15, "lr": 1e-4, "momentum": 0.9, "optimizer": "sgd",
                 "batch_size": 16, "unfreeze_from": "default", "early_stopping": 0,
                 "cache_frozen": True, "views": 4, **AUGMENT_DEFAULTS},
    "report": {"worst": 16},
}
KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              list: "a list"}
# Keys whose default is None: any of these types is accepted.
NULLABLE = {"data": (str,), "alpha": (float, int), "size": (int,), "layer": (str,),
            "cache_dir": (str,), "pca": (int, float), "search": (str,), "class_weight": (str,)}


def load_config(path: Optional[str], overrides: Sequence[str] = (), base: Optional[dict] = None,
                **flags) -> dict:
    """Return the resolved config: defaults <- ``base`` <- file <- ``--set`` overrides <- flags.

    Flags that are None are ignored. Raises ConfigError naming the offending key.
    """
    user: dict = copy.deepcopy(base or {})
    if path:
        try:
            with open(path, "rb") as handle:
                _deep_update(user, tomllib.load(handle))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}.") from None
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE with a dotted key, e.g. finetune.epochs=5. "
                              f"Received: {item!r}.")
        _assign(user, key.strip().split("."), _parse_value(text.strip()))
    for key, value in flags.items():
        if value is not None:
            user[key] = value
    resolved = copy.deepcopy(DEFAULTS)
    _merge(resolved, user, "")
    if not resolved["data"]:
        raise ConfigError("the config needs `data = \"DATA_DIR\"` (or --data DATA_DIR): the image "
                          "folder with train/ and validation/ (test/ optional).")
    _check_classifiers(resolved["train"])
    return resolved


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


def _merge(base: dict, user: dict, where: str) -> None:
    for key, value in user.items():
        name = f"{where}{key}"
        if where == "train." and key in CLASSIFIERS:  # [train.NAME]: per-classifier options
            if not isinstance(value, dict):
                raise ConfigError(f"config key {name} must be a table of options for {key}. "
                                  f"Received: {value!r}.")
            options = {k: v for k, v in base.items() if k != "classifiers" and not isinstance(v, dict)}
            _merge(options, value, f"{name}.")
            base[key] = {k: options[k] for k in value}
            continue
        if key not in base:
            allowed = list(base) + (list(CLASSIFIERS) if where == "train." else [])
            raise ConfigError(f"unknown config key {name!r}; allowed here: {', '.join(allowed)}.")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {name} must be a table. Received: {value!r}.")
            _merge(default, value, f"{name}.")
        else:
            base[key] = _checked(name, key, default, value)


def _checked(name: str, key: str, default, value):
    if default is None:
        allowed = NULLABLE.get(key, (str, int, float))
    elif isinstance(default, bool):
        allowed = (bool,)
    elif isinstance(default, float):
        allowed = (float, int)
    else:
        allowed = (type(default),)
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        kinds = " or ".join(KIND_NAMES[t] for t in allowed if t is not int or float not in allowed)
        raise ConfigError(f"config key {name} must be {kinds}. Received: {value!r} "
                          f"({type(value).__name__}).")
    if isinstance(default, float) and not isinstance(value, bool):
        return float(value)
    return value


def _check_classifiers(train: dict) -> None:
    names = train["classifiers"]
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"config key train.classifiers must list one or more of "
                          f"{', '.join(CLASSIFIERS)}. Received: {names!r}.")
    for name in names:
        if name not in CLASSIFIERS:
            raise ConfigError(f"config key train.classifiers: unknown classifier {name!r}; "
                              f"allowed: {', '.join(CLASSIFIERS)}.")
    for name in CLASSIFIERS:
        if name in train and name not in names:
            raise ConfigError(f"config table [train.{name}] configures {name}, which is not in "
                              f"train.classifiers ({', '.join(names)}).")


def classifier_options(train: dict, name: str) -> dict:
    """Return the training options for classifier ``name``: common keys, then [train.NAME]."""
    common = {k: v for k, v in train.items() if k != "classifiers" and k not in CLASSIFIERS}
    return {**common, **train.get(name, {})}


def to_toml(config: dict) -> str:
    """Return ``config`` as TOML (keys with value None are written as comments)."""
    lines: list[str] = []

    def emit(table: dict, prefix: str) -> None:
        for key, value in table.items():
            if not isinstance(value, dict):
                lines.append(f"# {key} = (default)" if value is None else f"{key} = {json.dumps(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.extend(["", f"[{prefix}{key}]"])
                emit(value, f"{prefix}{key}.")

    emit(config, "")
    return "\n".join(lines) + "\n"
