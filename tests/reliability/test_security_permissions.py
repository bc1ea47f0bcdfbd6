"""Tampering through permissions: what bneck trusts (its state record, its cache) is used only when
nobody but its owner could have written it, and what bneck creates is never writable by others,
whatever the umask (issue 27, round 4)."""

from __future__ import annotations

import os
import stat
import warnings

import pytest

from bneck.core.errors import BneckWarning, ConfigError
from bneck.core.private import first_written_by_others, no_write_for_others, written_by_others
from bneck.features import extract, read_features
from bneck.features.runtimes import trust
from bneck.pipeline.cli import main
from tests.generated import cli_args


def _writable_by_others(root) -> list[str]:
    """Every path under ``root`` (root included) with a group or other write bit."""
    found = []
    for folder, folders, files in os.walk(root):
        for path in [folder] + [os.path.join(folder, n) for n in folders + files]:
            if os.lstat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(path)
    return sorted(set(found))


@pytest.fixture
def umask_000():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_under_umask_000_nothing_bneck_creates_is_writable_by_others(tmp_path, tiny, tiny_data, umask_000):
    """The attack's first step: a permissive umask made the state 0777/0666 and the cache 0777/0666.
    Every file and folder the command creates (cache, state, output) must be writable by its owner only,
    and the cache and state folders private (0700)."""
    cache, state, out = tmp_path / "cache", tmp_path / "deep" / "state", tmp_path / "out"
    os.environ["BNECK_STATE"] = str(state)  # the autouse fixture restores it
    assert main(["extract", str(tiny_data), "--out", str(out), "--cache-dir", str(cache), *cli_args(tiny)]) == 0
    trust.record("fp32 vs tensorflow", "a" * 64, "here", {"max_rel_diff": 0.0})  # what a runtime check keeps
    for root in (cache, out, tmp_path / "deep"):
        assert _writable_by_others(root) == []
    for folder in (cache, state, tmp_path / "deep"):  # missing parents too
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / trust.RECORD).st_mode) == 0o600
    assert os.umask(0) == 0  # the caller's umask is given back


