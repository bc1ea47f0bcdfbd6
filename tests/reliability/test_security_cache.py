"""The shared cache survives concurrent use, and a forged row is found by recomputing.

Real processes: an extraction committing many small chunks while this process runs
``cache gc`` (merging, and ``--older-than 0``, the most aggressive setting) in a
loop; two ``bneck cache gc`` commands at once; and a forged chunk whose checksums
are right but whose numbers are not, which only ``cache verify --recompute`` sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import h5py
import numpy as np

from bneck.features import extract, read_features
from bneck.features.backbones.resolve import resolve_spec
from bneck.features.cache.maintenance import collect_garbage
from bneck.features.cache.rows import RowCache, chunk_files, write_rows_file
from bneck.features.cache.verify import verify_cache
from tests.conftest import MOBILENET, ROOT, copy_subset

EXTRACT = """
import sys
from bneck.features import extract
extract(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], commit_rows=8, batch_size=8, verbose=False,
        backbone="mobilenet", alpha=0.25, size=224, weights="imagenet")
print("extracted")
"""


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_gc_in_a_loop_during_an_extraction_never_makes_it_fail(tmp_path):
    data = copy_subset(tmp_path / "data", 40, splits=("train",))
    reference = extract(data, tmp_path / "alone", cache_dir=tmp_path / "c0", verbose=False, **MOBILENET)
    cache = tmp_path / "cache"
    extract(
        copy_subset(tmp_path / "half", 20, splits=("train",)),
        tmp_path / "warm",
        cache_dir=cache,
        verbose=False,
        **MOBILENET,
    )  # half the rows already there: reads race with the merges too
    proc = subprocess.Popen(
        [sys.executable, "-c", EXTRACT, data, tmp_path / "out", cache],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rounds = 0
    while proc.poll() is None:
        collect_garbage(str(cache))
        collect_garbage(str(cache), older_than_days=0)
        rounds += 1
    out, err = proc.communicate()
    assert proc.returncode == 0 and "extracted" in out, err[-2000:]
    assert rounds >= 3 and "Traceback" not in err
    got, want = read_features(str(tmp_path / "out" / "train.h5")), read_features(str(tmp_path / "alone" / "train.h5"))
    assert got.paths == want.paths and reference.splits[0].images == 80
    np.testing.assert_allclose(got.features, want.features, rtol=0, atol=1e-4)  # batch compositions differ
    assert not verify_cache(str(cache))[1]


def test_two_gcs_at_once_both_succeed_and_keep_every_row(tmp_path):
    data = copy_subset(tmp_path / "data", 12, splits=("train",))
    cache = tmp_path / "cache"
    extract(data, tmp_path / "out", cache_dir=cache, commit_rows=4, batch_size=4, verbose=False, **MOBILENET)
    spec = resolve_spec(**{k: v for k, v in MOBILENET.items()})
    folder = RowCache(str(cache), spec).folder
    assert len(chunk_files(folder)) >= 6
    cmd = [sys.executable, "-m", "bneck", "cache", "gc", "--cache-dir", cache]
    procs = [
        subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate() + (p.returncode,) for p in procs]
    assert all(code == 0 for *_, code in results), results
    checked, problems = verify_cache(str(cache))
    assert not problems and checked == 1
    again = extract(data, tmp_path / "again", cache_dir=cache, verbose=False, **MOBILENET)
    assert again.forward_images == 0  # every row survived
    procs = [
        subprocess.Popen(
            cmd + ["--older-than", "0"], env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate() + (p.returncode,) for p in procs]
    assert all(code == 0 for *_, code in results), results
    assert "removed" in results[0][0] and verify_cache(str(cache)) == (0, [])


def test_a_forged_row_with_good_checksums_is_found_by_recomputing(tmp_path, capsys):
    from bneck.pipeline.cli import main

    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    cache = tmp_path / "cache"
    extract(data, tmp_path / "out", cache_dir=cache, verbose=False, **MOBILENET)
    folder = RowCache(str(cache), resolve_spec(**MOBILENET)).folder
    (chunk,) = chunk_files(folder)
    with h5py.File(chunk, "r") as f:
        shas = [s.decode() for s in f["sha256"][()]]
        feats = f["features"][()]
    forged = feats.copy()
    forged[3] = np.roll(forged[3], 1)  # plausible numbers, wrong ones
    forged[5] = forged[5] * 1.5  # and another, which must not hide the first
    os.remove(chunk)
    write_rows_file(os.path.join(folder, f"rows-{time.time_ns()}-forged.h5"), os.path.basename(folder), shas, forged)
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0  # checksums cannot see it
    capsys.readouterr()
    assert main(["cache", "verify", "--cache-dir", str(cache), "--recompute", "8", "--data", str(data)]) == 1
    said = capsys.readouterr().out
    assert f"image sha256 {shas[3]}" in said and f"image sha256 {shas[5]}" in said and said.count("differs:") == 2
    assert main(["cache", "verify", "--cache-dir", str(cache), "--recompute", "3"]) == 2  # needs --data


def test_gc_never_touches_a_folder_that_is_not_a_bneck_cache(tmp_path):
    """`bneck cache gc --cache-dir WRONG` (or a wrong $BNECK_CACHE) deletes nothing bneck did not make."""
    from bneck.pipeline.cli import main
    from tests.reliability.test_security_outputs import tree

    project = tmp_path / "project"  # someone's folder that happens to hold features/*/meta.json and rows-*.h5
    for name in ("exp1", "exp2", "0" * 64):
        entry = project / "features" / name
        entry.mkdir(parents=True)
        (entry / "meta.json").write_text('{"my": "notes"}')
        (entry / "rows-2023-results.h5").write_text("precious")
        (entry / ".notes.tmp-999999-deadbeef").write_text("t")
    looks_like_a_cache = tree(project)
    for args in (["--older-than", "0"], []):
        assert main(["cache", "gc", "--cache-dir", str(project), *args]) == 0
    assert tree(project) == looks_like_a_cache  # no entry names its own key: nothing was the cache's
    (project / "thesis.tex").write_text("years of work")
    before = tree(project)
    assert main(["cache", "gc", "--cache-dir", str(project)]) == 2  # now plainly not a cache: refused
    assert tree(project) == before


def _bneck_in_time(args, timeout=180):
    """Run the command line in a real process with a deadline: a hang fails the test, it does not stall it."""
    done = subprocess.run(
        [sys.executable, "-m", "bneck", *map(str, args)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_fifo_or_folder_planted_under_cache_names_never_hangs_or_breaks_a_command(tmp_path):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    cache = tmp_path / "cache"
    extract(data, tmp_path / "out", cache_dir=cache, verbose=False, **MOBILENET)
    folder = RowCache(str(cache), resolve_spec(**MOBILENET)).folder
    os.mkfifo(os.path.join(folder, "rows-0000-evil.h5"))
    os.mkdir(os.path.join(folder, "rows-0001-dir.h5"))
    os.mkfifo(os.path.join(folder, ".tmp-evil"))
    os.remove(os.path.join(folder, ".inuse"))
    os.mkfifo(os.path.join(folder, ".inuse"))
    planted = sorted(n for n in os.listdir(folder) if n.startswith(("rows-0", ".tmp-evil", ".inuse")))
    for args in (
        ["cache", "ls", "--cache-dir", cache],
        ["cache", "verify", "--cache-dir", cache],
        ["cache", "gc", "--cache-dir", cache],
        ["cache", "gc", "--older-than", "0", "--cache-dir", cache],
        [
            "extract",
            data,
            "--out",
            tmp_path / "again",
            "--cache-dir",
            cache,
            "--backbone",
            "mobilenet",
            "--alpha",
            "0.25",
            "--size",
            "224",
            "--quiet",
        ],
    ):
        code, output = _bneck_in_time(args)
        assert code == 0 and "Traceback" not in output, (args[:2], output[-2000:])
    assert (
        read_features(str(tmp_path / "again" / "train.h5")).paths
        == read_features(str(tmp_path / "out" / "train.h5")).paths
    )
    # what bneck did not make is left where it was
    assert sorted(n for n in os.listdir(folder) if n.startswith(("rows-0", ".tmp-evil", ".inuse"))) == planted


def test_a_recorded_weights_path_in_the_cache_never_makes_verify_read_a_pseudo_file(tmp_path):
    import json

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    cache = tmp_path / "cache"
    extract(data, tmp_path / "out", cache_dir=cache, verbose=False, **MOBILENET)
    meta_path = os.path.join(RowCache(str(cache), resolve_spec(**MOBILENET)).folder, "meta.json")
    meta = json.load(open(meta_path))
    meta.update(weights_path="/proc/kmsg", weights_sha256="0" * 64)
    with open(meta_path, "w") as handle:
        json.dump(meta, handle)
    code, output = _bneck_in_time(["cache", "verify", "--cache-dir", cache, "--recompute", "2", "--data", data])
    assert code in (0, 1) and "Traceback" not in output, output[-2000:]


def test_verify_samples_afresh_each_time_and_refuses_what_would_check_nothing(tmp_path, capsys):
    from bneck.pipeline.cli import main

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    cache = tmp_path / "cache"
    extract(data, tmp_path / "out", cache_dir=cache, verbose=False, **MOBILENET)
    seeds = set()
    for _ in range(3):
        assert main(["cache", "verify", "--cache-dir", str(cache), "--recompute", "1", "--data", str(data)]) == 0
        seeds.add(capsys.readouterr().out.split("sample seed ")[1].split()[0])
    assert len(seeds) == 3  # a forger cannot know which rows will be looked at
    assert (
        main(["cache", "verify", "--cache-dir", str(cache), "--recompute", "1", "--data", str(data), "--seed", "7"])
        == 0
        and "sample seed 7 " in capsys.readouterr().out
    )
    for args, message in (
        (["verify", "--recompute", "1", "--data", str(tmp_path / "nowhere")], "is not a folder"),
        (["gc", "--older-than", "-5"], "--older-than takes a number of days >= 0"),
        (["gc", "--older-than", "nan"], "--older-than takes a number of days >= 0"),
    ):
        assert main(["cache", *args, "--cache-dir", str(cache)]) == 2
        assert message in capsys.readouterr().err
    assert read_features(str(tmp_path / "out" / "train.h5"))  # nothing was removed
