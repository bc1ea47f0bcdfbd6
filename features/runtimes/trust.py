"""What this user has checked: a small record outside the shared cache.

A converted OpenVINO model in a shared cache could have been put there by anyone who
can write to the cache, and so could any verdict stored beside it. The outcome of a
check (an fp32 model against TensorFlow, an int8 model against fp32) is therefore
recorded per user, in ``$BNECK_STATE`` (default ``$XDG_STATE_HOME/bneck`` or
``~/.local/state/bneck``), keyed by the sha256 of the exact model bytes and the
machine it was checked on. A model is trusted only when this user checked those
bytes on this CPU class; any other model is checked again before it makes a row.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence

from filelock import FileLock

from bneck.core.atomic import atomic_open
from bneck.core.errors import BneckWarning, ConfigError
from bneck.core.files import open_regular
from bneck.core.private import make_private_folder, written_by_others

RECORD = "checked_models.json"


def state_dir() -> str:
    """Return this user's state folder for bneck."""
    base = os.environ.get("BNECK_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "bneck"
    )
    return os.path.abspath(os.path.expanduser(base))


def _path() -> str:
    return os.path.join(state_dir(), RECORD)


def _untrusted() -> str | None:
    """Why the record could have been written by someone else (folder or file), or None."""
    for path in (state_dir(), _path()):
        try:
            why = written_by_others(path)
        except OSError:  # missing, or not a folder: nothing to trust, and writing it says why
            continue
        if why:
            return f"{path}: {why}"
    return None


_WARNED: set[str] = set()


def _warn_untrusted(why: str) -> None:
    if why in _WARNED:
        return
    _WARNED.add(why)
    warnings.warn(
        f"bneck ignores the record of checked models in {state_dir()} ($BNECK_STATE) and does not write it "
        f"there: {why}, so someone else could have written it. Every converted model is checked against "
        f"TensorFlow again before it makes a row (slower, never wrong). Make the folder yours and writable "
        f"by you only (chmod 700 {state_dir()}), or point BNECK_STATE at a private folder.",
        BneckWarning,
        stacklevel=4,
    )


def _read() -> dict:
    why = _untrusted()
    if why:
        _warn_untrusted(why)
        return {}
    try:  # a regular file only: a FIFO or device planted there is no record (and never blocks)
        with open_regular(_path()) as handle:
            record = json.load(handle)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def recorded(kind: str, model_sha256: str, where: str, numbers: Sequence[str]) -> dict | None:
    """Return this user's check of ``kind`` ('fp32 vs tensorflow', 'int8 vs fp32') of the model with
    these bytes on this machine, or None. A record that is not a table holding every field of
    ``numbers`` as a finite number is no record (the model is checked again): verdicts are
    decided from the measured numbers, never from a stored flag."""
    check = _read().get(f"{kind} | {model_sha256} | {where}")
    if not isinstance(check, dict) or not all(_number(check.get(name)) for name in numbers):
        return None
    return check


def record(kind: str, model_sha256: str, where: str, check: dict) -> None:
    """Keep this user's check of ``kind`` of the model with these bytes on this machine."""
    try:
        make_private_folder(state_dir())
        why = _untrusted()
        if why:
            _warn_untrusted(why)
            return
        with FileLock(_path() + ".lock", timeout=60, mode=0o600):
            checks = _read()
            checks[f"{kind} | {model_sha256} | {where}"] = check
            with atomic_open(_path()) as handle:
                os.fchmod(handle.fileno(), 0o600)  # this user's alone, whatever the umask
                json.dump(checks, handle, indent=1, sort_keys=True)
    except OSError as exc:
        raise ConfigError(
            f"bneck keeps the record of the models you checked in {state_dir()} ($BNECK_STATE), and could not "
            f"write it there: {exc.strerror or exc}. Point BNECK_STATE at a folder you can write (or remove "
            f"what is in the way), or use --runtime tensorflow. Nothing computed so far is lost."
        ) from None
