"""The scheduler's Prometheus metrics: each job's runs by outcome, duration and last success,
and how far the rollups are behind.

Jobs run on the event loop and record into plain dicts; a scrape (prometheus_client's HTTP
thread, or the front's ``/metrics`` under ``up``) copies them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ingest.buckets import Buckets

OUTCOMES = ("ok", "failed", "skipped")  # skipped: another process held the job's lock
# From a system status sample (milliseconds) to a rollup backlog or a retention pass (minutes).
JOB_SECONDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# The rollup tables (storage/rollups.py): both are refreshed in one transaction.
ROLLUPS = ("1m", "1h")


class JobMetrics:
    """Runs, durations and last successes of the jobs named with :meth:`add`; a collector."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Buckets] = {}
        self._last_success: dict[str, float] = {}
        self._rollup_lag: dict[str, float] = {}

    def add(self, job: str) -> None:
        """Show ``job`` with zero runs from the start (rates and alerts need the series)."""
        self._durations.setdefault(job, Buckets(JOB_SECONDS))
        for outcome in OUTCOMES:
            self._runs.setdefault((job, outcome), 0)

    def record(self, job: str, outcome: str, seconds: float) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.add(job)
        self._runs[job, outcome] += 1
        self._durations[job].observe(seconds)
        if outcome == "ok":
            self._last_success[job] = time.time()

    def rollup_lag(self, seconds: float) -> None:
        """How far every rollup table is behind the readings stored (seconds, 0: caught up)."""
        for rollup in ROLLUPS:
            self._rollup_lag[rollup] = max(0.0, seconds)

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "bridge_scheduler_job_runs",
            "job runs by outcome; skipped: another process held the job's lock",
            labels=["task", "outcome"],
        )
        for (job, outcome), n in sorted(dict(self._runs).items()):
            runs.add_metric([job, outcome], n)
        yield runs
        durations = HistogramMetricFamily(
            "bridge_scheduler_job_duration_seconds", "duration of each job run", labels=["task"]
        )
        for job, histogram in sorted(dict(self._durations).items()):
            buckets, total = histogram.cumulative()
            durations.add_metric([job], buckets, total)
        yield durations
        last = GaugeMetricFamily(
            "bridge_scheduler_job_last_success_timestamp_seconds",
            "unix time of the job's last successful run in this process",
            labels=["task"],
        )
        for job, at in sorted(dict(self._last_success).items()):
            last.add_metric([job], at)
        yield last
        lag = GaugeMetricFamily(
            "bridge_scheduler_rollup_lag_seconds",
            "now minus the receive time of the oldest reading not yet folded into the rollup "
            "(0: caught up), read after each rollup run",
            labels=["rollup"],
        )
        for rollup, seconds in sorted(dict(self._rollup_lag).items()):
            lag.add_metric([rollup], seconds)
        yield lag
