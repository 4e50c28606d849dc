"""The ingest's and the scheduler's Prometheus metrics: the catalogue's names and types, and
values read from the plain counters (ingest/metrics.py, ingest/buckets.py,
bridge/job_metrics.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.job_metrics import JobMetrics
from ingest.buckets import Buckets
from ingest.metrics import IngestCollector
from ingest.payload import DEAD_LETTER_REASONS
from ingest.prepared import IngestStats


def scrape(collector: Any) -> tuple[dict[str, str], dict[tuple[str, tuple[Any, ...]], float]]:
    """(type of each family, value of each sample by name and labels) of one collector."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    types = {f.name: f.type for f in families}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return types, samples


def test_buckets_are_less_or_equal_and_cumulative() -> None:
    b = Buckets((1.0, 5.0))
    for v in (0.5, 1.0, 1.5, 5.0, 7.0):
        b.observe(v)
    assert b.counts == [2, 2, 1]  # 1.0 falls in le=1, 5.0 in le=5
    buckets, total = b.cumulative()
    assert buckets == [("1.0", 2), ("5.0", 4), ("+Inf", 5)]
    assert total == 15.0
    with pytest.raises(ValueError):
        Buckets((5.0, 1.0))


def test_ingest_collector_names_types_and_values() -> None:
    s = IngestStats()
    s.messages_received, s.messages, s.messages_abandoned = 10, 6, 1
    s.readings_received, s.readings_stored, s.readings_duplicate = 40, 30, 5
    s.dead_letter_reasons.update(invalid_json=2, invalid_device_id=1)
    s.dead_letters_dropped, s.db_retries, s.rules_evaluated, s.alerts = 4, 3, 12, 2
    s.database_up, s.last_commit = False, 1_700_000_000.5
    s.mapped_readings.update(tasmota=9)
    s.mapping_notes, s.mapping_reloads, s.mapping_reload_errors = 1, 2, 3
    s.batch_messages.observe(6)
    s.commit_seconds.observe(0.004)
    s.delay_seconds.observe(0.2)
    s.delay_seconds.observe(0.3)
    types, samples = scrape(IngestCollector(s, lambda: 7, lambda: True))

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    assert types == {
        "bridge_ingest_messages_received": "counter",
        "bridge_ingest_messages_committed": "counter",
        "bridge_ingest_readings_received": "counter",
        "bridge_ingest_readings_stored": "counter",
        "bridge_ingest_readings_duplicate": "counter",
        "bridge_ingest_dead_letters": "counter",
        "bridge_ingest_dead_letters_dropped": "counter",
        "bridge_ingest_retained_repeats": "counter",
        "bridge_ingest_db_retries": "counter",
        "bridge_ingest_mapped_readings": "counter",
        "bridge_ingest_mapping_notes": "counter",
        "bridge_ingest_mapping_reloads": "counter",
        "bridge_ingest_mapping_reload_errors": "counter",
        "bridge_ingest_rules_evaluated": "counter",
        "bridge_ingest_alerts_raised": "counter",
        "bridge_ingest_stream_dropped": "counter",
        "bridge_ingest_batch_messages": "histogram",
        "bridge_ingest_commit_duration_seconds": "histogram",
        "bridge_ingest_reading_delay_seconds": "histogram",
        "bridge_ingest_inflight_messages": "gauge",
        "bridge_ingest_database_up": "gauge",
        "bridge_ingest_last_commit_timestamp_seconds": "gauge",
        "bridge_ingest_broker_connected": "gauge",
    }
    assert value("bridge_ingest_messages_received_total") == 10
    assert value("bridge_ingest_messages_committed_total") == 6
    assert value("bridge_ingest_readings_received_total") == 40
    assert value("bridge_ingest_readings_stored_total") == 30
    assert value("bridge_ingest_readings_duplicate_total") == 5
    assert value("bridge_ingest_dead_letters_total", reason="invalid_json") == 2
    assert value("bridge_ingest_dead_letters_total", reason="invalid_device_id") == 1
    assert value("bridge_ingest_dead_letters_dropped_total") == 4
    assert value("bridge_ingest_db_retries_total") == 3
    assert value("bridge_ingest_mapped_readings_total", mapping="tasmota") == 9
    assert value("bridge_ingest_mapping_notes_total") == 1
    assert value("bridge_ingest_mapping_reloads_total") == 2
    assert value("bridge_ingest_mapping_reload_errors_total") == 3
    assert value("bridge_ingest_rules_evaluated_total") == 12
    assert value("bridge_ingest_alerts_raised_total") == 2
    assert value("bridge_ingest_stream_dropped_total") == 7
    assert value("bridge_ingest_inflight_messages") == 3  # 10 received - 6 committed - 1 dropped
    assert value("bridge_ingest_database_up") == 0
    assert value("bridge_ingest_broker_connected") == 1
    assert value("bridge_ingest_last_commit_timestamp_seconds") == 1_700_000_000.5
    assert value("bridge_ingest_batch_messages_count") == 1
    assert value("bridge_ingest_batch_messages_sum") == 6
    assert value("bridge_ingest_batch_messages_bucket", le="5.0") == 0
    assert value("bridge_ingest_batch_messages_bucket", le="10.0") == 1
    assert value("bridge_ingest_commit_duration_seconds_bucket", le="0.005") == 1
    assert value("bridge_ingest_reading_delay_seconds_count") == 2
    assert value("bridge_ingest_reading_delay_seconds_bucket", le="0.25") == 1
    assert value("bridge_ingest_reading_delay_seconds_bucket", le="+Inf") == 2


