"""The options of ``bneck ensemble`` and of a run's ``[ensemble]`` table."""

from __future__ import annotations

from bneck.core.options import Option, OptionTable

ENSEMBLE = OptionTable(
    "ensemble",
    [
        Option(
            "max_size",
            int,
            25,
            "rounds of greedy selection, so the most members an ensemble counts with their weights "
            "(1 keeps the best single model)",
            low=1,
            high=1000,
        )
    ],
)
RUN_ENSEMBLE = OptionTable(
    "ensemble",
    [
        Option("enabled", bool, True, "combine the run's models by greedy selection on validation"),
        *ENSEMBLE.options.values(),
    ],
)
