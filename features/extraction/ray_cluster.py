"""Joining a Ray cluster (or starting one here), for extraction's actors and training's search candidates."""

from __future__ import annotations

from bneck.core.errors import ConfigError
from bneck.core.extras import import_optional
from bneck.core.signals import reclaim_sigterm


def import_ray():
    """Return the ``ray`` module; raises ConfigError saying how to install it."""
    return import_optional("ray", "--engine ray", "ray", '"ray>=2.9"', "--engine local")


def join_cluster(address: str | None):
    """Return (ray, started_here): the cluster this process already joined, the one at ``address``
    (``auto`` or HOST:PORT), or a local one started here (None). Raises ConfigError when it cannot join."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot join the Ray cluster at --address {address!r}: "
            f"{str(exc).splitlines()[0]}. Start one with `ray start --head`, pass "
            f"its HOST:PORT, or leave --address out to start a local one."
        ) from None
    reclaim_sigterm()  # Ray's driver aborts on SIGTERM (a native dump); the command line stops cleanly
    return ray, True
