"""--engine ray on a real multi-node Ray cluster started on this machine (``ray.cluster_utils.Cluster``):
a head and two worker nodes, each its own raylet with one CPU, so the three actors land one per node.

Issue 28: removing a worker node mid-run stalled the run for good (the lost node's shards waited for a
replacement actor no node had room for). Here a node's processes are killed mid-run and the run must
finish in bounded time, every row once, equal to ``--engine local``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bneck.core.errors import ConfigError
from bneck.features import extract, read_features
from bneck.features.extraction.ray_actor import ShardExtractor
from tests.conftest import MOBILENET, ROOT, copy_subset

pytestmark = pytest.mark.extra("ray")


def _alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"])


def _nodes_alive_within(count: int, seconds: float) -> bool:
    """True once Ray's control store counts ``count`` live nodes (it marks a lost node dead a moment later)."""
    deadline = time.monotonic() + seconds
    while _alive_nodes() != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _local(data, tmp_path, splits):
    extract(data, tmp_path / "local", cache_dir=tmp_path / "local-cache", batch_size=4, verbose=False, **MOBILENET)
    return {split: read_features(str(tmp_path / "local" / f"{split}.h5")) for split in splits}


def _equal_to(local: dict, out_dir) -> None:
    """Every row once, in order, equal to the local engine's."""
    for split, want in local.items():
        got = read_features(str(out_dir / f"{split}.h5"))
        assert got.paths == want.paths and got.sha256 == want.sha256 and len(set(got.sha256)) == len(got.sha256)
        np.testing.assert_allclose(got.features, want.features, rtol=0, atol=1e-5)


def test_three_nodes_share_the_work_the_cache_and_the_output_equal_to_local(nodes, tmp_path, monkeypatch):
    data = copy_subset(tmp_path / "data", 6, splits=("train", "validation"))
    local = _local(data, tmp_path, ("train", "validation"))
    monkeypatch.chdir(tmp_path)  # relative --out and --cache-dir, as a user types them
    report = extract(
        data, "ray", cache_dir="shared-cache", batch_size=4, engine="ray", shard_size=4, verbose=False, **MOBILENET
    )
    assert _alive_nodes() == 3 and len(report.nodes) == 3 and min(report.nodes.values()) >= 1, report.nodes
    assert sum(report.nodes.values()) == 3 + 3 and report.retries == 0  # 12 images per split, 4 per shard
    _equal_to(local, tmp_path / "ray")
    # the cache the three nodes wrote serves every row to a local run, unchanged
    again = extract(data, tmp_path / "again", cache_dir=tmp_path / "shared-cache", verbose=False, **MOBILENET)
    assert again.forward_images == 0
    _equal_to(local, tmp_path / "again")


def _remove_a_worker_node_when(cluster, shards_dir, shards_landed: int, removed: list) -> threading.Thread:
    """Kill a worker node's raylet and workers (no graceful stop) once ``shards_landed`` shard files exist."""

    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if shards_dir.is_dir() and len(list(shards_dir.glob("*.h5"))) >= shards_landed:
                node = sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0]
                cluster.remove_node(node, allow_graceful=False)
                removed.append(node.node_id)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_node_lost_mid_run_has_its_shards_redone_on_the_others_in_bounded_time(nodes, tmp_path):
    data = copy_subset(tmp_path / "data", 20, splits=("train",))
    local = _local(data, tmp_path, ("train",))
    removed: list = []
    watcher = _remove_a_worker_node_when(nodes, tmp_path / "out" / "train.shards", 1, removed)
    kwargs = dict(cache_dir=tmp_path / "cache", batch_size=4, engine="ray", shard_size=4, verbose=False)
    start, outcome = time.monotonic(), {}
    run = threading.Thread(
        target=lambda: outcome.update(report=extract(data, tmp_path / "out", **kwargs, **MOBILENET)), daemon=True
    )
    run.start()
    run.join(timeout=240)  # it stalled for good before the fix
    seconds = time.monotonic() - start
    watcher.join(timeout=10)
    try:
        assert not run.is_alive(), f"still running after {seconds:.0f} s"
        report = outcome["report"]
        assert removed and _nodes_alive_within(2, 60), "the worker node was not removed mid-run"
        assert report.retries >= 1 and sum(report.nodes.values()) == 10, (report.retries, report.nodes)
        assert report.splits[0].shards == {"total": 10, "run": 10, "reused": 0}
        _equal_to(local, tmp_path / "out")
        assert len(list((tmp_path / "out" / "train.shards").glob("*.h5"))) == 10
    finally:
        nodes.add_node(num_cpus=1)  # back to three nodes for the other tests
        nodes.wait_for_nodes()


def test_a_restarted_driver_does_only_the_shards_missing_on_a_multi_node_cluster(nodes, tmp_path):
    data = copy_subset(tmp_path / "data", 12, splits=("train",))
    shards = tmp_path / "out" / "train.shards"
    command = [sys.executable, "-m", "bneck", "extract", str(data), "--out", str(tmp_path / "out")]
    command += ["--cache-dir", str(tmp_path / "cache"), "--engine", "ray", "--address", nodes.address]
    command += ["--shard-size", "2", "--quiet", "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "imagenet"]
    driver = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while (not shards.is_dir() or len(list(shards.glob("*.h5"))) < 4) and driver.poll() is None:
        assert time.monotonic() < deadline, "no shard landed"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    done_before = len(list(shards.glob("*.h5")))
    assert driver.returncode == -signal.SIGKILL and 4 <= done_before < 12
    report = extract(
        data, tmp_path / "out", cache_dir=tmp_path / "cache", engine="ray", shard_size=2, verbose=False, **MOBILENET
    )
    assert report.splits[0].shards == {"total": 12, "run": 12 - done_before, "reused": done_before}
    assert read_features(str(tmp_path / "out" / "train.h5")).features.shape[0] == 24


class SeesOtherDisks(ShardExtractor):
    """A real actor whose node mounts other disks: the folders the driver names are not there."""

    def ready(self, folders):
        return super().ready([folder + ".not-mounted-here" for folder in folders])


def test_a_node_that_cannot_see_the_output_or_cache_is_refused_before_any_shard(nodes, tmp_path):
    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    with pytest.raises(ConfigError) as err:
        extract(
            data, tmp_path / "out", cache_dir=tmp_path / "cache", engine="ray", shard_size=2,
            actor_class=SeesOtherDisks, verbose=False, **MOBILENET,
        )  # fmt: skip
    text = str(err.value)
    assert "cannot see" in text and "every node mounts at the same path" in text and str(tmp_path / "out") in text
    assert not list((tmp_path / "out" / "train.shards").glob("*.h5"))