def test_the_api_also_creates_nothing_others_can_write(tmp_path, tiny, tiny_data, umask_000):
    import bneck

    bneck.extract(str(tiny_data), str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    assert _writable_by_others(tmp_path / "out") == _writable_by_others(tmp_path / "cache") == []


def test_no_write_for_others_masks_group_and_other_write_and_restores(tmp_path, umask_000):
    with no_write_for_others():
        (tmp_path / "f").write_text("x")
        os.mkdir(tmp_path / "d")
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755
    assert os.umask(0) == 0


@pytest.mark.parametrize("where", ["folder", "file"])
@pytest.mark.parametrize("mode", [0o777, 0o707, 0o757, 0o722])
def test_a_state_record_others_could_write_is_ignored_and_never_extended(tmp_path, where, mode):
    """The attack's second step: another user added a record for a tampered model to the victim's state.
    A record in a folder, or a file, that group or others can write is no record: the model is checked
    again (one BneckWarning says why), and nothing is written there."""
    trust.record("fp32 vs tensorflow", "a" * 64, "here", {"max_rel_diff": 0.0})
    assert trust.recorded("fp32 vs tensorflow", "a" * 64, "here", ["max_rel_diff"]) is not None
    target = trust.state_dir() if where == "folder" else os.path.join(trust.state_dir(), trust.RECORD)
    os.chmod(target, mode if where == "folder" else mode & 0o666)
    trust._WARNED.clear()
    before = open(os.path.join(trust.state_dir(), trust.RECORD)).read()
    with pytest.warns(BneckWarning, match=r"ignores the record of checked models .* can write it \(mode"):
        assert trust.recorded("fp32 vs tensorflow", "a" * 64, "here", ["max_rel_diff"]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BneckWarning)
        trust.record("fp32 vs tensorflow", "b" * 64, "here", {"max_rel_diff": 0.0})
    assert open(os.path.join(trust.state_dir(), trust.RECORD)).read() == before


def test_written_by_others_names_another_owner_and_a_link(tmp_path):
    """Ownership cannot be changed without root here, so the owner it is judged against is: a file of
    this user's, judged for someone else, belongs to someone else."""
    (tmp_path / "f").write_text("x")
    os.chmod(tmp_path / "f", 0o600)
    assert written_by_others(str(tmp_path / "f")) is None
    assert "belongs to" in written_by_others(str(tmp_path / "f"), owner=os.getuid() + 1)
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert written_by_others(str(tmp_path / "link")) == "it is a symbolic link"


def _cache(tmp_path, tiny, tiny_data):
    cache = tmp_path / "cache"
    extract(str(tiny_data), str(tmp_path / "o1"), cache_dir=str(cache), verbose=False, **tiny)
    return cache


def _first_chunk(cache):
    return next((cache / "features").glob("*/rows-*.h5"))


@pytest.mark.parametrize(
    "tamper",
    ["root-0777", "root-0757", "features-0777", "entry-0773", "chunk-0666", "chunk-0646", "meta-0662", "planted-link"],
)
def test_a_shared_cache_someone_else_could_have_written_is_refused_before_work(tmp_path, tiny, tiny_data, tamper):
    """A cache others can enter (not private) is used only when its owner alone could have written every
    entry: one writable folder or file anywhere, or a planted link, and the command refuses before work."""
    cache = _cache(tmp_path, tiny, tiny_data)
    os.chmod(cache, 0o755)  # shared read-only: readers trust its one writer
    entry = _first_chunk(cache).parent
    what, _, mode = tamper.partition("-")
    target = {"root": cache, "features": cache / "features", "entry": entry}.get(what)
    if what == "chunk":
        target = _first_chunk(cache)
    if what == "meta":
        target = entry / "meta.json"
    if what == "planted":
        os.symlink("/etc/passwd", entry / "rows-planted.h5")
    else:
        os.chmod(target, int(mode, 8))
    out = tmp_path / "o2"
    with pytest.raises(ConfigError, match=r"cannot be trusted: .*(can write it|symbolic link).* one writer"):
        extract(str(tiny_data), str(out), cache_dir=str(cache), verbose=False, **tiny)
    assert not out.exists()
    assert main(["extract", str(tiny_data), "--out", str(out), "--cache-dir", str(cache), *cli_args(tiny)]) == 2


def test_a_private_cache_or_one_shared_read_only_is_used(tmp_path, tiny, tiny_data):
    cache = _cache(tmp_path, tiny, tiny_data)
    os.chmod(_first_chunk(cache), 0o666)  # inside a private folder nobody else can reach it
    assert first_written_by_others(str(cache)) is None
    extract(str(tiny_data), str(tmp_path / "o2"), cache_dir=str(cache), verbose=False, **tiny)
    os.chmod(_first_chunk(cache), 0o644)
    os.chmod(cache, 0o755)
    assert first_written_by_others(str(cache)) is None
    extract(str(tiny_data), str(tmp_path / "o3"), cache_dir=str(cache), verbose=False, **tiny)


def test_group_write_counts_only_when_someone_else_is_in_the_group():
    """umask 002 setups give each user a private group: its write bit lets nobody else write. A group
    that holds another user (as a member, or as their primary group) does."""
    import grp
    import pwd

    from bneck.core.private import _group_of_one

    me = os.getuid()
    others = [u for u in pwd.getpwall() if u.pw_uid != me]
    assert others  # every system has more than one account (nobody, daemon...)
    shared = others[0].pw_gid  # some other user's primary group
    assert not _group_of_one(shared, me) or shared == pwd.getpwuid(me).pw_gid
    for group in grp.getgrall():
        members = set(group.gr_mem) | {u.pw_name for u in pwd.getpwall() if u.pw_gid == group.gr_gid}
        assert _group_of_one(group.gr_gid, me) == (members <= {pwd.getpwuid(me).pw_name})


READER = """
import sys
from bneck.features import extract
from bneck.core.errors import StorageError
data, out, cache, weights = sys.argv[1:5]
extract(data, out + "/full", cache_dir=cache, verbose=False, backbone="mobilenet", alpha=0.25, size=64, weights=weights)
try:
    extract(data + "-more", out + "/more", cache_dir=cache, verbose=False, backbone="mobilenet", alpha=0.25, size=64,
            weights=weights)
except StorageError as exc:
    print("refused:", exc)
"""


def _read_only_command(cache, command: list[str]) -> list[str]:
    """``command`` run where ``cache`` cannot be written. Root writes through any mode, so for root the
    cache is bind-mounted read-only in a mount namespace of the command's own (nothing outside sees
    it); any other user gets the cache made read-only by its modes."""
    if os.getuid() != 0:
        for folder, _, _ in os.walk(cache):
            os.chmod(folder, 0o555)
        return command
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(cache), *command]


