"""What a person watches: a progress bar with throughput, and short aligned tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm


class _Lines:
    """A stream that is not a terminal (a log file, CI): each refresh of a bar becomes one whole line
    instead of carriage-return redraws that pile up into one unreadable line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "")
        if text.strip():
            self.stream.write(text.rstrip("\n") + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "img") -> tqdm:
    """Return a bar counting ``unit`` with its rate (img/s); quiet and cheap when not ``enabled``.

    On a terminal it redraws in place (5 times a second at most); elsewhere it writes one
    line every 5 seconds at most, plus the final one.
    """
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=interactive,
        ncols=None if interactive else 100,
        mininterval=0.2 if interactive else 5.0,
        file=sys.stderr if interactive else _Lines(sys.stderr),
        leave=True,
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Return a plain-text table, numbers right-aligned, ready to print."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)
