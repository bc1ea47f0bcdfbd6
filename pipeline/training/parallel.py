"""Where the scikit-learn searches' candidates run: joblib's processes here, or a Ray cluster.

``bneck train --engine ray`` runs every ``--search`` candidate (and every k-fold fit) as a Ray task
through joblib's Ray backend, on the cluster at ``--address`` or one started here; the grid, the
folds and the seeds are the same, so the chosen parameters and the model are those of a local run.
"""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def candidates_backend(engine: str, address: str | None, needed: bool):
    """Run the block's joblib work on Ray when ``engine == "ray"`` and ``needed`` (a search runs);
    a cluster started here is shut down after it."""
    if engine != "ray" or not needed:
        yield
        return
    import joblib

    from bneck.features.extraction.ray_cluster import join_cluster

    ray, started_here = join_cluster(address)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    logging.getLogger(__name__).info(
        f"--engine ray: the --search candidates run on the Ray cluster "
        f"{'started here' if started_here else 'at ' + (address or 'this process joined')} "
        f"({nodes} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs)"
    )
    from ray.util.joblib import register_ray

    register_ray()
    logging.getLogger("ray.util.multiprocessing.pool").setLevel(logging.ERROR)  # joblib's 'context' note
    try:
        # one CPU per pool actor (Ray's default is none, which packs them on one node): a fit holds a CPU
        # while it runs, so the candidates go wherever the cluster has CPUs, every node included
        with joblib.parallel_backend("ray", ray_remote_args={"num_cpus": 1}):
            yield
    finally:
        if started_here:
            ray.shutdown()
