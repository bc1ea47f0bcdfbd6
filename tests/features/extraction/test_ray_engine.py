"""--engine ray against a real local Ray cluster: equality, dead workers, interrupted drivers, lost shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from bneck.core.errors import BneckWarning, FeatureFileError
from bneck.features import extract, read_features
from bneck.features.extraction.ray_engine import MAX_ATTEMPTS, ShardError, ShardExtractor
from tests.conftest import MOBILENET, ROOT, copy_subset

pytestmark = pytest.mark.extra("ray")
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def cluster():
    """A real Ray cluster on this machine; its workers import bneck and these tests."""
    import ray  # the [ray] extra

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "KERAS_HOME": os.environ["KERAS_HOME"]}},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


class DiesOnce(ShardExtractor):
    """The real actor, except that its process is killed the first time it gets shard 1."""

    def run(self, shard, reference=None):
        marker = os.path.join(os.path.dirname(shard["path"]), "..", "..", "died-once")  # beside OUT
        if shard["index"] == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(shard, reference)


class AlwaysFailsOnShard1(ShardExtractor):
    def run(self, shard, reference=None):
        if shard["index"] == 1:
            raise RuntimeError("disk on this node is broken")
        return super().run(shard, reference)


def _same_rows(a_dir, b_dir, splits=SPLITS):
    for split in splits:
        a, b = read_features(str(a_dir / f"{split}.h5")), read_features(str(b_dir / f"{split}.h5"))
        assert a.paths == b.paths and a.sha256 == b.sha256 and list(a.labels) == list(b.labels)
        np.testing.assert_allclose(a.features, b.features, rtol=0, atol=1e-5)


def _ignores_the_vds_prefix(tmp_path):
    """HDF5_VDS_PREFIX pointed libhdf5 at other shard files (issue 27): bneck unsets it, says so, and reads
    the shards beside the file."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "ray", elsewhere)
    for shard in elsewhere.rglob("*.h5"):
        with h5py.File(shard, "r+") as f:
            if "features" in f and not f["features"].is_virtual:
                f["features"][...] = f["features"][()] * 2  # other numbers where the prefix points
    os.environ["HDF5_VDS_PREFIX"] = str(elsewhere)
    try:
        with pytest.warns(BneckWarning, match="ignores HDF5_VDS_PREFIX"):
            _same_rows(tmp_path / "local", tmp_path / "ray")
        assert "HDF5_VDS_PREFIX" not in os.environ
    finally:
        os.environ.pop("HDF5_VDS_PREFIX", None)


def test_ray_equals_local_row_for_row_and_stage_two_reads_it(cluster, tmp_path):
    from bneck.pipeline import train

    data = copy_subset(tmp_path / "data", 5)
    # Same batches on both engines (shard size = batch size), so the same float sums.
    local = extract(data, tmp_path / "local", cache_dir=tmp_path / "c1", batch_size=4, verbose=False, **MOBILENET)
    sharded = extract(
        data,
        tmp_path / "ray",
        cache_dir=tmp_path / "c2",
        batch_size=4,
        engine="ray",
        shard_size=4,
        verbose=False,
        **MOBILENET,
    )
    assert sharded.forward_images == local.forward_images == 30 and sharded.engine == "ray"
    assert [s.shards for s in sharded.splits] == [{"total": 3, "run": 3, "reused": 0}] * 3
    _same_rows(tmp_path / "local", tmp_path / "ray")
    _ignores_the_vds_prefix(tmp_path)
    with h5py.File(tmp_path / "ray" / "train.h5") as f:
        assert f["features"].is_virtual and len(f["features"].virtual_sources()) == 3
        assert f.attrs["engine"] == "ray"
    board = train(tmp_path / "ray", ["logreg"], tmp_path / "models", verbose=False)
    assert board.results[0].accuracy("test") is not None
    again = extract(
        data, tmp_path / "ray", cache_dir=tmp_path / "c2", engine="ray", shard_size=4, verbose=False, **MOBILENET
    )  # everything finished: no shard runs, nothing computed
    assert again.forward_images == 0 and all(s.shards["run"] == 0 for s in again.splits)
    assert all(s.file_unchanged for s in again.splits)


def test_a_killed_worker_has_its_shard_redone(cluster, tmp_path):
    data = copy_subset(tmp_path / "data", 6, splits=("train",))
    report = extract(
        data,
        tmp_path / "out",
        cache_dir=tmp_path / "cache",
        engine="ray",
        shard_size=4,
        actor_class=DiesOnce,
        verbose=False,
        **MOBILENET,
    )
    assert os.path.exists(tmp_path / "died-once") and report.retries == 1
    assert report.splits[0].shards == {"total": 3, "run": 3, "reused": 0} and report.splits[0].images == 12
    extract(data, tmp_path / "local", cache_dir=tmp_path / "c_local", batch_size=4, verbose=False, **MOBILENET)
    _same_rows(tmp_path / "out", tmp_path / "local", splits=("train",))


