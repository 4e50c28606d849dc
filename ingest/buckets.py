"""Histograms as plain numbers, for the ingest's hot path (exposed by ingest/metrics.py).

prometheus_client's Histogram takes a lock per observation; here an observation is one bisect
and two additions on the event loop's thread, and a scrape copies the counts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily

# Messages per committed batch: 1 (a quiet fleet) up to the 5,000 of a full batch.
BATCH_MESSAGES = (1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
# One write transaction, normally milliseconds; seconds under a slow or recovering database.
COMMIT_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Device timestamp -> commit: tens of milliseconds live, minutes to hours for a backlog.
DELAY_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Buckets:
    """A histogram as plain numbers: ``observe`` is one bisect and two additions.

    ``counts[i]`` counts the values in ``(bounds[i-1], bounds[i]]`` (Prometheus buckets are
    "less or equal"); the last one those above every bound (+Inf).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bounds must be increasing and not empty")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """The cumulative buckets Prometheus expects and the sum, from a copy of the counts."""
        counts, total = list(self.counts), self.sum
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(_bound, self.bounds), "+Inf"), counts, strict=True):
            running += n
            buckets.append((bound, running))
        return buckets, total

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets, total = self.cumulative()
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def _bound(value: float) -> str:
    return repr(float(value))
