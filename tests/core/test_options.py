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