def test_bounded_retries_name_the_shard_then_a_rerun_does_only_the_missing_one(cluster, tmp_path):
    data = copy_subset(tmp_path / "data", 6, splits=("train",))
    with pytest.raises(ShardError) as err:
        extract(
            data,
            tmp_path / "out",
            cache_dir=tmp_path / "cache",
            engine="ray",
            shard_size=4,
            actor_class=AlwaysFailsOnShard1,
            verbose=False,
            **MOBILENET,
        )
    text = str(err.value)
    assert f"shard 1 (4 images, first {data}" in text and f"failed {MAX_ATTEMPTS} times" in text
    assert "disk on this node is broken" in text and "rerun the same command" in text
    kept = sorted(n for n in os.listdir(tmp_path / "out" / "train.shards") if not n.startswith("."))
    assert [name[:5] for name in kept] == ["00000", "00002"]  # finished shards are kept
    report = extract(
        data, tmp_path / "out", cache_dir=tmp_path / "cache", engine="ray", shard_size=4, verbose=False, **MOBILENET
    )
    assert report.splits[0].shards == {"total": 3, "run": 1, "reused": 2}
    assert report.forward_images == 4  # only the missing shard's images


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_rerun_after_a_killed_driver_does_only_the_missing_shards(cluster, tmp_path, how):
    """SIGTERM ended in Ray's native abort (rc 134, issue 27): it now stops as Ctrl-C does, with its
    paragraph and exit 143; either way the rerun does only the missing shards."""
    data = copy_subset(tmp_path / "data", 12, splits=("train",))
    shards = tmp_path / "out" / "train.shards"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bneck",
            "extract",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--engine",
            "ray",
            "--address",
            cluster,
            "--shard-size",
            "2",
            "--workers",
            "1",
            "--quiet",
            "--backbone",
            "mobilenet",
            "--alpha",
            "0.25",
            "--weights",
            "imagenet",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while (
        (not shards.is_dir() or len(list(shards.glob("*.h5"))) < 3)
        and driver.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    driver.send_signal(how)
    driver.wait(timeout=120)
    said = driver.stderr.read().decode(errors="replace")
    if how == signal.SIGKILL:
        assert driver.returncode == -signal.SIGKILL, said[-2000:]
    else:
        assert driver.returncode == 143 and "bneck extract: terminated (SIGTERM)." in said, said[-2000:]
        assert "Traceback" not in said and "Aborted" not in said and "*** SIG" not in said
    done_before = len(list(shards.glob("*.h5")))
    assert 3 <= done_before < 12 and not (tmp_path / "out" / "train.h5").exists()
    report = extract(
        data, tmp_path / "out", cache_dir=tmp_path / "cache", engine="ray", shard_size=2, verbose=False, **MOBILENET
    )
    assert report.splits[0].shards == {"total": 12, "run": 12 - done_before, "reused": done_before}
    assert read_features(str(tmp_path / "out" / "train.h5")).features.shape[0] == 24


def test_a_missing_or_truncated_shard_is_detected_on_read_and_redone(cluster, tmp_path):
    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    kwargs = dict(cache_dir=tmp_path / "cache", engine="ray", shard_size=4, verbose=False, **MOBILENET)
    extract(data, tmp_path / "out", **kwargs)
    split_file = str(tmp_path / "out" / "train.h5")
    good = read_features(split_file).features
    first, second = sorted((tmp_path / "out" / "train.shards").glob("*.h5"))
    for shard, damage, problem in ((first, "remove", "is missing"), (second, "truncate", "cannot be read")):
        if damage == "remove":
            os.remove(shard)
        else:
            with open(shard, "r+b") as handle:
                handle.truncate(os.path.getsize(shard) // 2)
        with pytest.raises(FeatureFileError) as err:  # never read as fill values
            read_features(split_file)
        assert f"shard file {shard}, which {problem}" in str(err.value)
        report = extract(data, tmp_path / "out", **kwargs)
        assert report.splits[0].shards == {"total": 2, "run": 1, "reused": 1} and report.forward_images == 0
        np.testing.assert_array_equal(read_features(split_file).features, good)


def test_asking_for_more_gpus_than_the_cluster_has_is_a_clear_error(cluster, tmp_path):
    from bneck.core.errors import ConfigError

    data = copy_subset(tmp_path / "data", 1, splits=("train",))
    with pytest.raises(
        ConfigError,
        match=r"--workers 2 x --num-gpus-per-worker 1 asks for more GPUs than the "
        r"Ray cluster has \(0\)",
    ):
        extract(data, tmp_path / "out", engine="ray", workers=2, num_gpus_per_worker=1, verbose=False, **MOBILENET)
    with pytest.raises(ConfigError, match="--shard-size must be an integer >= 1"):
        extract(data, tmp_path / "out", engine="ray", shard_size=0, verbose=False, **MOBILENET)


def test_stale_shard_cleanup_removes_only_shard_files_it_wrote(cluster, tmp_path):
    from tests.reliability.test_security_outputs import plant_victims, tree

    data = copy_subset(tmp_path / "data", 4, splits=("train",))
    out = tmp_path / "out"
    extract(data, out, cache_dir=tmp_path / "c", engine="ray", shard_size=4, verbose=False, **MOBILENET)
    shards = out / "train.shards"
    first = sorted(n for n in os.listdir(shards) if n.endswith(".h5"))
    victims = plant_victims(tmp_path / "victims")
    (shards / "notes.txt").write_text("mine")
    os.symlink(victims / "thesis.tex", shards / "00007-0123456789abcdef.h5")  # named like a shard
    (shards / "00008-0123456789abcdef.h5").mkdir()
    before = tree(victims)
    os.remove(data / "train" / "cats" / sorted(os.listdir(data / "train" / "cats"))[0])  # other shards now
    extract(data, out, cache_dir=tmp_path / "c", engine="ray", shard_size=4, verbose=False, **MOBILENET)
    now = set(os.listdir(shards))
    assert not set(first) & now  # the stale shards it wrote are gone (every shard's images changed)
    assert {"notes.txt", "00007-0123456789abcdef.h5", "00008-0123456789abcdef.h5"} <= now
    assert tree(victims) == before and (shards / "00007-0123456789abcdef.h5").is_symlink()
    assert len(read_features(str(out / "train.h5")).paths) == 7  # and the new split file reads


class RoundsToBf16(ShardExtractor):
    """A worker whose runtime drifts (as TensorFlow does on GPUs with TF32, or oneDNN in bf16 mode):
    its rows keep only bf16's 8 bits of mantissa, on any CPU."""

    def __init__(self, *args):
        super().__init__(*args)
        build = self.extractor.network

        def network():
            model = build()
            return lambda batch: (model(batch).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)

        self.extractor.network = network


def test_a_worker_whose_numbers_drift_is_refused_before_it_makes_a_row(cluster, tmp_path):
    from bneck.features.runtimes.equivalence import RuntimeMismatch

    data = copy_subset(tmp_path / "data", 3, splits=("train",))
    with pytest.raises(RuntimeMismatch, match="a Ray worker's TensorFlow on node .* differ from the reference"):
        extract(
            data,
            tmp_path / "out",
            cache_dir=tmp_path / "c",
            engine="ray",
            shard_size=4,
            actor_class=RoundsToBf16,
            verbose=False,
            **MOBILENET,
        )
    assert not (tmp_path / "out" / "train.h5").exists()
    assert not [n for n in os.listdir(tmp_path / "out" / "train.shards") if n.endswith(".h5")]
    report = extract(
        data, tmp_path / "out", cache_dir=tmp_path / "c", engine="ray", shard_size=4, verbose=False, **MOBILENET
    )  # honest workers: checked, recorded
    check = read_features(str(tmp_path / "out" / "train.h5")).attrs["equivalence"]
    assert report.forward_images == 6 and check["passed"] and check["max_rel_diff"] < 1e-3


def test_a_model_file_backbone_runs_in_ray_actors_as_locally(cluster, tmp_path):
    """``--backbone PATH.keras``: every actor reads the same checked file, found by its sha256."""
    import keras

    from tests.generated import make_images

    image = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 255.0)(image))
    keras.Model(image, keras.layers.GlobalAveragePooling2D()(x)).save(tmp_path / "mine.keras")
    data = make_images(tmp_path / "data", 4)
    options = dict(backbone=str(tmp_path / "mine.keras"), size=48, batch_size=4, verbose=False)
    local = extract(data, tmp_path / "local", cache_dir=tmp_path / "c1", **options)
    sharded = extract(data, tmp_path / "ray", cache_dir=tmp_path / "c2", engine="ray", shard_size=4, **options)
    assert sharded.spec.key == local.spec.key and sharded.forward_images == local.forward_images == 24
    _same_rows(tmp_path / "local", tmp_path / "ray")


class CannotStart(ShardExtractor):
    """A node without bneck (or the weights): the actor's construction fails there."""

    def __init__(self, *args, **kwargs):
        raise ImportError("No module named 'bneck' on this node")


def test_an_actor_that_cannot_start_is_a_clear_error_before_any_shard(cluster, tmp_path):
    from bneck.core.errors import ConfigError

    data = copy_subset(tmp_path / "data", 2, splits=("train",))
    with pytest.raises(ConfigError) as err:
        extract(
            data, tmp_path / "out", cache_dir=tmp_path / "c", engine="ray", shard_size=2, actor_class=CannotStart,
            verbose=False, **MOBILENET,
        )  # fmt: skip
    text = str(err.value)
    assert "a Ray actor could not start" in text and "No module named 'bneck' on this node" in text, text
    assert not list((tmp_path / "out" / "train.shards").glob("*.h5"))
