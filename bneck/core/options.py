"""Option tables: each stage declares its options once (name, type, default, allowed values or
range, help), and the command line, the TOML config, the Python API's checks and the
README's tables all come from that declaration (as scikit-learn derives its validation
from ``_parameter_constraints``). A value outside its type or range is refused before
any work, in one paragraph naming the option, what is allowed and what was received.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bneck.core.errors import ConfigError, did_you_mean

_KIND_WORDS = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", list: "a list"}
_PLURALS = {int: "integers", float: "numbers", str: "strings"}


@dataclass(frozen=True)
class Option:
    """One option of a stage. ``low``/``high`` bound numbers (inclusive unless ``open_low``/``open_high``)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    nullable: bool = False
    item: type | None = None  # list items' type
    cli: bool = True  # offered on the command line
    metavar: str | None = None
    check_value: Callable[[Any], Any] | None = None  # extra check/normalisation (raises ConfigError)
    coerce: Callable[[Any], Any] | None = None  # applied before the type check (e.g. "a,b" -> list)
    allowed_text: str | None = None  # what it takes, in words, when the kind does not say it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        """Return what this option takes, in words."""
        if self.allowed_text:
            return self.allowed_text
        if self.kind is list:
            items = (
                ", ".join(repr(c) for c in self.choices)
                if self.choices
                else _PLURALS.get(self.item, "values")
                if self.item is not None
                else "values"
            )
            text = f"a list of {items}"
        elif self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _KIND_WORDS[self.kind]
            bounds = []
            number = (lambda v: str(int(v))) if self.kind is int else (lambda v: f"{v:g}")
            if self.low is not None:
                bounds.append(f"{'>' if self.open_low else '>='} {number(self.low)}")
            if self.high is not None:
                bounds.append(f"{'<' if self.open_high else '<='} {number(self.high)}")
            if bounds:
                text += " " + " and ".join(bounds)
        return text + (" (or unset)" if self.nullable else "")

    def check(self, value, where: str = ""):
        """Return ``value`` checked (ints become floats for float options); raises ConfigError."""
        where = where or self.flag
        if value is None and (self.nullable or self.default is None):
            return None
        if self.kind is str and isinstance(value, os.PathLike):  # paths: pathlib too
            value = os.fspath(value)
        if self.coerce is not None:
            value = self.coerce(value)
        ok = _is_kind(value, self.kind)
        if ok and self.kind is list and self.item is not None:
            ok = all(_is_kind(v, self.item) for v in value)
        if ok and self.kind is float:
            value = float(value)
            ok = math.isfinite(value)
        if ok and self.choices:
            items = value if self.kind is list else [value]
            ok = all(v in self.choices for v in items)
        if ok and self.low is not None:
            ok = value > self.low if self.open_low else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.open_high else value <= self.high
        if not ok:
            bad = ""
            if self.kind is list and self.choices and isinstance(value, (list, tuple)):
                wrong = [v for v in value if v not in self.choices]
                verb = "is" if len(wrong) == 1 else "are"
                bad = f"; {', '.join(map(repr, wrong))} {verb} not allowed" if wrong else ""
            if self.kind is list and isinstance(value, str):  # a list written as a bare word
                bad = f'; a list is written ["{value.strip("[]")}"] (with --set, quote it for the shell)'
            raise ConfigError(
                f"{where} must be {self.allowed()}. Received: {self.name}={value!r}"
                f"{'' if value is None else f' ({type(value).__name__})'}{bad}.{self._closest(value)}"
            )
        return self.check_value(value) if self.check_value else value

    def _closest(self, value) -> str:
        """ " Did you mean 'x'?" for the first value outside the choices, when one is close."""
        if not self.choices:
            return ""
        items = value if isinstance(value, (list, tuple)) else [value]
        wrong = [v for v in items if isinstance(v, str) and v not in self.choices]
        return did_you_mean(wrong[0], self.choices) if wrong else ""

    def markdown(self) -> str:
        """Return this option's row of the README's option table."""
        default = (
            "unset"
            if self.default is None
            else self.default
            if isinstance(self.default, str)
            else json.dumps(self.default)
        )
        default = default if default == "unset" else f"`{default}`"
        return f"| `{self.flag}` | {self.allowed()} | {default} | {self.help} |"


