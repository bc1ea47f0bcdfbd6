"""Objects that create a marker file when they are unpickled or rebuilt: what an attacker plants.

``MARKER`` names the file; tests set it (environment variable BNECK_TEST_MARKER in
the fork server's children) before building a payload, and assert it never appears.
"""

from __future__ import annotations

import os


def touch_marker(*_args, **_kwargs):
    """Create the marker file (what any successful payload does); returns its argument unchanged."""
    with open(os.environ["BNECK_TEST_MARKER"], "w") as handle:
        handle.write("pwned")
    return _args[0] if _args else None


class Planted:
    """Pickling this object stores a call to ``open(marker, 'w')``: unpickling it creates the marker."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Payload:
    """An object whose rebuilding (``__setstate__``, as skops or pickle would call) creates the marker."""

    def __init__(self, marker: str = ""):
        self.marker = marker

    def __setstate__(self, state):
        with open(state["marker"], "w") as handle:
            handle.write("pwned")
        self.__dict__.update(state)
