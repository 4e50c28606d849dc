"""The ingest's Prometheus metrics, read from its plain counters at scrape time.

The hot path only increments integers (``IngestStats``) and, per batch or per message at
most, bisects a value into plain int bucket counts (ingest/buckets.py); nothing takes a lock.
A scrape (from prometheus_client's HTTP thread, or the front's ``/metrics`` under ``up``)
copies those numbers: it may see one batch half counted, never a wrong total afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from ingest.payload import DEAD_LETTER_REASONS
from ingest.prepared import IngestStats


class IngestCollector:
    """The ingest's metrics (the catalogue's ``bridge_ingest_*``).

    ``stream_dropped`` and ``broker_connected`` are read from the service's connections at
    scrape time; everything else is in ``stats``.
    """

    def __init__(
        self,
        stats: IngestStats,
        stream_dropped: Callable[[], int],
        broker_connected: Callable[[], bool],
    ) -> None:
        self._stats = stats
        self._stream_dropped = stream_dropped
        self._broker_connected = broker_connected

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        counters = (
            ("messages_received", "MQTT messages received", s.messages_received),
            (
                "messages_committed",
                "messages whose batch committed (then acknowledged)",
                s.messages,
            ),
            ("readings_received", "readings found in received payloads", s.readings_received),
            ("readings_stored", "readings inserted", s.readings_stored),
            ("readings_duplicate", "readings skipped as already stored", s.readings_duplicate),
            (
                "dead_letters_dropped",
                "dead letters over the per-device budget, counted not stored",
                s.dead_letters_dropped,
            ),
            (
                "retained_repeats",
                "retained messages dead-lettered before, received again and skipped",
                s.retained_skipped,
            ),
            ("db_retries", "write transactions retried", s.db_retries),
            ("mapping_notes", "facts mappings noted (a Sparkplug sequence gap)", s.mapping_notes),
            ("mapping_reloads", "mapping sets loaded after the first", s.mapping_reloads),
            (
                "mapping_reload_errors",
                "mapping reloads refused (the previous mappings stay in use)",
                s.mapping_reload_errors,
            ),
            ("rules_evaluated", "readings evaluated against rules", s.rules_evaluated),
            ("alerts_raised", "alert events raised", s.alerts),
            (
                "stream_dropped",
                "validated-stream publishes dropped (broker link down or queue full)",
                self._stream_dropped(),
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"bridge_ingest_{name}", doc, value=value)
        dead = CounterMetricFamily(
            "bridge_ingest_dead_letters",
            "messages dead-lettered, by reason",
            labels=["reason"],
        )
        counted = dict.fromkeys(DEAD_LETTER_REASONS, 0) | dict(s.dead_letter_reasons)
        for reason, n in sorted(counted.items()):
            dead.add_metric([reason], n)
        yield dead
        mapped = CounterMetricFamily(
            "bridge_ingest_mapped_readings",
            "readings found in messages read by a mapping, by mapping name",
            labels=["mapping"],
        )
        for mapping, n in sorted(s.mapped_readings.items()):
            mapped.add_metric([mapping], n)
        yield mapped
        yield s.batch_messages.family(
            "bridge_ingest_batch_messages", "messages per committed batch"
        )
        yield s.commit_seconds.family(
            "bridge_ingest_commit_duration_seconds", "time of one write transaction that committed"
        )
        yield s.delay_seconds.family(
            "bridge_ingest_reading_delay_seconds",
            "device timestamp to commit, per message",
        )
        inflight = s.messages_received - s.messages - s.messages_abandoned
        gauges = (
            ("inflight_messages", "messages received, not yet acknowledged", max(0, inflight)),
            (
                "database_up",
                "1 while the last write succeeded, 0 while writes fail on connection errors",
                int(s.database_up),
            ),
            (
                "last_commit_timestamp_seconds",
                "unix time of the last commit (0: none yet)",
                s.last_commit,
            ),
            (
                "broker_connected",
                "1 while the ingest's broker connection is up",
                int(self._broker_connected()),
            ),
        )
        for name, doc, level in gauges:
            yield GaugeMetricFamily(f"bridge_ingest_{name}", doc, value=level)
