"""Is one model better than another on the same test images? A paired comparison.

Two models scored on the same images disagree only on some of them: ``b`` images the
first gets right and the second wrong, ``c`` the other way round. McNemar's exact
test asks whether b and c differ more than chance would make them (a two-sided
binomial test on the b + c discordant images); the gain is (b - c) / n with the 95 %
Agresti-Min interval for a difference of paired proportions (the paired Wald interval
after adding half an image to each cell: it never collapses to [0, 0] when the models
happen not to disagree, Agresti & Min 2005). One model's accuracy gets Wilson's interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class PairedComparison:
    """``first`` against ``second`` on ``n`` shared images: the gain in accuracy, its interval, McNemar's p."""

    n: int
    first_only: int  # right by the first model only
    second_only: int  # right by the second model only
    gain: float  # accuracy(first) - accuracy(second)
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def describe(self) -> str:
        """One line, in points: ``+4.7 points [+2.9, +6.5], McNemar p = 0.0001 (significant)``."""
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{100 * self.gain:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}] on {self.n} "
            f"images, McNemar p = {self.p_value:.2g} ({verdict} at 5 %)"
        )

    def to_json(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def compare(first_right: Sequence[bool], second_right: Sequence[bool]) -> PairedComparison:
    """Compare two models by whether each got each shared image right (same order, same length)."""
    if len(first_right) != len(second_right) or not len(first_right):
        raise ValueError(
            f"a paired comparison needs the same images, at least one: received "
            f"{len(first_right)} and {len(second_right)}"
        )
    n = len(first_right)
    b = sum(1 for f, s in zip(first_right, second_right) if f and not s)
    c = sum(1 for f, s in zip(first_right, second_right) if s and not f)
    gain = (b - c) / n
    bs, cs, ns = b + 0.5, c + 0.5, n + 2.0  # Agresti-Min: half an image added to each cell
    centre = (bs - cs) / ns
    spread = Z95 * math.sqrt(max((bs + cs) - (bs - cs) ** 2 / ns, 0.0)) / ns
    low, high = max(-1.0, centre - spread), min(1.0, centre + spread)  # a difference of proportions stays in [-1, 1]
    return PairedComparison(n, b, c, gain, low, high, mcnemar_exact(b, c))


def wilson(right: int, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval for an accuracy of ``right`` out of ``n`` (``(0, 1)`` for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = right / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # rounding never excludes p


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the b + c discordant images at least this uneven)."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / (1 << m)  # exact for any m
    return min(1.0, 2.0 * tail)