def test_a_cache_shared_read_only_by_its_writer_serves_a_reader_and_refuses_only_new_rows(tmp_path, tiny):
    """The documented team set-up: one writer, readers who can only read. A fully cached extraction
    reads every row (it used to fail on locks and the last-used stamp); rows the cache lacks are refused
    in one paragraph before they are computed."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.generated import make_images

    data = make_images(tmp_path / "data", 3)
    make_images(tmp_path / "data-more", 3, offset=10)
    cache, out = tmp_path / "cache", tmp_path / "reader"
    extract(str(data), str(tmp_path / "writer"), cache_dir=str(cache), verbose=False, **tiny)
    os.chmod(cache, 0o755)  # shared: readable by everyone, writable by its writer only
    env = dict(os.environ, PYTHONPATH=str(ROOT), BNECK_STATE=str(out / "state"))
    command = _read_only_command(
        cache, [sys.executable, "-c", READER, str(data), str(out), str(cache), tiny["weights"]]
    )
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for folder, _, _ in os.walk(cache):
            os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: the cache" in done.stdout and "is read-only for you" in done.stdout
    assert "lacks the rows of 6 image(s)" in done.stdout and "Nothing was computed" in done.stdout
    for split in ("train", "validation", "test"):
        mine, theirs = (read_features(str(p / split) + ".h5") for p in (tmp_path / "writer", out / "full"))
        assert mine.paths == theirs.paths and (mine.features == theirs.features).all()
    assert not list((out / "more").glob("*.h5")) if (out / "more").exists() else True


def test_every_command_that_reads_the_cache_refuses_one_others_could_write(tmp_path, tiny, tiny_data, capsys):
    """A new-user session found `cache ls`, `cache verify`, `cache info KEY` and `predict` (which looks for
    converted models there) using a 0777 cache that extract refused; the docs say every command refuses it."""
    from bneck.pipeline.training.stage import train

    cache = _cache(tmp_path, tiny, tiny_data)
    train(str(tmp_path / "o1"), ["logreg"], str(tmp_path / "models"), verbose=False)
    key = _first_chunk(cache).parent.name
    os.chmod(cache, 0o777)
    image = next((tiny_data / "test").rglob("*.jpg"))
    for args in (
        ["cache", "ls", "--cache-dir", str(cache)],
        ["cache", "verify", "--cache-dir", str(cache)],
        ["cache", "info", key[:12], "--cache-dir", str(cache)],
        ["cache", "gc", "--cache-dir", str(cache)],
        ["predict", str(tmp_path / "models" / "logreg"), str(image)],  # its cache: $BNECK_CACHE
    ):
        os.environ["BNECK_CACHE"] = str(cache)  # the autouse fixture restores it
        capsys.readouterr()
        assert main(args) == 2, args
        assert "cannot be trusted" in capsys.readouterr().err, args
    os.chmod(cache, 0o700)