def _is_kind(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


class OptionTable:
    """The options of one stage, by name, in order."""

    def __init__(self, stage: str, options: Sequence[Option]):
        self.stage = stage
        self.options = {o.name: o for o in options}

    def __contains__(self, name: str) -> bool:
        return name in self.options

    def __getitem__(self, name: str) -> Option:
        return self.options[name]

    def defaults(self) -> dict:
        """Return {name: default} (lists copied)."""
        return {n: list(o.default) if isinstance(o.default, list) else o.default for n, o in self.options.items()}

    def check(self, values: dict, prefix: str = "--", names: Iterable[str] | None = None) -> dict:
        """Return ``values`` with defaults filled in and every value checked; raises ConfigError.

        ``prefix`` names options in messages ('--' for flags, 'extract.' for config keys).
        Unknown names are refused, listing the allowed ones.
        """
        allowed = list(names) if names is not None else list(self.options)
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown {self.stage} option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}."
            )
        out = {n: v for n, v in self.defaults().items() if n in allowed}
        for name, value in values.items():
            option = self.options[name]
            label = option.flag if prefix == "--" else f"{prefix}{name}"
            out[name] = option.check(value, label)
        return out

    def add_arguments(
        self, parser: argparse.ArgumentParser, names: Iterable[str] | None = None, defaults: dict | None = None
    ) -> None:
        """Add each option (or ``names``) to ``parser``; values are checked later by ``check``."""
        for name in names if names is not None else self.options:
            option = self.options[name]
            if not option.cli:
                continue
            default = (defaults or {}).get(name, option.default)
            shown = "" if default in (None, [], ()) or option.kind is bool else f" (default {default})"
            kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS, help=option.help + shown)
            if option.kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif option.kind is list:  # --exclude a b and --exclude a,b alike
                kwargs.update(nargs="+", metavar=option.metavar or "|".join(option.choices) or "VALUE")
            else:
                kwargs.update(
                    type=_parser_for(option),
                    metavar=option.metavar or "|".join(map(str, option.choices)) or option.name.upper(),
                )
            parser.add_argument(option.flag, **kwargs)

    def markdown(self, names: Iterable[str] | None = None) -> str:
        """Return the README's table of these options."""
        rows = [
            self.options[n].markdown() for n in (names if names is not None else self.options) if self.options[n].cli
        ]
        return "\n".join(["| option | allowed | default | meaning |", "|---|---|---|---|", *rows])


def takes_options(table: OptionTable, fold: Callable[[dict], dict] | None = None):
    """Decorate a stage function so that its ``table`` options are checked once, at its boundary.

    The function declares every option of ``table`` as a keyword-only parameter with the
    table's default (``signature_matches`` holds the two together, and the tests check it
    for every stage). Each call is bound to that signature, the table's options are checked
    (ConfigError, naming the option, what it allows and what was received, before any
    work), and the function runs with the checked values (ints given for float options
    become floats, lists are normalised). The pattern is scikit-learn's ``validate_params``.
    ``fold``, where a function also takes some options another way (several in one dict),
    gets the arguments the call gave ({name: value}) and returns those to use; it runs
    before the check, so what it puts in place is checked like the rest.
    """

    def decorate(function):
        signature = inspect.signature(function)
        names = [name for name in signature.parameters if name in table]

        @functools.wraps(function)
        def checked(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:  # an unknown or doubled keyword: the allowed ones, in one paragraph
                raise ConfigError(
                    f"{function.__name__}() {exc}; its {table.stage} options are {', '.join(names)}."
                ) from None
            if fold is not None:
                bound.arguments.update(fold(dict(bound.arguments)))
            values = {name: bound.arguments[name] for name in names if name in bound.arguments}
            bound.arguments.update(table.check(values, names=names))
            return function(*bound.args, **bound.kwargs)

        checked.__signature__ = signature  # what help() and editors show: the real parameters
        return checked

    return decorate


def signature_matches(function, table: OptionTable, names: Iterable[str] | None = None) -> list[str]:
    """Return the differences between ``function``'s keyword-only parameters and ``table`` (or its
    ``names``): an option missing from the signature, or declared with another default. Empty: they match."""
    parameters = inspect.signature(function).parameters
    problems = []
    for name in names if names is not None else table.options:
        parameter = parameters.get(name)
        if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            problems.append(f"{name}: not a keyword-only parameter")
        elif _as_declared(parameter.default, table[name].default) != table[name].default:
            problems.append(f"{name}: default {parameter.default!r}, the table says {table[name].default!r}")
    return problems


def _as_declared(value, declared):
    """A tuple default stands for a list option's list default (a signature should not hold a list)."""
    return list(value) if isinstance(declared, list) and isinstance(value, tuple) else value


def _parser_for(option: Option):
    """Return the argparse ``type`` for an option: numbers parsed, 'none' allowed when nullable."""

    def parse(text: str):
        if option.nullable and text.lower() == "none" and option.kind is not str:
            return None
        if option.kind in (int, float):
            try:
                return int(text) if option.kind is int else float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be {option.allowed()}; received {text!r}") from None
        return text

    parse.__name__ = option.name
    return parse


def namespace_values(args: argparse.Namespace, table: OptionTable) -> dict:
    """Return the options of ``table`` the command line set (argparse.SUPPRESS keeps the others out).

    List options may be given as several values, comma-separated values, or both.
    """
    out = {}
    for name, option in table.options.items():
        if hasattr(args, name):
            value = getattr(args, name)
            if option.kind is list and value is not None:
                value = [p.strip() for v in value for p in str(v).split(",") if p.strip()]
            out[name] = value
    return out
