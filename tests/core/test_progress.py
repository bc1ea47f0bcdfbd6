"""Progress a person can read: redrawn in place on a terminal, whole lines anywhere else."""

from __future__ import annotations

import io
import sys
import time

import pytest

from bneck.core.progress import progress_bar

pytestmark = pytest.mark.pure


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _drive(monkeypatch, tty: bool) -> str:
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(6, "demo: computing")
    bar.mininterval = bar.miniters = 0  # refresh on every update, as a long run would every few seconds
    for _ in range(6):
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    return stream.getvalue()


def test_a_log_file_gets_one_whole_line_per_refresh(monkeypatch):
    text = _drive(monkeypatch, tty=False)
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and text.endswith("\n")
    assert len(lines) >= 3 and all(line.startswith("demo: computing") for line in lines)
    assert "6/6" in lines[-1] and "img/s" in lines[-1]  # the final count with its throughput


def test_a_terminal_gets_redrawn_in_place(monkeypatch):
    text = _drive(monkeypatch, tty=True)
    assert text.count("\r") >= 3 and "6/6" in text
