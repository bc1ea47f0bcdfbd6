"""Helpers for the reliability suite: real subprocesses running the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bneck.features import read_features
from bneck.features.cache.verify import verify_cache
from bneck.pipeline.artifacts import read_manifest
from tests.conftest import ROOT

KILLER = Path(__file__).with_name("killer.py")
MOBILENET_ARGS = ["--backbone", "mobilenet", "--alpha", "0.25", "--size", "224", "--weights", "imagenet"]


@dataclass
class Done:
    """How a command run by the fork server ended."""

    returncode: int  # exit code, or minus the signal that ended the process
    output: str  # its stdout and stderr


class ForkServer:
    """``killer.py --serve``: TensorFlow imported once, one forked process per command."""

    def __init__(self, logs: Path):
        self.logs, self.runs = logs, 0
        self.proc = subprocess.Popen(
            [sys.executable, str(KILLER), "--serve"],
            cwd=ROOT,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def __call__(
        self,
        root,
        args,
        kill_at: int = 0,
        count_file=None,
        fsize: int = 0,
        honour_permissions: bool = False,
        offline: bool = False,
        env=None,
        cwd=None,
    ) -> Done:
        """Run ``bneck ARGS``; ``kill_at`` > 0 SIGKILLs it at that file event under ``root``.

        ``fsize`` limits the size of any file it writes (RLIMIT_FSIZE: a full disk);
        ``honour_permissions`` makes folder modes bind even when the tests run as root;
        ``offline`` makes every network attempt fail and print "NETWORK ATTEMPT"; ``env``
        sets environment variables; ``cwd`` is the folder the command runs in.
        """
        self.runs += 1
        log = self.logs / f"run-{self.runs}.log"
        request = {
            "root": str(root),
            "kill_at": kill_at,
            "count_file": str(count_file or os.devnull),
            "args": [str(a) for a in args],
            "log": str(log),
            "fsize": fsize,
            "honour_permissions": honour_permissions,
            "offline": offline,
            "env": env or {},
            "cwd": str(cwd) if cwd else None,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        code = json.loads(self.proc.stdout.readline())["returncode"]
        return Done(code, log.read_text(errors="replace"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def bneck(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fork-server-logs"))
    yield server
    server.close()


def visible(path: Path):
    """Files and folders under ``path`` whose names (and parents' names) do not start with a dot."""
    for item in sorted(path.rglob("*")):
        if not any(part.startswith(".") for part in item.relative_to(path).parts):
            yield item


def assert_nothing_complete_is_corrupt(work: Path) -> int:
    """Every artifact under a real name in ``work`` must read back intact; returns how many were checked.

    Feature files are read with their checksum, cache chunks with theirs, classifier
    and fine-tune folders through their manifests, JSON files parsed.
    """
    checked = 0
    for item in visible(work):
        if item.is_dir() and (item / "manifest.json").exists():
            read_manifest(str(item))
            checked += 1
        elif item.suffix == ".h5" and item.parent.name in ("features", "out") and item.is_file():
            read_features(str(item))
            checked += 1
        elif item.suffix == ".json" and item.is_file():
            json.loads(item.read_text())
            checked += 1
        elif item.is_dir() and item.parent.name == "models":
            raise AssertionError(f"{item} is a classifier folder without a manifest")
    if (work / "cache").is_dir():
        chunks, problems = verify_cache(str(work / "cache"))
        assert not problems, problems
        checked += chunks
    return checked


def snapshot(*folders: Path) -> dict:
    """Return {path: sha256} of every visible file under ``folders`` (what must stay intact)."""
    from bneck.core.hashing import sha256_file

    return {
        str(p): sha256_file(str(p)) for folder in folders if folder.exists() for p in visible(folder) if p.is_file()
    }


def temporaries(*folders: Path) -> list:
    """Return leftover temporary files or folders (``.NAME.tmp-...``) under ``folders``."""
    return [p for folder in folders if folder.exists() for p in folder.rglob(".*.tmp-*")]