def test_job_metrics_by_job_and_outcome() -> None:
    jobs = JobMetrics()
    jobs.add("retention")
    jobs.record("rollups", "ok", 0.02)
    jobs.record("rollups", "skipped", 0.001)
    jobs.record("rollups", "failed", 3.0)
    jobs.rollup_lag(-1.0)  # a clock a little ahead of the database's: caught up
    types, samples = scrape(jobs)
    assert types == {
        "bridge_scheduler_job_runs": "counter",
        "bridge_scheduler_job_duration_seconds": "histogram",
        "bridge_scheduler_job_last_success_timestamp_seconds": "gauge",
        "bridge_scheduler_rollup_lag_seconds": "gauge",
    }
    runs = {labels: v for (name, labels), v in samples.items() if name.endswith("job_runs_total")}
    assert runs[(("outcome", "ok"), ("task", "rollups"))] == 1
    assert runs[(("outcome", "skipped"), ("task", "rollups"))] == 1
    assert runs[(("outcome", "failed"), ("task", "rollups"))] == 1
    assert runs[(("outcome", "ok"), ("task", "retention"))] == 0  # shown before its first run
    key = ("bridge_scheduler_job_duration_seconds_count", (("task", "rollups"),))
    assert samples[key] == 3
    last = [n for n, labels in samples if n.endswith("last_success_timestamp_seconds")]
    assert last == ["bridge_scheduler_job_last_success_timestamp_seconds"]  # rollups only
    for rollup in ("1m", "1h"):
        assert samples["bridge_scheduler_rollup_lag_seconds", (("rollup", rollup),)] == 0
    with pytest.raises(ValueError):
        jobs.record("rollups", "maybe", 1.0)


def test_every_dead_letter_reason_raised_in_the_code_is_listed() -> None:
    """The `reason` label stays bounded and every reason shows from the start: each
    PayloadError code in the source is in DEAD_LETTER_REASONS."""
    root = Path(__file__).resolve().parents[2]
    raised: set[str] = set()
    for source in [*root.glob("ingest/**/*.py"), *root.glob("bridge/*.py")]:
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "PayloadError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                raised.add(node.args[0].value)
    assert len(raised) >= 8  # the walk found the raises
    assert raised <= set(DEAD_LETTER_REASONS), raised - set(DEAD_LETTER_REASONS)
