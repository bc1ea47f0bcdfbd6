"""``--engine ray``: extraction by Ray actors into shard files, stitched by a virtual dataset.

A split's images (in output order) are cut into shards of ``--shard-size``. Each
shard is done by an actor (``ShardExtractor``: one model load per actor): rows
already in the shared cache are read, the others computed and committed to the
cache, and the shard's rows are written atomically as ``OUT/<split>.shards/
NNNNN-<id>.h5`` (the id hashes the extractor key and the shard's image hashes).
The driver then writes ``OUT/<split>.h5`` whose ``features`` is an h5py virtual
dataset over the shard files, so stages 2 and 3 read it unchanged.

A shard whose file is already complete is not sent anywhere, so a rerun after a
crash only does the missing shards, and a rerun on unchanged images never starts
Ray. A worker that dies or fails has its shard retried on a fresh actor, up to
``MAX_ATTEMPTS`` times, then the run stops with an error naming the shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections import deque

import h5py
import numpy as np

from bneck.core.errors import BneckError, ConfigError
from bneck.core.folders import claim_folder, folder_kind
from bneck.core.hashing import sha256_json
from bneck.core.progress import progress_bar
from bneck.features.backbones.spec import ExtractorSpec
from bneck.features.cache.rows import read_rows_file
from bneck.features.extraction.options import DEFAULT_SHARD_SIZE
from bneck.features.extraction.ray_actor import ShardExtractor
from bneck.features.extraction.ray_cluster import check_reachable, import_ray, join_cluster
from bneck.features.extraction.report import SplitReport
from bneck.features.featurefile.format import holds, write_sharded_split_file
from bneck.features.images.dataset import Dataset
from bneck.features.runtimes.extractor import Extractor, split_content

MAX_ATTEMPTS = 3
PLACEMENT_TIMEOUT_S = 120


class ShardError(BneckError):
    """A shard failed on every attempt."""


@dataclasses.dataclass
class RayOptions:
    """How to run on Ray; ``actor_class`` may be a ShardExtractor subclass (e.g. per-node set-up)."""

    address: str | None = None
    workers: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    num_gpus_per_worker: float = 0.0
    actor_class: type = ShardExtractor


class _RunState:
    """One ``RayPool.run``: shards queued, in flight, finished and given up."""

    def __init__(self, shards: list[dict]):
        self.queue, self.pending = deque(shards), {}
        self.attempts, self.results, self.given_up = {s["index"]: 0 for s in shards}, {}, []

    def failed(self, shard: dict, error: Exception) -> None:
        """Count a failed attempt: the shard goes to the back of the queue, or is given up."""
        self.attempts[shard["index"]] += 1
        if self.attempts[shard["index"]] < MAX_ATTEMPTS:
            self.queue.append(shard)  # behind the others: they go on meanwhile
        else:
            self.given_up.append((shard, error))


def _given_up_message(given_up: list, finished: int) -> str:
    shard, error = given_up[0]
    return (
        f"shard {shard['index']} ({len(shard['items'])} images, first {shard['items'][0][1]}) "
        f"failed {MAX_ATTEMPTS} times; last error: {str(error).strip().splitlines()[-1][:300]}"
        f"{f' (and {len(given_up) - 1} more shard(s) failed likewise)' if len(given_up) > 1 else ''}. "
        f"The {finished} shard(s) finished in this run are kept in "
        f"{os.path.dirname(shard['path'])}; rerun the same command to compute only the missing ones."
    )


def _no_actor_message(left: int, finished: int, shard: dict) -> str:
    return (
        f"every Ray actor was lost (their nodes died or left) and no replacement could be placed "
        f"within {PLACEMENT_TIMEOUT_S} s, with {left} shard(s) left. The {finished} shard(s) "
        f"finished in this run are kept in {os.path.dirname(shard['path'])}; add nodes (or ask for "
        f"fewer --workers) and rerun the same command to compute only the missing ones."
    )


class RayPool:
    """Actors on a Ray cluster (joined or started here), created when the first shard needs one."""

    def __init__(self, options: RayOptions, spec: ExtractorSpec, cache_dir: str, batch_size: int, out_dir: str):
        self.options, self.spec, self.cache_dir, self.batch_size = options, spec, cache_dir, batch_size
        self.out_dir = out_dir
        self.ray, self.started_here, self.actors, self.cpus = None, False, [], 1
        self.retries, self.peak_rss_mb = 0, 0.0
        self.node_shards: dict[str, int] = {}  # shards finished per Ray node id
        self.starting: dict = {}  # ready() ref -> a replacement actor Ray has not placed yet
        self.failed_starts = 0  # replacements that died before they started
        self.reference = None  # the driver's reference rows, made when the first shard needs computing

    def _connect(self):
        ray, self.started_here = join_cluster(self.options.address)
        self.ray = ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        resources = ray.cluster_resources()
        workers = self.options.workers or max(1, len(nodes))
        self.cpus = resources.get("CPU", 1) / workers  # a share of the cluster's CPUs, maybe fractional
        if self.options.num_gpus_per_worker * workers > resources.get("GPU", 0):
            raise ConfigError(
                f"--workers {workers} x --num-gpus-per-worker {self.options.num_gpus_per_worker:g} asks for "
                f"more GPUs than the Ray cluster has ({resources.get('GPU', 0):g}). Ask for fewer, or use "
                f"--num-gpus-per-worker 0 on a CPU cluster."
            )
        self.actors = [self._actor() for _ in range(workers)]
        readiness = [a.ready.remote([self.out_dir, self.cache_dir]) for a in self.actors]
        placed, _ = ray.wait(readiness, num_returns=workers, timeout=PLACEMENT_TIMEOUT_S)
        if len(placed) < workers:
            raise ConfigError(
                f"only {len(placed)} of --workers {workers} Ray actors could be placed within "
                f"{PLACEMENT_TIMEOUT_S} s: the cluster has {resources.get('CPU', 0):g} CPUs and "
                f"{resources.get('GPU', 0):g} GPUs, and each actor asks for {self.cpus:g} CPUs and "
                f"--num-gpus-per-worker {self.options.num_gpus_per_worker:g} GPUs. Ask for fewer "
                f"workers or GPUs, or add nodes."
            )
        try:
            started = ray.get(placed)
        except ray.exceptions.RayActorError as exc:  # its __init__ failed: bneck or the weights missing there
            raise ConfigError(
                f"a Ray actor could not start: {str(exc).strip().splitlines()[-1][:300]}. Every node needs the "
                f"same Python environment with bneck installed and the weights (docs/extract.md, many machines)."
            ) from None
        for where in started:
            self._check_shared(where)

    def _check_shared(self, where: dict) -> None:
        """Refuse a node that cannot see --out or the cache (every node must share them)."""
        if where["unseen"]:
            raise ConfigError(
                f"the Ray node on host {where['host']} (node {where['node'][:12]}) cannot see "
                f"{' nor '.join(where['unseen'])}: on a cluster of several machines, --out and --cache-dir "
                f"must be on a filesystem every node mounts at the same path (NFS, a cluster filesystem). "
                f"Received: --out {self.out_dir}, --cache-dir {self.cache_dir}."
            )

    def _actor(self):
        remote = self.ray.remote(self.options.actor_class).options(
            num_cpus=self.cpus, num_gpus=self.options.num_gpus_per_worker
        )
        fields = {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec)}
        return remote.remote(fields, self.cache_dir, self.batch_size, max(1, int(self.cpus)))

    def run(self, shards: list[dict], desc: str, verbose: bool, reference: dict | None = None) -> dict:
        """Run ``shards`` on the actors with at most one in flight per actor; returns {index: result}.

        Each actor checks its rows for the ``reference`` images before computing any. An actor
        that dies (its process or its whole node) is replaced, but its shard goes back to the
        queue for the actors alive: the replacement takes shards only once Ray has placed it,
        which may be never when the lost node's CPUs are gone.
        """
        if self.ray is None:
            self._connect()
        state = _RunState(shards)
        bar = progress_bar(sum(len(s["items"]) for s in shards), desc, verbose)
        try:
            self._drain(state, self.ray.put(reference), bar)
        finally:
            bar.close()
        if state.given_up:
            raise ShardError(_given_up_message(state.given_up, len(state.results)))
        return state.results

    def _drain(self, state: _RunState, reference_ref, bar) -> None:
        """Hand out shards until every one has finished or given up."""
        ray, idle = self.ray, [a for a in self.actors if a not in self.starting.values()]
        while state.queue or state.pending:
            while state.queue and idle:
                shard, actor = state.queue.popleft(), idle.pop()
                state.pending[actor.run.remote(shard, reference_ref)] = (shard, actor)
            waiting = list(state.pending) + list(self.starting)
            ready, _ = (
                ray.wait(waiting, num_returns=1, timeout=None if state.pending else PLACEMENT_TIMEOUT_S)
                if waiting
                else ([], [])
            )
            if not ready:
                raise ShardError(_no_actor_message(len(state.queue), len(state.results), state.queue[0]))
            if ready[0] in self.starting:
                self._placed(ready[0], idle)
                continue
            shard, actor = state.pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # the worker or its node died
                self._replace(actor)
                state.failed(shard, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, BneckError):  # a user-facing problem: retrying cannot help
                    raise exc.cause from None
                state.failed(shard, exc)
            else:
                self._finished(state, shard, result, bar)
            idle.append(actor)

    def _finished(self, state: _RunState, shard: dict, result: dict, bar) -> None:
        state.results[shard["index"]] = result
        self.peak_rss_mb = max(self.peak_rss_mb, result["peak_rss_mb"])
        self.node_shards[result.get("node", "?")] = self.node_shards.get(result.get("node", "?"), 0) + 1
        bar.update(len(shard["items"]))

    def _replace(self, actor) -> None:
        """Start a replacement for a dead actor; it joins the idle ones once Ray has placed it."""
        self.actors.remove(actor)
        self.retries += 1
        fresh = self._actor()
        self.actors.append(fresh)
        self.starting[fresh.ready.remote([self.out_dir, self.cache_dir])] = fresh

    def _placed(self, ref, idle: list) -> None:
        """A replacement started (it joins the idle actors) or died before it did (another one starts)."""
        actor = self.starting.pop(ref)
        try:
            where = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            self.failed_starts += 1
            if self.failed_starts <= MAX_ATTEMPTS * len(self.actors):
                self._replace(actor)
                self.retries -= 1  # not a shard's attempt
            else:  # replacements keep dying as they start: go on with the actors alive
                self.actors.remove(actor)
            return
        self._check_shared(where)
        idle.append(actor)

    def close(self) -> None:
        if self.ray is None:
            return
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started_here:
            self.ray.shutdown()


def plan_shards(spec: ExtractorSpec, items: list[tuple[str, str]], folder: str, size: int) -> list[dict]:
    """Cut (sha, image path) items into shards, named by index and content."""
    shards = []
    for index, start in enumerate(range(0, len(items), size)):
        part = items[start : start + size]
        name = f"{index:05d}-{sha256_json([spec.key, [sha for sha, _ in part]])[:16]}.h5"
        shards.append({"index": index, "path": os.path.join(folder, name), "items": part})
    return shards


def finished(shard: dict, key: str) -> dict | None:
    """Return the result recorded by a complete, intact shard file for ``shard``, or None."""
    if not os.path.isfile(shard["path"]):
        return None
    shas, _ = read_rows_file(shard["path"], key)
    if shas is None:
        return None
    with h5py.File(shard["path"], "r") as f:
        failed = json.loads(f.attrs.get("failed", "{}"))
    if shas != [sha for sha, _ in shard["items"] if sha not in failed]:
        return None
    return {"index": shard["index"], "computed": 0, "rows": len(shas), "failed": failed, "reused": True}


def driver_reference(ex: Extractor, pool: RayPool) -> dict:
    """Return the reference rows workers are checked against: TensorFlow fp32, here on the driver,
    for the extraction's check sample (built once per extraction)."""
    if pool.reference is None:
        from bneck.features.images.batches import decoded_batches
        from bneck.features.runtimes.registry import BuildContext, reference_runtime

        model = reference_runtime().build(ex.spec, BuildContext(ex.cache.cache_dir))
        paths, rows = [], []
        for keys, batch, _ in decoded_batches([(p, p) for p in ex.check_sample], ex.spec.input_size, 8):
            paths += keys
            rows.append(model(batch))
        pool.reference = {"paths": paths, "rows": np.concatenate(rows)}
    return pool.reference


