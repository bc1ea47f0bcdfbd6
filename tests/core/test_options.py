"""Stage options are declared once (an OptionTable) and checked once, at the stage function's boundary."""

from __future__ import annotations

import inspect

import pytest

from bneck.core.errors import ConfigError
from bneck.core.options import Option, OptionTable, signature_matches, takes_options

pytestmark = pytest.mark.pure

TABLE = OptionTable(
    "demo",
    [
        Option("epochs", int, 5, "passes", low=1),
        Option("lr", float, 0.1, "step", low=0, open_low=True),
        Option("names", list, ["a"], "which", item=str, choices=("a", "b")),
    ],
)


@takes_options(TABLE)
def stage(data, *, epochs: int = 5, lr: float = 0.1, names=("a",), verbose: bool = True):
    return data, epochs, lr, names, verbose


def test_values_are_checked_and_normalised_before_the_body_runs():
    assert stage("d", lr=1) == ("d", 5, 1.0, ["a"], True)  # an int for a float option becomes a float
    assert isinstance(stage("d", lr=1)[2], float)
    assert stage("d", names=["b", "a"], verbose=False)[3:] == (["b", "a"], False)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"epochs": 0}, "--epochs must be an integer >= 1. Received: epochs=0"),
        ({"lr": 0.0}, "--lr must be a finite number > 0"),
        ({"names": ["c"]}, "'c'"),
        ({"epoch": 3}, "unexpected keyword argument 'epoch'; its demo options are epochs, lr, names"),
    ],
)
def test_a_bad_value_or_an_unknown_name_is_one_config_error(kwargs, says):
    with pytest.raises(ConfigError, match=None) as caught:
        stage("d", **kwargs)
    assert says in str(caught.value)


def test_the_real_signature_is_what_callers_see():
    assert list(inspect.signature(stage).parameters) == ["data", "epochs", "lr", "names", "verbose"]


def test_a_signature_that_drifts_from_its_table_is_found():
    def drifted(data, *, epochs=6, lr=0.1):
        return data

    assert signature_matches(stage, TABLE) == []  # a tuple default stands for a list option's list
    assert signature_matches(drifted, TABLE) == [
        "epochs: default 6, the table says 5",
        "names: not a keyword-only parameter",
    ]


def test_options_given_another_way_are_folded_in_before_the_check():
    def fold(arguments):  # ``both={"epochs": n}`` says epochs too, and wins
        return {**arguments, **(arguments.get("both") or {})}

    @takes_options(TABLE, fold=fold)
    def folded(*, epochs: int = 5, lr: float = 0.1, names=("a",), both=None):
        return epochs, lr

    assert folded(epochs=0, both={"epochs": 2, "lr": 1}) == (2, 1.0)  # checked (1 -> 1.0), and the fold wins
    with pytest.raises(ConfigError, match="--epochs must be an integer >= 1. Received: epochs=0"):
        folded(both={"epochs": 0})


def _every_option_table():
    """Every OptionTable of every command and of `bneck run`'s config, found in the modules that declare them."""
    import importlib

    from bneck.core.options import OptionTable

    modules = [
        "bneck.features.extraction.options",
        "bneck.pipeline.training.options",
        "bneck.pipeline.finetuning.options",
        "bneck.pipeline.ensemble.options",
        "bneck.pipeline.runner.config",
    ]
    tables = {}
    for name in modules:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, OptionTable):
                tables[f"{name}:{value.stage}:{id(value)}"] = value
    return list(tables.values())


def _misspelt(choice: str) -> str:
    """The choice as a hurried user types it: other case, a stray '-' (what did_you_mean sees through)."""
    return "-" + str(choice).upper()


def test_every_choice_of_every_option_says_did_you_mean():
    from bneck.core.errors import ConfigError

    walked = 0
    for table in _every_option_table():
        for option in table.options.values():
            for choice in option.choices:
                if not isinstance(choice, str):
                    continue
                value = [_misspelt(choice)] if option.kind is list else _misspelt(choice)
                with pytest.raises(ConfigError) as err:
                    option.check(value)
                assert f"Did you mean {choice!r}?" in str(err.value), (table.stage, option.name, str(err.value))
                walked += 1
    assert walked > 40  # pools, optimizers, schedules, dtypes, classifiers, heads...


def test_every_registry_backed_choice_says_did_you_mean():
    """Backbones, runtimes, export formats and classifiers are checked by their registries."""
    from bneck.core.errors import BneckError
    from bneck.features.backbones.registry import BACKBONES, get_backbone
    from bneck.features.runtimes.registry import known_runtime, list_runtimes
    from bneck.pipeline.export.formats import get_format, list_formats
    from bneck.pipeline.training.classifiers import get_classifier, list_classifiers

    cases = [(get_backbone, name) for name in BACKBONES]
    cases += [(known_runtime, entry["name"]) for entry in list_runtimes()]
    cases += [(get_format, name) for name in list_formats()]
    cases += [(get_classifier, entry.name) for entry in list_classifiers()]
    for lookup, name in cases:
        with pytest.raises(BneckError) as err:
            lookup(name + "x" if len(name) > 6 else "-" + name.upper() + "!")
        assert f"{name!r}" in str(err.value) and "id you mean" in str(err.value), (name, str(err.value))


BOUNDED_BY_THE_BACKBONE = {"size"}  # 32 to 1024 pixels, said with the backbone (tests/pipeline/cli/test_mistakes.py)


def test_every_number_an_option_takes_is_bounded_and_its_bound_refused_beyond():
    """`--units 1099511627776` was an out-of-memory traceback and `--zoom 1e308` NaN rows: every numeric
    option has a finite upper bound, and a value past it (1e308, or 2**40 for integers) is one
    ConfigError naming the option and its allowed values, before any work."""
    from bneck.core.errors import ConfigError

    walked = 0
    for table in _every_option_table():
        for option in table.options.values():
            kind = option.item if option.kind is list else option.kind
            if kind not in (int, float) or option.name in BOUNDED_BY_THE_BACKBONE:
                continue
            assert option.high is not None, (table.stage, option.name)
            for huge in (1e308, 2**40) if kind is float else (2**40,):
                value = [huge] if option.kind is list else huge
                with pytest.raises(ConfigError) as err:
                    option.check(value)
                assert option.flag in str(err.value) or option.name in str(err.value), str(err.value)
            walked += 1
    assert walked > 30
