"""The ranking of trained models: one row per model, best validation accuracy first, and its CSV.

``bneck train`` writes ``MODELS_DIR/leaderboard.csv`` for the classifiers of the call;
``bneck run`` writes ``RUN/leaderboard.csv`` with the fine-tuned model too. Both come
from ``write_leaderboard``, so they have the same columns.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Optional

from features.atomic import atomic_open
from features.progress import format_table

from ..paired import PairedComparison

COLUMNS = ["rank", "model", "kind", "val_accuracy", "test_accuracy", "test_gain", "gain_low", "gain_high",
           "p_value", "versus", "fit_seconds", "reused", "folder"]


@dataclass
class Result:
    """One model: where it is, how it scored, and whether this call trained it or reused it (and why)."""

    name: str
    folder: str
    metrics: dict
    fit_seconds: float
    streamed: bool = False
    reused: bool = False
    why: str = ""  # why it was trained (or "unchanged" when reused)
    kind: str = "classifier"  # or "fine-tuned"
    versus: str = ""  # the model ``gain`` compares this one with
    gain: Optional[PairedComparison] = None  # paired on the same test images
    gain_note: str = ""  # why there is no gain, when there is none

    def accuracy(self, split: str) -> Optional[float]:
        value = self.metrics.get(split, {})
        return value.get("accuracy") if isinstance(value, dict) else None


@dataclass
class Leaderboard:
    """Models ranked by validation accuracy, best first."""

    out_dir: str
    results: list[Result] = field(default_factory=list)

    def rank(self) -> "Leaderboard":
        self.results.sort(key=lambda r: -(r.accuracy("validation") or 0.0))
        return self

    def table(self) -> str:
        """Return the ranked table: model, validation/test accuracy, fit seconds, trained or reused."""
        def pct(v):
            return "-" if v is None else f"{100 * v:.1f}%"
        rows = [[r.name, pct(r.accuracy("validation")), pct(r.accuracy("test")), round(r.fit_seconds, 2),
                 "reused" if r.reused else "trained"] for r in self.results]
        return format_table(["model", "val acc", "test acc", "fit s", "this call"], rows)

    @property
    def best(self) -> Result:
        return self.results[0]


def write_leaderboard(path: str, results: list[Result]) -> None:
    """Write ``results`` (ranked) as CSV with ``COLUMNS``, atomically."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for rank, r in enumerate(results, 1):
            g = r.gain
            writer.writerow([rank, r.name, r.kind, _fmt(r.accuracy("validation")), _fmt(r.accuracy("test")),
                             *([_fmt(g.gain), _fmt(g.low), _fmt(g.high), f"{g.p_value:.3g}", r.versus] if g
                               else [""] * 5),
                             _fmt(r.fit_seconds, 2), str(r.reused).lower(), r.folder])


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"
