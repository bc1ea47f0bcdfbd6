"""The library reports (logging, BneckWarning); the command line decides what reaches the terminal."""

from __future__ import annotations

import logging
import warnings

import pytest

from bneck.core.errors import BneckWarning
from bneck.pipeline.cli import main
from bneck.pipeline.cli.reporting import terminal_reports

pytestmark = pytest.mark.pure


def _report():
    logging.getLogger("bneck.pipeline.training.stage").info("training logreg (no earlier output)")
    warnings.warn("ignoring damaged cache chunk c.h5", BneckWarning, stacklevel=1)


def test_progress_and_warnings_reach_stderr_while_a_command_runs(capsys):
    with terminal_reports(quiet=False):
        _report()
    assert capsys.readouterr().err.splitlines() == [
        "training logreg (no earlier output)",
        "bneck: warning: ignoring damaged cache chunk c.h5",
    ]


def test_quiet_keeps_the_warnings_only(capsys):
    with terminal_reports(quiet=True):
        _report()
    assert capsys.readouterr().err.splitlines() == ["bneck: warning: ignoring damaged cache chunk c.h5"]


def test_outside_a_command_the_library_prints_nothing(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _report()
    assert capsys.readouterr().err == ""  # no handler of bneck's: logging's last resort shows WARNING+ only
    assert [w.category for w in caught] == [BneckWarning]  # a script can catch or filter the class
    assert logging.getLogger("bneck").handlers and all(
        isinstance(h, logging.NullHandler) for h in logging.getLogger("bneck").handlers
    )


def test_a_command_leaves_no_handler_behind(tmp_path, capsys):
    before = list(logging.getLogger("bneck").handlers)
    assert main(["cache", "ls", "--cache-dir", str(tmp_path / "cache")]) in (0, 2)
    assert logging.getLogger("bneck").handlers == before
