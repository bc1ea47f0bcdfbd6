"""Is one model better than another on the same test images? A paired comparison.

Two models scored on the same images disagree only on some of them: ``b`` images the
first gets right and the second wrong, ``c`` the other way round. McNemar's exact
test asks whether b and c differ more than chance would make them (a two-sided
binomial test on the b + c discordant images); the gain is (b - c) / n with a 95 %
interval for a difference of paired proportions (Wald, with the paired variance).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

Z95 = 1.959963984540054


@dataclass(frozen=True)
class PairedComparison:
    """``first`` against ``second`` on ``n`` shared images: the gain in accuracy, its interval, McNemar's p."""

    n: int
    first_only: int   # right by the first model only
    second_only: int  # right by the second model only
    gain: float       # accuracy(first) - accuracy(second)
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def describe(self) -> str:
        """One line, in points: ``+4.7 points [+2.9, +6.5], McNemar p = 0.0001 (significant)``."""
        verdict = "significant" if self.significant else "not significant"
        return (f"{100 * self.gain:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}] on {self.n} "
                f"images, McNemar p = {self.p_value:.2g} ({verdict} at 5 %)")

    def to_json(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def compare(first_right: Sequence[bool], second_right: Sequence[bool]) -> PairedComparison:
    """Compare two models by whether each got each shared image right (same order, same length)."""
    if len(first_right) != len(second_right) or not len(first_right):
        raise ValueError(f"a paired comparison needs the same images, at least one: received "
                         f"{len(first_right)} and {len(second_right)}")
    n = len(first_right)
    b = sum(1 for f, s in zip(first_right, second_right) if f and not s)
    c = sum(1 for f, s in zip(first_right, second_right) if s and not f)
    gain = (b - c) / n
    spread = Z95 * math.sqrt(max((b + c) / n - gain ** 2, 0.0) / n)
    low, high = max(-1.0, gain - spread), min(1.0, gain + spread)  # a difference of proportions stays in [-1, 1]
    return PairedComparison(n, b, c, gain, low, high, mcnemar_exact(b, c))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the b + c discordant images at least this uneven)."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / (1 << m)  # exact for any m
    return min(1.0, 2.0 * tail)
