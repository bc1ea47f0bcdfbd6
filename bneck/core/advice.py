"""Error advice in the words of the entry point that met it.

Messages are written once, naming command-line flags (``pass --weights PATH``). The
command line prints them as they are; ``bneck run`` (a config) and the Python API restate
them on the way out: under ``bneck run``, a flag of the stage being run becomes its config
key (`` `weights = "PATH"` under [extract] ``); in the API, a keyword argument
(``weights="none"``). Only the message changes: the exception keeps its type.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from contextlib import contextmanager

from bneck.core.errors import BneckError
from bneck.core.private import no_write_for_others

# --flag, optionally followed by its value: a metavar (PATH), a number (0.5), one of the words
# values are (none, imagenet, auto, true, false), or anything after '=' (--layer=block_6)
_FLAG = re.compile(
    r"(?:(?<=^)|(?<=[\s(]))--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)"
    r"(?:=([\w.-]*\w)| ([A-Z][A-Z_]*(?![\w-])|-?\d+(?:\.\d+)?(?![\w.]*\w)|(?:none|imagenet|auto|true|false)\b))?"
)
_METAVAR = re.compile(r"[A-Z][A-Z_]*")


def _value(text: str, quote_metavar: bool = True) -> str:
    """A value as TOML and Python read it: numbers bare, anything else quoted (a metavar too in TOML)."""
    bare = re.fullmatch(r"-?\d+(\.\d+)?", text) or (not quote_metavar and _METAVAR.fullmatch(text))
    return text if bare else f'"{text}"'


def restate(message: str, render: Callable[[str, str | None], str | None]) -> str:
    """``message`` with each flag mention replaced by ``render(name, value)`` (None keeps it as it is).

    A mention starts the message or follows a space or parenthesis (``/x/--weights`` in a path, ``'--lr'``
    in a quoted name are not mentions), outside `code spans`.

    ``name`` is the option's name (``cache_dir`` for ``--cache-dir``); ``value`` what followed it, or None.
    """

    def replace(match: re.Match) -> str:
        name, value = match.group(1).replace("-", "_"), match.group(2) or match.group(3)
        said = render(name, value)
        if said is None:  # not this entry point's option: keep the flag and what followed it
            return match.group(0)
        return said

    # `code spans` (a shell command to paste, a value as received) are never reworded
    parts = message.split("`")
    return "`".join(_FLAG.sub(replace, part) if i % 2 == 0 else part for i, part in enumerate(parts))


def config_words(stage: str, names: Collection[str]) -> Callable[[str, str | None], str | None]:
    """Render the options ``names`` of ``stage`` as the config keys of ``bneck run``."""

    def render(name: str, value: str | None) -> str | None:
        if name not in names:
            return None
        return f"`{name} = {_value(value)}` under [{stage}]" if value else f"`{name}` under [{stage}]"

    return render


def keyword_words(name: str, value: str | None) -> str | None:
    """Render a flag as the keyword argument of the Python API (``--set`` has none: kept)."""
    if name == "set":
        return None
    return f"{name}={_value(value, quote_metavar=False)}" if value else name


@contextmanager
def advice_for(render: Callable[[str, str | None], str | None]):
    """Restate the message of a BneckError raised inside the block (same exception, new words)."""
    try:
        yield
    except BneckError as exc:
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (restate(exc.args[0], render), *exc.args[1:])
        raise


def api_entry(function: Callable) -> Callable:
    """``function`` as the public API serves it: its errors name keyword arguments, not flags, and what
    it creates is writable by its owner only, whatever the umask (bneck.core.private)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with advice_for(keyword_words), no_write_for_others():
            return function(*args, **kwargs)

    return wrapper
