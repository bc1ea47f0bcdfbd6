"""The ranking of trained models: one row per model, best validation accuracy first, and its CSV.

``bneck train`` writes ``MODELS_DIR/leaderboard.csv`` for the classifiers of the call;
``bneck run`` writes ``RUN/leaderboard.csv`` with the fine-tuned model too. Both come
from ``write_leaderboard``, so they have the same columns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from bneck.core.atomic import atomic_open
from bneck.core.progress import format_table
from bneck.pipeline.paired import PairedComparison, wilson

COLUMNS = [
    "rank",
    "model",
    "kind",
    "val_accuracy",
    "test_accuracy",
    "test_low",
    "test_high",
    "test_gain",
    "gain_low",
    "gain_high",
    "p_value",
    "versus",
    "fit_seconds",
    "reused",
    "folder",
]


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
    gain: PairedComparison | None = None  # paired on the same test images
    gain_note: str = ""  # why there is no gain, when there is none

    def accuracy(self, split: str) -> float | None:
        value = self.metrics.get(split, {})
        return value.get("accuracy") if isinstance(value, dict) else None

    def interval(self, split: str) -> tuple[float, float] | None:
        """Wilson's 95 % interval of the split's accuracy (None without the accuracy or its image count)."""
        value, accuracy = self.metrics.get(split, {}), self.accuracy(split)
        n = value.get("n") if isinstance(value, dict) else None
        if accuracy is None or not isinstance(n, int) or n <= 0:
            return None
        return wilson(round(accuracy * n), n)


def describe_accuracy(result: Result, split: str) -> str:
    """``97.8% [96.7, 98.5]``: the accuracy and its 95 % interval, in percent ('-' without one)."""
    accuracy, interval = result.accuracy(split), result.interval(split)
    if accuracy is None:
        return "-"
    return f"{100 * accuracy:.1f}%" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


@dataclass
class Leaderboard:
    """Models ranked by validation accuracy, best first."""

    out_dir: str
    results: list[Result] = field(default_factory=list)

    def rank(self) -> Leaderboard:
        self.results.sort(key=lambda r: -(r.accuracy("validation") or 0.0))
        return self

    def table(self) -> str:
        """Return the ranked table: model, validation/test accuracy, fit seconds, trained or reused."""
        rows = [
            [
                r.name,
                describe_accuracy(r, "validation"),
                describe_accuracy(r, "test"),
                round(r.fit_seconds, 2),
                "reused" if r.reused else "trained",
            ]
            for r in self.results
        ]
        return format_table(["model", "val acc [95% CI]", "test acc [95% CI]", "fit s", "this call"], rows)

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
            interval = r.interval("test") or (None, None)
            writer.writerow(
                [
                    rank,
                    r.name,
                    r.kind,
                    _fmt(r.accuracy("validation")),
                    _fmt(r.accuracy("test")),
                    _fmt(interval[0]),
                    _fmt(interval[1]),
                    *([_fmt(g.gain), _fmt(g.low), _fmt(g.high), f"{g.p_value:.3g}", r.versus] if g else [""] * 5),
                    _fmt(r.fit_seconds, 2),
                    str(r.reused).lower(),
                    r.folder,
                ]
            )


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"
