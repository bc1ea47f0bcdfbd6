"""SIGTERM met as Ctrl-C is: the same clean stop, the same paragraph saying what was kept.

``kill PID`` (and a batch scheduler ending a job) sends SIGTERM, whose default ends the
process at once, mid-write; Ray's driver even aborts on it with a native stack dump. The
command line turns it into ``Terminated`` (a KeyboardInterrupt), so every ``finally`` runs
and the command exits 143 after one paragraph.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _terminated(signum, frame):
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt():
    """Within the block (main thread only), SIGTERM raises ``Terminated``."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    _ACTIVE.append(True)
    try:
        yield
    finally:
        _ACTIVE.pop()
        signal.signal(signal.SIGTERM, previous)


_ACTIVE: list[bool] = []


def reclaim_sigterm() -> None:
    """Inside ``sigterm_as_interrupt``, take SIGTERM back after a library replaced its handler (``ray.init``
    installs one that calls ``sys.exit(15)``, and its native core one that aborts)."""
    if _ACTIVE and _main_thread():
        signal.signal(signal.SIGTERM, _terminated)
