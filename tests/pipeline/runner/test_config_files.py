"""A config file that is not one (issue 27): not UTF-8, nested thousands deep, a FIFO, huge, a folder
- each one paragraph naming the file, in bounded time, never a traceback or a hang."""

from __future__ import annotations

import os
import threading

import pytest

from bneck.core.errors import ConfigError
from bneck.pipeline.runner.config import load_config


def _fifo(path):
    os.mkfifo(path)


CASES = {
    "not-utf8": (lambda p: p.write_bytes(b'data = "\xff\xfe"\n'), "is not UTF-8"),
    "latin1": (lambda p: p.write_bytes('data = "caf\xe9"\n'.encode("latin-1")), "is not UTF-8"),
    "nested-array": (lambda p: p.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n"), "too deeply"),
    "nested-inline": (lambda p: p.write_text("a = " + "{b = " * 5000 + "1" + "}" * 5000 + "\n"), "too deeply"),
    "fifo": (_fifo, "not a regular file|FIFO"),
    "huge": (lambda p: p.write_text("# " + "x" * (2 << 20) + "\n"), "too large"),
    "folder": (lambda p: p.mkdir(), "folder|directory"),
}


@pytest.mark.pure
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_config_file_that_is_not_one_is_one_paragraph_in_bounded_time(tmp_path, case):
    make, said = CASES[case]
    path = tmp_path / "config.toml"
    make(path)
    outcome: list = []

    def load():
        try:
            load_config(str(path))
        except ConfigError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # a FIFO opened for reading waits for a writer: let it go
        with open(path, "w"):
            pass
        worker.join(5)
        pytest.fail(f"{case}: load_config hung")
    assert outcome, case
    message = str(outcome[0])
    assert str(path) in message and "\n" not in message
    import re

    assert re.search(said, message), message
