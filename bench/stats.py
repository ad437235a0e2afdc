"""Percentiles, medians over repeats, and a word on noise."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A figure whose repeats spread wider than this (max-min over the median) is noisy.
NOISY_SPREAD = 0.25


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Repeated:
    """One figure measured in several repeats: the median, and how far they spread."""

    values: list[float]

    @property
    def median(self) -> float:
        clean = [v for v in self.values if not math.isnan(v)]
        return statistics.median(clean) if clean else math.nan

    @property
    def low(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def high(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def noisy(self) -> bool:
        if len(self.values) < 2 or not self.median:
            return False
        return (self.high - self.low) / abs(self.median) > NOISY_SPREAD

    def show(self, digits: int = 0, unit: str = "") -> str:
        """``median (min-max)`` with a ``~`` mark when the repeats spread widely."""
        if math.isnan(self.median):
            return "n/a"
        text = f"{self.median:.{digits}f}{unit}"
        if len(self.values) > 1:
            text += f" ({self.low:.{digits}f}-{self.high:.{digits}f})"
        return text + (" ~" if self.noisy else "")


def fmt(value: float, digits: int = 0, unit: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}{unit}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan
