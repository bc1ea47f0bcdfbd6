"""Atomic file creation: write beside the target, then ``os.replace``.

A crash or ``kill -9`` leaves at most a hidden ``.NAME.tmp-PID-RANDOM`` file, never a
half-written file under the real name (``datasets`` cache files, DVC outputs).
"""
from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager

_TMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")


@contextmanager
def atomic_target(path: str):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def stale_temporaries(folder: str) -> list[str]:
    """Return temporary files in ``folder`` whose writing process no longer runs."""
    out = []
    for name in os.listdir(folder):
        match = _TMP_PATTERN.match(name)
        if match and not _pid_alive(int(match.group(1))):
            out.append(os.path.join(folder, name))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
