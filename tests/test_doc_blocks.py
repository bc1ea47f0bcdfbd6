"""Every shell and Python block in the README and the docs is run here, offline and as written, or
says why not; and every `bneck` command in any block names a real command and real options.

A block is marked by the line before its fence: ``<!-- block: run -->`` (run below, in a
fresh folder, with ``bneck`` on the PATH and ``BNECK_OFFLINE=1``) or
``<!-- block: not run: WHY -->``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pure

PAGES = ["README.md"] + sorted(f"docs/{name}" for name in os.listdir(ROOT / "docs") if name.endswith(".md"))
FENCE = re.compile(r"^```(bash|python)\s*$")
MARK = re.compile(r"^<!-- block: (run|not run: \S.*\S) -->$")


def blocks() -> list[tuple[str, int, str, str, str | None]]:
    """Return (page, line of the fence, language, body, mark or None) for every bash and Python block."""
    found = []
    for page in PAGES:
        lines = (ROOT / page).read_text().split("\n")
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if fence:
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                mark = MARK.match(lines[i - 1]) if i else None
                found.append((page, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]), mark and mark.group(1)))
                i = end
            i += 1
    return found


BLOCKS = blocks()


def _id(block) -> str:
    return f"{block[0]}:{block[1]}"


def test_every_block_is_marked_run_or_why_not():
    unmarked = [_id(b) for b in BLOCKS if b[4] is None]
    assert not unmarked, f"mark these with <!-- block: run --> or <!-- block: not run: WHY -->: {unmarked}"
    assert len(BLOCKS) > 30  # the parser found the blocks


def bneck_commands(body: str) -> list[list[str]]:
    """Return the words of every `bneck ...` command in a shell block (continuations joined,
    comments dropped, optional parts' brackets and placeholders' ellipses removed)."""
    commands = []
    for line in body.replace("\\\n", " ").split("\n"):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for start, word in enumerate(words):
            if word in ("bneck", ".venv/bin/bneck"):
                rest = [w.strip("[]") for w in words[start + 1 :]]
                commands.append([w for w in rest if w and w not in ("...", "|")])
                break
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def check_command(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """Return what is wrong with ``bneck WORDS`` (an unknown command or option), or None."""
    commands = _subparsers(parser)
    if not words or words[0].startswith("-"):
        unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in _options(parser)]
        return f"unknown option(s) {unknown}" if unknown else None
    if words[0] not in commands:
        return f"no command {words[0]!r}"
    sub, rest = commands[words[0]], words[1:]
    while rest and any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
        nested = _subparsers(sub)
        if rest[0] not in nested:
            break
        sub, rest = nested[rest[0]], rest[1:]
    known = _options(sub)
    unknown = [w for w in rest if w.startswith("-") and w != "-" and w.split("=")[0] not in known]
    return f"`bneck {words[0]}` has no option(s) {unknown}" if unknown else None


def test_every_bneck_command_in_the_docs_is_a_real_command_with_real_options():
    from bneck.pipeline.cli import build_parser

    parser = build_parser()
    checked, wrong = 0, []
    for page, line, lang, body, _ in BLOCKS:
        if lang != "bash":
            continue
        for words in bneck_commands(body):
            checked += 1
            problem = check_command(parser, words)
            if problem:
                wrong.append(f"{page}:{line}: bneck {' '.join(words)}: {problem}")
    assert not wrong, "\n".join(wrong)
    assert checked > 25


def test_the_command_check_catches_what_it_should():
    from bneck.pipeline.cli import build_parser

    parser = build_parser()
    assert check_command(parser, ["extract", "DATA", "--out", "O", "--backbone", "b"]) is None
    assert check_command(parser, ["cache", "verify", "--recompute", "3", "--data", "D"]) is None
    assert "no command" in check_command(parser, ["extrakt", "DATA"])
    assert "--epochz" in check_command(parser, ["train", "F", "--epochz", "3"])
    assert check_command(parser, ["--version"]) is None
    assert bneck_commands("bneck a --b [--c N] \\\n  --d  # --e\nx bneck") == [["a", "--b", "--c", "N", "--d"], []]


RUN_PAGES = sorted({b[0] for b in BLOCKS if b[4] == "run"})


def workspace(tmp_path):
    """A folder laid out like the repository beside ../shared (the README's commands run from the
    repository), a HOME of its own, and the environment a user has after the quick start, offline."""
    repo, home, keras_home = tmp_path / "repo", tmp_path / "home", tmp_path / "keras" / "models"
    for folder in (repo, home, keras_home):
        folder.mkdir(parents=True)
    for name in (".venv", "scripts"):
        (repo / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    for weights in (ROOT.parent / "shared" / "data" / "weights").glob("*.h5"):
        (keras_home / weights.name).symlink_to(weights)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNECK_")}
    env.update(
        HOME=str(home),
        KERAS_HOME=str(keras_home.parent),
        BNECK_OFFLINE="1",
        PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
    )
    return repo, env


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_blocks_marked_run_run_offline_as_written_in_order(page, tmp_path):
    """A page's blocks run in order, each in the folder the one before it ended in (a shell block may
    `cd`), from the repository's top."""
    cwd, env = workspace(tmp_path)
    where = tmp_path / "pwd"
    for _, line, lang, body, mark in BLOCKS:
        if mark != "run" or _ != page:
            continue
        if lang == "bash":
            command = ["bash", "-e", "-c", f"{body}\npwd > {where}"]  # -e: any failing command fails it
        else:
            command = [sys.executable, "-c", body]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{page}:{line} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        if lang == "bash":
            cwd = where.read_text().strip()
