"""Ctrl-C during a real extraction stops it within seconds, exit 130, with nothing half-written.

Not pure: it needs about 30 s of work to interrupt, which the real images at 224 px with the
real MobileNet give on any machine (generated images decode too fast to be stopped midway).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import DATA, ROOT, copy_subset
from tests.reliability.conftest import MOBILENET_ARGS

BNECK = [sys.executable, "-m", "bneck"]


def _env(tmp_path):
    return dict(os.environ, BNECK_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))


def test_ctrl_c_stops_a_run_within_seconds(tmp_path):
    assert DATA.is_dir()
    # 4,000 real images, about 15 s of work on two idle cores: still running when the signal
    # comes, however late a loaded machine lets this test see the progress bar
    data = copy_subset(tmp_path / "data", 1000)
    os.mkfifo(data / "train" / "cats" / "fifo.jpg")  # would have hung the hashing
    os.symlink("/proc/self/pagemap", data / "train" / "cats" / "endless.jpg")  # would have read for minutes
    proc = subprocess.Popen(
        [*BNECK, "extract", data, "--out", tmp_path / "out", *MOBILENET_ARGS],
        env=_env(tmp_path),
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    said = []
    reader = threading.Thread(target=lambda: said.extend(iter(lambda: proc.stderr.read(1), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"computing" not in b"".join(said):  # progress bars end lines with \r, not \n
        assert time.monotonic() < deadline and proc.poll() is None, b"".join(said)
        time.sleep(0.05)
    time.sleep(1.0)  # the network is running
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    rest = b"".join(said).decode(errors="replace")
    assert code == 130 and time.perf_counter() - start < 10, (code, rest[-500:])
    assert "interrupted" in rest and "Traceback" not in rest
    assert "test: computing: 100%" not in rest  # it stopped before the end