SHARD_NAME = re.compile(r"^\d{5}-[0-9a-f]{16}\.h5$")


def _remove_stale_shards(folder: str, current: set[str]) -> None:
    """Delete shard files of earlier, different image sets: only regular files named like a shard,
    in a real shards folder bneck made (``claim_folder`` checked it: marker, no symlink)."""
    if folder_kind(folder) != "shards":
        return
    for entry in os.scandir(folder):
        if SHARD_NAME.match(entry.name) and entry.name not in current and entry.is_file(follow_symlinks=False):
            os.remove(entry.path)


def ray_options(engine, runtime, address, workers, shard_size, num_gpus_per_worker, actor_class):
    """Return the RayOptions for ``engine="ray"`` (None for local; values checked by ``EXTRACT``)."""
    if engine == "local":
        return None
    from bneck.features.runtimes.registry import reference_runtime

    if runtime != reference_runtime().name:
        raise ConfigError(
            f"--engine ray runs the {reference_runtime().label} runtime only for now. Received: runtime={runtime!r}."
        )
    options = RayOptions(address, workers, shard_size, num_gpus_per_worker, actor_class or ShardExtractor)
    import_ray()  # say how to install it before any work
    check_reachable(address)
    return options


def extract_split_sharded(
    ex: Extractor, pool: RayPool, dataset: Dataset, split: str, out_dir: str, usable: list, quarantine: list
) -> SplitReport:
    """--engine ray: shards done by Ray actors (or found finished), stitched by a virtual dataset.

    Returns the split's SplitReport; ``ex`` is the extraction's Extractor (its cache and
    the attributes of its files), ``pool`` the actors.
    """
    start = time.perf_counter()
    folder = claim_folder(os.path.join(out_dir, f"{split}.shards"), "shards", option="the shards folder")
    shards = plan_shards(ex.spec, [(sha, r.abspath) for r, sha in usable], folder, pool.options.shard_size)
    results = {s["index"]: r for s in shards if (r := finished(s, ex.spec.key)) is not None}
    todo = [s for s in shards if s["index"] not in results]
    if todo:
        results.update(pool.run(todo, f"{split}: computing on Ray", ex.verbose, driver_reference(ex, pool)))
        checks = [r["equivalence"] for r in results.values() if r.get("equivalence")]
        if checks:
            ex.record_check("equivalence", max(checks, key=lambda c: c["max_rel_diff"]))
    failed = {sha: why for r in results.values() for sha, why in r["failed"].items()}
    content = split_content(dataset, split, usable, failed, quarantine)
    sources = [
        (os.path.relpath(s["path"], out_dir), results[s["index"]]["rows"])
        for s in shards
        if results[s["index"]]["rows"]
    ]
    with h5py.File(os.path.join(out_dir, sources[0][0]), "r") as f:
        shape, dtype = f["features"].shape[1:], str(f["features"].dtype)
    path = os.path.join(out_dir, f"{split}.h5")
    attrs = ex.split_attrs(dataset)
    unchanged = holds(path, attrs, content)
    if not unchanged:
        write_sharded_split_file(path, content, attrs, sources, shape, dtype)
        _remove_stale_shards(folder, {os.path.basename(name) for name, _ in sources})
    computed = sum(r["computed"] for r in results.values())
    return SplitReport(
        split,
        len(content.shas),
        len(dataset.class_names),
        len(content.quarantine),
        len(content.shas) - computed,
        computed,
        time.perf_counter() - start,
        path,
        content.quarantine,
        file_unchanged=unchanged,
        shards={"total": len(shards), "run": len(todo), "reused": len(shards) - len(todo)},
    )
