"""Optional packages (OpenVINO, NNCF, Ray): imported on demand, with one message saying how to install them."""

from __future__ import annotations

import importlib

from bneck.core.errors import ConfigError

# extra -> what `pip install` adds it
EXTRAS = {"openvino": 'pip install -e ".[openvino]"', "ray": 'pip install -e ".[ray]"'}


def silence_telemetry() -> None:
    """Stop OpenVINO's usage reports before it is imported.

    ``import openvino`` sends an event to Google Analytics (``openvino_telemetry``, on
    unless the user opted out or ``CI=true``); NNCF imports it too. bneck makes no
    network request it was not asked for: the telemetry sender is replaced by one that
    drops every message (``tests/reliability/test_offline.py`` audits every request).
    """
    try:
        from openvino_telemetry.utils.sender import TelemetrySender
    except ImportError:
        return
    TelemetrySender.send = _drop


def _drop(self, backend, message) -> None:
    return None


def import_optional(module: str, needed_by: str, extra: str, package: str, instead: str):
    """Return ``module`` imported; raises ConfigError naming the option that needs it, how to
    install it (the project's ``extra``, or ``package`` alone) and the option to use ``instead``."""
    silence_telemetry()
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{needed_by} needs the {module} package, which is not installed. Install it "
            f"with: {EXTRAS[extra]}  (or: pip install {package}). Or use {instead}."
        ) from None
