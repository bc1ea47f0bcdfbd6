"""What reaches the terminal: the command line decides, the library only reports.

Library code reports progress through ``logging`` (loggers named ``bneck.*``) and what it
worked around through ``warnings`` (``BneckWarning``); it never prints. While a command
runs, its progress messages go to stderr as bare lines (none with ``--quiet``) and each
BneckWarning as one ``bneck: warning: ...`` line (shown even with ``--quiet``: a warning
says something was skipped or changed).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from bneck.core.errors import BneckWarning


class _Stderr(logging.Handler):
    """Write each record's message as one line to the stderr of the moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(record.getMessage(), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler never raises
            self.handleError(record)


@contextmanager
def terminal_reports(quiet: bool = False) -> Iterator[None]:
    """Show bneck's progress messages (unless ``quiet``) and its warnings on stderr while the block runs."""
    logger = logging.getLogger("bneck")
    handler, level = _Stderr(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, BneckWarning):
            print(f"bneck: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.simplefilter("always", BneckWarning)  # every damaged chunk is named, not only the first
            warnings.showwarning = show
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def spent(folder: str, seconds: float, reused: bool) -> str:
    """``12.3 s``, or for a reused model ``reused (made in 12.3 s on 2026-12-06 08:12 UTC)``: its time is not
    spent again."""
    took = f"{seconds:.1f} s"
    if not reused:
        return took
    from bneck.pipeline.artifacts import ArtifactError, read_manifest

    try:
        made = read_manifest(folder).created_utc.replace("T", " ")[:16] + " UTC"
    except (ArtifactError, AttributeError, TypeError):
        return f"reused (made in {took})"
    return f"reused (made in {took} on {made})"
