"""Joining a Ray cluster (or starting one here), for extraction's actors and training's search candidates."""

from __future__ import annotations

import socket

from bneck.core.errors import ConfigError
from bneck.core.extras import import_optional
from bneck.core.signals import reclaim_sigterm

PROBE_TIMEOUT_S = 5


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
        why = _unreachable(address)  # ray.init waits minutes for an address nothing answers at
        if why is None:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        why = str(exc).splitlines()[0]
    if why is not None:
        raise _cannot_join(ray, address, why)
    reclaim_sigterm()  # Ray's driver aborts on SIGTERM (a native dump); the command line stops cleanly
    return ray, True


def check_reachable(address: str | None) -> None:
    """Refuse, before any work, an --address nothing answers at (the cluster is joined later, when
    a shard needs it)."""
    if address is not None and not import_ray().is_initialized() and (why := _unreachable(address)) is not None:
        raise _cannot_join(import_ray(), address, why)


def _cannot_join(ray, address: str | None, why: str) -> ConfigError:
    return ConfigError(
        f"cannot join the Ray cluster at --address {address!r}: "
        f"{why}. Start one with `ray start --head`, pass "
        f"its HOST:PORT, or leave --address out to start a local one. If a head does run there: Ray "
        f"2.5x may require a token (the same RAY_AUTH_MODE, and RAY_AUTH_TOKEN or ~/.ray/auth_token, "
        f"for every `ray start` and for bneck), and every node needs this Ray version ({ray.__version__})."
    )


def _unreachable(address: str | None) -> str | None:
    """Why nothing answers at ``address`` (``auto`` resolved as Ray does), or None when a TCP connection
    opens there (or the address is Ray's own business: none, or a ``ray://`` client address)."""
    if address is None or "://" in address:
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # another Ray: let ray.init decide
        return None
    try:
        bootstrap = canonicalize_bootstrap_address_or_die(address)
        host, _, port = bootstrap.rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            return None
    except (ConnectionError, ValueError, OverflowError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except OSError as exc:
        return f"nothing answers at {address} ({exc.strerror or exc})"
